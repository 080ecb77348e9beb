package kommander

import (
	"slices"
	"testing"
)

// These tests cover quiescence in the core (raft_quiesce.go): when an idle group stops its
// timers, what wakes it, and that neither a stale or forged mark nor a quiesced leader's
// old lease can do harm.

// quiesceCluster returns a three-voter cluster with quiescence on, its leader elected and
// the whole group quiesced.
func quiesceCluster(t *testing.T) (*testCluster, *testNode) {
	t.Helper()
	c := newTestCluster(t, 3, func(cfg *raftConfig) { cfg.quiesce = true })
	l := c.elect(100)
	c.propose(l, "x")
	for range quiesceBeats*l.r.heartbeatTicks + 2 {
		c.tick()
	}
	for _, id := range c.ids {
		if !c.node(id).r.quiesced() {
			t.Fatalf("%s (%v) did not quiesce after %d idle heartbeats", id, c.node(id).r.role, quiesceBeats)
		}
	}
	return c, l
}

// tickCount ticks every live node once, settles, and returns how many messages the ticks
// caused.
func tickCount(c *testCluster) int {
	sent := 0
	for _, id := range c.ids {
		if !c.down[id] {
			n := c.node(id)
			n.r.tick()
			msgs := n.flush()
			sent += len(msgs)
			c.queue = append(c.queue, msgs...)
		}
	}
	c.settle()
	return sent
}

func TestQuiescedGroupSendsNothing(t *testing.T) {
	c, l := quiesceCluster(t)
	term := l.r.term
	for i := range 20 * l.r.electionTicks {
		if n := tickCount(c); n > 0 {
			t.Fatalf("tick %d: a quiesced group sent %d messages", i, n)
		}
	}
	if c.leader() != l || l.r.term != term {
		t.Fatalf("leadership moved while quiesced: leader %v term %d (was %s, %d)", c.leader(), l.r.term, l.id, term)
	}
}

func TestQuiescedGroupCommitsAProposalAtOnce(t *testing.T) {
	c, l := quiesceCluster(t)
	idx := c.propose(l, "wake")
	for _, id := range c.ids {
		n := c.node(id)
		if n.r.log.committed < idx {
			t.Fatalf("%s: commit %d, want %d without a tick", id, n.r.log.committed, idx)
		}
	}
	if l.r.quiesced() {
		t.Fatal("the leader stayed quiesced after a proposal")
	}
	for range quiesceBeats*l.r.heartbeatTicks + 2 {
		c.tick()
	}
	if !l.r.quiesced() {
		t.Fatal("the leader did not quiesce again once idle")
	}
}

func TestQuiesceMarkFromUnprovenLeaderIgnored(t *testing.T) {
	// A follower with entries that no append of the leader of term 2 proved (it restarted,
	// say): a heartbeat marked quiesce must not stop its timer, and its answer asks for an
	// append.
	n := newNode(t, "n2", 2, []uint64{1, 2}, func(c *raftConfig) { c.quiesce = true })
	n.log.hs.Commit = 2 // it knew everything committed before it restarted
	n.start(t)
	out := n.stepFlush(t, Message{Type: MsgHeartbeat, From: "n1", To: "n2", Term: 2, Index: 2, Commit: 2, Context: 1, quiesce: true})
	if n.r.quiesced() {
		t.Fatal("quiesced on the mark of a leader whose log it never matched")
	}
	resp := only(out, MsgHeartbeatResp)
	if len(resp) != 1 || !resp[0].Reject {
		t.Fatalf("want one rejecting heartbeat answer, got %+v", out)
	}
	// Once an append proved the match, the same mark quiesces it.
	n.stepFlush(t, Message{Type: MsgAppend, From: "n1", To: "n2", Term: 2, Index: 2, LogTerm: 2, Commit: 2, Context: 2})
	n.stepFlush(t, Message{Type: MsgHeartbeat, From: "n1", To: "n2", Term: 2, Index: 2, Commit: 2, Context: 3, quiesce: true})
	if !n.r.quiesced() {
		t.Fatal("did not quiesce on the mark of a leader whose log it matched")
	}
}

func TestQuiesceMarkOfStaleTermIgnored(t *testing.T) {
	n := newNode(t, "n2", 3, []uint64{1, 2}, func(c *raftConfig) { c.quiesce = true })
	n.stepFlush(t, Message{Type: MsgHeartbeat, From: "n1", To: "n2", Term: 2, Index: 2, Commit: 2, Context: 1, quiesce: true})
	if n.r.quiesced() {
		t.Fatal("quiesced on the mark of a deposed leader")
	}
}

