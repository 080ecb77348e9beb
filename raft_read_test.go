package kommander

import (
	"errors"
	"testing"
)

// These tests cover linearizable reads in the core (raft_read.go): ReadIndex (thesis §6.4),
// its forwarding from followers, and the leader's lease (thesis §6.4.1).

// readyLeader returns n1 leading term 2 of three voters with its no-op (index 1) committed.
func readyLeader(t *testing.T, opts ...func(*raftConfig)) *testNode {
	t.Helper()
	n := newNode(t, "n1", 1, nil, opts...)
	makeLeader(t, n)
	n.stepFlush(t, Message{Type: MsgAppendResp, From: "n2", To: "n1", Term: 2, Index: 1})
	if n.r.log.committed != 1 {
		t.Fatalf("no-op not committed: commit %d", n.r.log.committed)
	}
	return n
}

// heartbeatRound is a read round as the leader sent it: its number (0: no round was sent)
// and the heartbeat to each follower, whose Context is the leader's number of that message,
// not the round.
type heartbeatRound struct {
	round uint64
	hbs   []Message
}

// sentRound returns the round the heartbeats in msgs, flushed by the leader n, carried.
func sentRound(t *testing.T, n *testNode, msgs []Message) heartbeatRound {
	t.Helper()
	hbs := only(msgs, MsgHeartbeat)
	if len(hbs) == 0 {
		return heartbeatRound{}
	}
	if len(hbs) != 2 || hbs[0].To == hbs[1].To || hbs[0].Context == 0 || hbs[1].Context == 0 {
		t.Fatalf("want one numbered heartbeat to each follower, got %+v", hbs)
	}
	return heartbeatRound{round: n.r.reads.round, hbs: hbs}
}

// ack returns from's answer to the round's heartbeat: it echoes that heartbeat's Context
// and reports the leader's whole log, so that no other rule reacts to it.
func (h heartbeatRound) ack(t *testing.T, n *testNode, from string) Message {
	t.Helper()
	for _, hb := range h.hbs {
		if hb.To == from {
			return Message{Type: MsgHeartbeatResp, From: from, To: hb.From, Term: hb.Term,
				Index: n.r.log.lastIndex(), Context: hb.Context}
		}
	}
	t.Fatalf("round %d sent no heartbeat to %s", h.round, from)
	return Message{}
}

// readRound asks for read id on the leader n and returns the heartbeat round it joined.
func readRound(t *testing.T, n *testNode, id uint64, lease bool) heartbeatRound {
	t.Helper()
	if err := n.r.readIndex(id, lease); err != nil {
		t.Fatalf("readIndex: %v", err)
	}
	return sentRound(t, n, n.flush())
}

// readAckRounds are the rounds of TestReadIndexReleasedOnlyAfterQuorumAcksItsRound: a
// periodic one, then the read's.
type readAckRounds struct{ before, read heartbeatRound }

// ackEdited answers the read's round to n2, edited by edit.
func ackEdited(edit func(*Message)) func(*testing.T, *testNode, readAckRounds) []Message {
	return func(t *testing.T, n *testNode, r readAckRounds) []Message {
		m := r.read.ack(t, n, "n2")
		edit(&m)
		return []Message{m}
	}
}

// Thesis §6.4 step 3: a read is released only once a quorum acknowledged a heartbeat sent
// after it arrived; an answer to a message sent before the read's round, or from no voter,
// does not count. The heartbeats carry the leader's per-follower message numbers (S13,
// S36), so an answer to any message numbered at or after the round's heartbeat to that
// follower (a heartbeat or an append) acknowledges the round.
func TestReadIndexReleasedOnlyAfterQuorumAcksItsRound(t *testing.T) {
	for _, tc := range []struct {
		name    string
		acks    func(t *testing.T, n *testNode, r readAckRounds) []Message
		release bool
	}{
		{"no acknowledgement", func(*testing.T, *testNode, readAckRounds) []Message { return nil }, false},
		{"one follower acknowledges the round", func(t *testing.T, n *testNode, r readAckRounds) []Message {
			return []Message{r.read.ack(t, n, "n2")}
		}, true},
		{"the other follower acknowledges the round", func(t *testing.T, n *testNode, r readAckRounds) []Message {
			return []Message{r.read.ack(t, n, "n3")}
		}, true},
		{"an answer to a heartbeat sent before the round", func(t *testing.T, n *testNode, r readAckRounds) []Message {
			return []Message{r.before.ack(t, n, "n2")}
		}, false},
		{"an answer to an append sent before the round", func(t *testing.T, n *testNode, r readAckRounds) []Message {
			return []Message{{Type: MsgAppendResp, From: "n2", To: "n1", Term: 2, Index: 1, Context: r.before.ack(t, n, "n2").Context - 1}}
		}, false},
		{"an answer to an append sent after the round", func(t *testing.T, n *testNode, r readAckRounds) []Message {
			if _, _, err := n.r.propose([]Entry{{Type: "set", Data: []byte("x")}}); err != nil {
				t.Fatal(err)
			}
			var app Message
			for _, m := range only(n.flush(), MsgAppend) {
				if m.To == "n2" {
					app = m
				}
			}
			if app.Context <= r.read.ack(t, n, "n2").Context {
				t.Fatalf("want an append to n2 numbered after the round's heartbeat, got %+v", app)
			}
			return []Message{{Type: MsgAppendResp, From: "n2", To: "n1", Term: 2, Index: 2, Context: app.Context}}
		}, true},
		{"an answer without a message number", ackEdited(func(m *Message) { m.Context = 0 }), false},
		{"an answer to a message never sent", ackEdited(func(m *Message) { m.Context = 1 << 62 }), false},
		{"a stale term's acknowledgement", ackEdited(func(m *Message) { m.Term = 1 }), false},
		{"a stranger's acknowledgement", ackEdited(func(m *Message) { m.From = "n9" }), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := readyLeader(t)
			n.r.tick() // a periodic round before the read
			var r readAckRounds
			r.before = sentRound(t, n, n.flush())
			r.read = readRound(t, n, 7, false)
			if r.before.round == 0 || r.read.round <= r.before.round {
				t.Fatalf("want a periodic round then the read's, got %d then %d", r.before.round, r.read.round)
			}
			if len(n.reads) != 0 {
				t.Fatalf("released before any acknowledgement: %+v", n.reads)
			}
			for _, m := range tc.acks(t, n, r) {
				n.stepFlush(t, m)
			}
			got := len(n.reads) == 1 && n.reads[0] == readState{id: 7, index: 1}
			if got != tc.release || (!tc.release && len(n.reads) != 0) {
				t.Fatalf("released %+v, want release = %v", n.reads, tc.release)
			}
		})
	}
}

// Thesis §6.4 step 1: a new leader serves reads only once an entry of its term (the no-op)
// is committed; until then its commit index may lag its predecessor's.
func TestReadIndexWaitsForTheNoopOfTheTerm(t *testing.T) {
	n := newNode(t, "n1", 1, []uint64{1, 1})
	makeLeader(t, n) // no-op at 3, not committed; the old entries are not known committed
	if h := readRound(t, n, 1, false); h.round != 0 {
		t.Fatalf("a heartbeat round for a read before the no-op committed: round %d", h.round)
	}
	n.stepFlush(t, Message{Type: MsgHeartbeatResp, From: "n2", To: "n1", Term: 2, Index: 3, Context: n.r.tracker.progress("n2").seq})
	if len(n.reads) != 0 {
		t.Fatalf("released before the no-op committed: %+v", n.reads)
	}
	msgs := n.stepFlush(t, Message{Type: MsgAppendResp, From: "n2", To: "n1", Term: 2, Index: 3})
	h := sentRound(t, n, msgs)
	if n.r.log.committed != 3 || h.round == 0 {
		t.Fatalf("once the no-op commits the read gets its round: commit %d, %+v", n.r.log.committed, msgs)
	}
	n.stepFlush(t, h.ack(t, n, "n3"))
	if len(n.reads) != 1 || n.reads[0].index != 3 {
		t.Fatalf("want the read released at the no-op's index 3, got %+v", n.reads)
	}
}