func TestQuiesceMarkShortOfLogIgnored(t *testing.T) {
	// The leader's commit (2) is short of the follower's log (3): something is in flight.
	n := newNode(t, "n2", 2, []uint64{1, 2}, func(c *raftConfig) { c.quiesce = true })
	n.stepFlush(t, Message{Type: MsgAppend, From: "n1", To: "n2", Term: 2, Index: 2, LogTerm: 2, Commit: 2, Context: 1,
		Entries: []Entry{{Index: 3, Term: 2}}})
	n.stepFlush(t, Message{Type: MsgHeartbeat, From: "n1", To: "n2", Term: 2, Index: 2, Commit: 2, Context: 2, quiesce: true})
	if n.r.quiesced() {
		t.Fatal("quiesced with an entry beyond the leader's commit")
	}
}

func TestQuiescedLeaderServesNoLeaseRead(t *testing.T) {
	c, l := quiesceCluster(t)
	// The answers to the quiesce heartbeat confirmed a round: the lease would hold, counted
	// in ticks that no longer run.
	if err := l.r.readIndex(99, true); err != nil {
		t.Fatal(err)
	}
	rd := l.flush()
	for _, rs := range l.reads {
		if rs.id == 99 {
			t.Fatalf("a quiesced leader served a lease read at once: %+v", rs)
		}
	}
	if len(only(rd, MsgHeartbeat)) == 0 {
		t.Fatal("the read sent no heartbeat round")
	}
	c.queue = append(c.queue, rd...)
	c.settle()
	if len(l.reads) == 0 || l.reads[len(l.reads)-1].id != 99 || l.reads[len(l.reads)-1].failed {
		t.Fatalf("the read was not served after its round: %+v", l.reads)
	}
}

func TestQuiescedFollowerWakesOnAnyMessage(t *testing.T) {
	c, l := quiesceCluster(t)
	f := c.follower(l)
	// A pre-vote from a non-member behind our log: not admitted (S5), so not a wake-up.
	f.stepFlush(t, Message{Type: MsgPreVote, From: "nX", To: f.id, Term: f.r.term + 1})
	if !f.r.quiesced() {
		t.Fatal("a non-member's message woke the follower: nothing it says counts (S5)")
	}
	other := ""
	for _, id := range c.ids {
		if id != l.id && id != f.id {
			other = id
		}
	}
	// A pre-vote from a peer that lost the quiesce mark: the follower wakes, but refuses
	// it, since its leader's node is heard from (in lease).
	out := f.stepFlush(t, Message{Type: MsgPreVote, From: other, To: f.id, Term: f.r.term + 1, Index: 100, LogTerm: f.r.term})
	if f.r.quiesced() {
		t.Fatal("a member's message left the follower quiesced")
	}
	if resp := only(out, MsgPreVoteResp); len(resp) != 1 || !resp[0].Reject {
		t.Fatalf("a woken follower in lease must refuse the pre-vote, got %+v", out)
	}
	// The leader wakes on anything but a clean answer to its quiesce heartbeat.
	l.stepFlush(t, Message{Type: MsgHeartbeatResp, From: f.id, To: l.id, Term: l.r.term, Index: l.r.log.lastIndex(), Context: 1})
	if !l.r.quiesced() {
		t.Fatal("a clean answer to the quiesce heartbeat woke the leader")
	}
	l.stepFlush(t, Message{Type: MsgHeartbeatResp, From: f.id, To: l.id, Term: l.r.term, Index: l.r.log.lastIndex(), Context: 1, Reject: true})
	if l.r.quiesced() {
		t.Fatal("a rejecting answer left the leader quiesced")
	}
}

func TestQuiescedFollowersElectOnSuspicion(t *testing.T) {
	c, l := quiesceCluster(t)
	c.down[l.id] = true
	E := l.r.electionTicks
	// Without word from the node, a quiesced follower never notices.
	for range 5 * E {
		c.tick()
	}
	if nl := c.leader(); nl != nil {
		t.Fatalf("%s was elected though every follower was quiesced", nl.id)
	}
	first := true
	for _, id := range c.ids {
		if id != l.id {
			c.node(id).r.leaderSuspected(first)
			first = false
		}
	}
	// The suspicion runs their timers out: one campaigns within the randomized part of
	// the timeout, less than one election timeout.
	for tick := 1; tick < E; tick++ {
		c.tick()
		if nl := c.leader(); nl != nil {
			return
		}
	}
	t.Fatalf("no new leader within %d ticks of the suspicion", E-1)
}