// Requests that arrive together, local or from followers, share one round; those that
// arrive while it is in flight wait for it to be confirmed, then share the next one (or
// take the next periodic heartbeat, should its answers be lost).
func TestReadIndexRequestsShareRounds(t *testing.T) {
	n := readyLeader(t)
	for id := uint64(1); id <= 3; id++ {
		if err := n.r.readIndex(id, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.r.step(Message{Type: MsgReadIndex, From: "n3", To: "n1", Term: 2, Context: 4}); err != nil {
		t.Fatal(err)
	}
	first := sentRound(t, n, n.flush())
	if first.round != 1 {
		t.Fatalf("want one round for four requests, got round %d, %+v", n.r.reads.round, first.hbs)
	}
	if later := readRound(t, n, 5, false); later.round != 0 {
		t.Fatalf("a read arriving while round 1 is in flight got round %d at once", later.round)
	}
	if err := n.r.readIndex(6, false); err != nil {
		t.Fatal(err)
	}
	msgs := n.stepFlush(t, first.ack(t, n, "n2"))
	if len(n.reads) != 3 {
		t.Fatalf("one acknowledgement of round 1 releases the three local reads, got %+v", n.reads)
	}
	resp := one(t, msgs, MsgReadIndexResp)
	if resp.To != "n3" || resp.Context != 4 || resp.Index != 1 || resp.Reject {
		t.Fatalf("want the read index 1 for n3's request 4, got %+v", resp)
	}
	second := sentRound(t, n, msgs)
	if second.round != 2 {
		t.Fatalf("once round 1 is confirmed the waiting reads share round 2: %+v", msgs)
	}
	n.stepFlush(t, second.ack(t, n, "n3"))
	if len(n.reads) != 5 || n.reads[3].id != 5 || n.reads[4].id != 6 {
		t.Fatalf("round 2 releases the two later reads, got %+v", n.reads)
	}
	// Round 3's answers are lost: the read waiting behind it takes the periodic heartbeat.
	readRound(t, n, 7, false)
	if err := n.r.readIndex(8, false); err != nil {
		t.Fatal(err)
	}
	n.flush()
	n.r.tick()
	periodic := sentRound(t, n, n.flush())
	if periodic.round == 0 {
		t.Fatalf("want a periodic heartbeat")
	}
	n.stepFlush(t, periodic.ack(t, n, "n2"))
	if len(n.reads) != 7 || n.reads[6].id != 8 {
		t.Fatalf("the periodic round releases both waiting reads, got %+v", n.reads)
	}
}

// A leader that loses leadership fails its pending reads (never answers them with an index
// it can no longer vouch for) and refuses its followers' requests so they ask again.
func TestReadIndexFailsPendingReadsWhenLeaderStepsDown(t *testing.T) {
	n := readyLeader(t)
	h := readRound(t, n, 5, false)
	n.stepFlush(t, Message{Type: MsgReadIndex, From: "n2", To: "n1", Term: 2, Context: 6})
	msgs := n.stepFlush(t, Message{Type: MsgAppend, From: "n3", To: "n1", Term: 3, Index: 1, LogTerm: 2})
	if n.r.role != roleFollower {
		t.Fatalf("role %v, want follower", n.r.role)
	}
	if len(n.reads) != 1 || n.reads[0] != (readState{id: 5, failed: true}) {
		t.Fatalf("the local read must fail, got %+v", n.reads)
	}
	resp := one(t, msgs, MsgReadIndexResp)
	if !resp.Reject || resp.Context != 6 || resp.To != "n2" {
		t.Fatalf("the follower's request must be refused, got %+v", resp)
	}
	// Acknowledgements of the old rounds arriving now release nothing.
	late := h.ack(t, n, "n2")
	late.Term = 3
	n.stepFlush(t, late)
	if len(n.reads) != 1 {
		t.Fatalf("a read released after stepping down: %+v", n.reads)
	}
}

// A follower asks its leader for the read index (no entry, no forwarding of data); the
// leader's answer is released on the follower with the leader's index. A node that does
// not lead refuses a request; one that knows no leader refuses the read.
func TestReadIndexOnFollowerAsksTheLeader(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	l := c.elect(100)
	c.propose(l, "x")
	f := c.follower(l)
	if err := f.r.readIndex(42, false); err != nil {
		t.Fatal(err)
	}
	msgs := f.flush()
	ask := one(t, msgs, MsgReadIndex)
	if ask.To != l.id || ask.Context != 42 || len(ask.Entries) != 0 {
		t.Fatalf("want a bare MsgReadIndex to the leader carrying 42, got %+v", ask)
	}
	c.queue = append(c.queue, msgs...)
	c.settle()
	if len(f.reads) != 1 || f.reads[0] != (readState{id: 42, index: l.r.log.committed}) {
		t.Fatalf("want read 42 released at the leader's commit %d, got %+v", l.r.log.committed, f.reads)
	}
	// A follower asked instead of the leader refuses.
	resp := one(t, f.stepFlush(t, Message{Type: MsgReadIndex, From: l.id, To: f.id, Term: f.r.term, Context: 9}), MsgReadIndexResp)
	if !resp.Reject || resp.Context != 9 {
		t.Fatalf("a follower must refuse a read request, got %+v", resp)
	}
	lone := newNode(t, "n1", 1, nil)
	var nle *notLeaderError
	if err := lone.r.readIndex(1, false); !errors.As(err, &nle) {
		t.Fatalf("without a known leader: %v, want a notLeaderError", err)
	}
}

// A group of one confirms a read at once: it is its own quorum.
func TestReadIndexSingleVoterReleasesAtOnce(t *testing.T) {
	n := newNode(t, "n1", 1, nil, withVoters("n1"))
	tickUntil(n, roleCandidate)
	n.flush() // the self-vote counts once durable
	if n.r.role != roleLeader {
		t.Fatalf("a lone voter did not lead: %v", n.r.role)
	}
	readRound(t, n, 3, false)
	if len(n.reads) != 1 || n.reads[0].index != n.r.log.committed {
		t.Fatalf("want the read released at commit %d, got %+v", n.r.log.committed, n.reads)
	}
}

// Thesis §6.4.1: with CheckQuorum, a confirmed round gives the leader a lease strictly
// shorter than the election timeout, from the round's send time; within it a lease read
// is released without a round, after it (or without CheckQuorum) it takes one.
func TestLeaseReadsOnlyWithinTheLease(t *testing.T) {
	lease := func(checkQuorum bool, ticksAfter int) (released bool) {
		opts := []func(*raftConfig){}
		if checkQuorum {
			opts = append(opts, withCheckQuorum)
		}
		n := readyLeader(t, opts...)
		n.stepFlush(t, readRound(t, n, 1, false).ack(t, n, "n2"))
		n.reads = nil
		for range ticksAfter {
			n.r.tick()
			n.flush() // the periodic rounds go unanswered
		}
		if n.r.role != roleLeader {
			t.Fatalf("lost leadership after %d ticks", ticksAfter)
		}
		if h := readRound(t, n, 2, true); h.round == 0 {
			return len(n.reads) == 1 && n.reads[0] == readState{id: 2, index: 1}
		}
		return false
	}
	// A follower that acknowledged the round refuses votes for at least E-1 of its ticks;
	// the leader's ticks may be slower by the drift bound and lag its clock by two ticks
	// (the node's leaseUsable).
	const e = 10
	l := int(readyLeader(t).r.leaseTicks())
	if l <= 0 || l+2 > (e-1)*100/(100+leaseDriftPercent) {
		t.Fatalf("lease of %d ticks: want positive, and with two ticks of lag within %d ticks at %d%% drift", l, e-1, leaseDriftPercent)
	}
	for _, tc := range []struct {
		name        string
		checkQuorum bool
		ticks       int
		want        bool
	}{
		{"fresh lease", true, 0, true},
		{"last tick of the lease", true, l - 1, true},
		{"lease over", true, l, false},
		{"no CheckQuorum, no lease", false, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := lease(tc.checkQuorum, tc.ticks); got != tc.want {
				t.Fatalf("served from the lease = %v, want %v", got, tc.want)
			}
		})
	}
}