func TestWokenLeaderCutOffStepsDownWithinAnElectionTimeout(t *testing.T) {
	c, l := quiesceCluster(t)
	c.isolate(l.id)
	l.r.wake() // what the node does when it loses a quorum of its peers
	for range l.r.electionTicks + 1 {
		c.tick()
	}
	if l.r.role == roleLeader {
		t.Fatalf("a woken leader cut off from its quorum still leads after %d ticks", l.r.electionTicks+1)
	}
}

func TestQuiescedLeaderRetriesALostAppend(t *testing.T) {
	c, l := quiesceCluster(t)
	for _, id := range c.ids {
		if id != l.id {
			c.cut[[2]string{l.id, id}] = true
		}
	}
	idx, _, err := l.r.propose([]Entry{{Type: "set", Data: []byte("lost")}})
	if err != nil {
		t.Fatal(err)
	}
	c.settle() // the appends are lost
	c.heal()
	for range 2 * l.r.heartbeatTicks {
		c.tick()
	}
	if l.r.log.committed < idx {
		t.Fatalf("commit %d: the leader did not resend the lost append (index %d)", l.r.log.committed, idx)
	}
}

// followerDown returns a three-voter cluster with quiescence on, its leader, and a follower
// that went down before the leader's last entry, and the ticks after which the leader
// quiesces: two CheckQuorum rounds forget the silent follower, then the quiet beats count.
func followerDown(t *testing.T) (c *testCluster, l *testNode, down string, ticks int) {
	t.Helper()
	c = newTestCluster(t, 3, func(cfg *raftConfig) { cfg.quiesce = true })
	l = c.elect(100)
	down = c.ids[(slices.Index(c.ids, l.id)+1)%len(c.ids)]
	c.down[down] = true
	c.propose(l, "x")
	return c, l, down, 2*l.r.electionTicks + quiesceBeats*l.r.heartbeatTicks + 2
}

func TestLeaderQuiescesWithAFollowerDown(t *testing.T) {
	c, l, down, ticks := followerDown(t)
	for range ticks {
		c.tick()
	}
	if !l.r.quiesced() {
		t.Fatal("a leader with a quorum caught up did not quiesce while a follower is down")
	}
	// The follower comes back, having missed the entry: its campaign wakes the leader,
	// which brings it up to date.
	c.down[down] = false
	for range 4 * l.r.electionTicks {
		c.tick()
		if f := c.node(down); f.r.log.committed == l.r.log.lastIndex() && f.r.lead == l.id {
			return
		}
	}
	t.Fatalf("the follower that came back did not catch up: commit %d, leader %q", c.node(down).r.log.committed, c.node(down).r.lead)
}

func TestQuiesceMarkOfALongerLogIgnored(t *testing.T) {
	// A follower that holds a prefix of the leader's log, all of it matched and committed
	// (Commit is the leader's commit bounded by this follower's match): the leader has more,
	// so it must keep its timer.
	n := newNode(t, "n2", 2, []uint64{1, 2}, func(c *raftConfig) { c.quiesce = true })
	n.stepFlush(t, Message{Type: MsgAppend, From: "n1", To: "n2", Term: 2, Index: 2, LogTerm: 2, Commit: 2, Context: 1})
	n.stepFlush(t, Message{Type: MsgHeartbeat, From: "n1", To: "n2", Term: 2, Index: 9, Commit: 2, Context: 2, quiesce: true})
	if n.r.quiesced() {
		t.Fatal("quiesced on the mark of a leader whose last index (9) is beyond its log (2)")
	}
}

func TestQuiesceMarkNotSentToALaggingFollower(t *testing.T) {
	c, l, lag, ticks := followerDown(t)
	for range ticks {
		if l.r.quiesced() {
			break
		}
		l.r.tick()
		for _, m := range l.flush() {
			if m.Type == MsgHeartbeat && m.To == lag && m.quiesce {
				t.Fatalf("the quiesce mark went to %s, which lacks the leader's entries: %+v", lag, m)
			}
			c.queue = append(c.queue, m)
		}
		c.settle()
	}
	if !l.r.quiesced() {
		t.Fatal("the leader did not quiesce with a quorum caught up")
	}
}
