package kommander

import (
	"math/rand/v2"
	"testing"
)

// These tests cover leader election (raft_election.go), in the order of Figure 2.

// ---- RequestVote receiver (Figure 2) ----

// Rule 1: reply false if term < currentTerm.
func TestRequestVoteReceiverRejectsStaleTerm(t *testing.T) {
	n := newNode(t, "n1", 5, nil)
	resp := one(t, n.stepFlush(t, Message{Type: MsgVote, From: "n2", To: "n1", Term: 4}), MsgVoteResp)
	if !resp.Reject || resp.Term != 5 {
		t.Fatalf("want rejection carrying term 5, got %+v", resp)
	}
}

// Rule 2: grant if votedFor is null or candidateId, and the candidate's log is at least as
// up to date as the receiver's; the vote is durable before the grant leaves.
func TestRequestVoteReceiverGrantsWhenNotVotedAndLogUpToDate(t *testing.T) {
	n := newNode(t, "n1", 1, []uint64{1, 1})
	if err := n.r.step(Message{Type: MsgVote, From: "n2", To: "n1", Term: 2, LogTerm: 1, Index: 2}); err != nil {
		t.Fatal(err)
	}
	rd := n.r.ready()
	if len(only(rd.Messages, MsgVoteResp)) != 0 {
		t.Fatalf("vote grant must not go out before persistence: %+v", rd.Messages)
	}
	resp := one(t, rd.MessagesAfterPersist, MsgVoteResp)
	if resp.Reject || resp.Term != 2 {
		t.Fatalf("want grant in term 2, got %+v", resp)
	}
	if !rd.SaveHardState || rd.HardState.Term != 2 || rd.HardState.Vote != "n2" {
		t.Fatalf("the raftReady must persist term 2 and the vote for n2, got %+v", rd.HardState)
	}
	n.r.advance(rd)
}

func TestRequestVoteReceiverRejectsSecondCandidateInSameTerm(t *testing.T) {
	n := newNode(t, "n1", 1, nil)
	n.stepFlush(t, Message{Type: MsgVote, From: "n2", To: "n1", Term: 2})
	resp := one(t, n.stepFlush(t, Message{Type: MsgVote, From: "n3", To: "n1", Term: 2}), MsgVoteResp)
	if !resp.Reject {
		t.Fatalf("second candidate in term 2 must be rejected, got %+v", resp)
	}
}

func TestRequestVoteReceiverGrantsSameCandidateAgain(t *testing.T) {
	n := newNode(t, "n1", 1, nil)
	n.stepFlush(t, Message{Type: MsgVote, From: "n2", To: "n1", Term: 2})
	resp := one(t, n.stepFlush(t, Message{Type: MsgVote, From: "n2", To: "n1", Term: 2}), MsgVoteResp)
	if resp.Reject {
		t.Fatalf("a repeated request of the candidate we voted for must be granted, got %+v", resp)
	}
}

// Raft §5.4.1 and S2: up to date means a higher last term, or the same last term and a
// last index at least as high. A longer log of an older term loses.
func TestRequestVoteReceiverRejectsCandidateWithStaleLogS2(t *testing.T) {
	voterLog := []uint64{1, 2, 2} // lastTerm 2, lastIndex 3
	for _, tc := range []struct {
		name            string
		lastTerm, index uint64
		grant           bool
	}{
		{"S2 longer log of an older term", 1, 10, false},
		{"same last term, shorter", 2, 2, false},
		{"same last term, same length", 2, 3, true},
		{"same last term, longer", 2, 4, true},
		{"newer last term, shorter", 3, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, "n1", 2, voterLog)
			resp := one(t, n.stepFlush(t, Message{Type: MsgVote, From: "n2", To: "n1", Term: 3, LogTerm: tc.lastTerm, Index: tc.index}), MsgVoteResp)
			if resp.Reject == tc.grant {
				t.Fatalf("grant = %v, want %v", !resp.Reject, tc.grant)
			}
		})
	}
}

// ---- Followers ----

// If the election timeout elapses without hearing from a leader or granting a vote:
// convert to candidate. The timeout is drawn from [E, 2E) (S7).
func TestFollowerStartsElectionAfterRandomizedTimeout(t *testing.T) {
	seen := map[int]bool{}
	for seed := range uint64(30) {
		n := newNode(t, "n1", 1, nil, func(c *raftConfig) { c.rand = rand.New(rand.NewPCG(seed, 1)) })
		ticks := 0
		for n.r.role == roleFollower {
			n.r.tick()
			ticks++
		}
		if ticks < 10 || ticks >= 20 {
			t.Fatalf("election after %d ticks, want [10, 20)", ticks)
		}
		seen[ticks] = true
		msgs := n.flush()
		if len(only(msgs, MsgVote)) != 2 || n.r.term != 2 {
			t.Fatalf("candidate must request votes in term 2: %+v", msgs)
		}
	}
	if len(seen) < 3 {
		t.Fatalf("timeouts are not randomized: %v", seen)
	}
}

func TestFollowerHeartbeatResetsElectionTimer(t *testing.T) {
	n := newNode(t, "n1", 1, nil)
	for range 100 {
		n.r.tick()
		n.stepFlush(t, Message{Type: MsgHeartbeat, From: "n2", To: "n1", Term: 1})
	}
	if n.r.role != roleFollower || n.r.lead != "n2" {
		t.Fatalf("a follower hearing heartbeats campaigned: %v", n.r.role)
	}
}

// ---- Candidates ----

// On conversion to candidate: increment currentTerm, vote for self, send RequestVote to all.
// The self-vote counts only once persisted, and the requests leave only then too (see
// becomeCandidate, S37).
func TestCandidateCountsSelfVoteOnlyOncePersisted(t *testing.T) {
	n := newNode(t, "n1", 1, nil)
	tickUntil(n, roleCandidate)
	rd := n.r.ready()
	if !rd.SaveHardState || rd.HardState.Vote != "n1" || rd.HardState.Term != 2 {
		t.Fatalf("the raftReady must persist the self-vote: %+v", rd.HardState)
	}
	if len(only(rd.Messages, MsgVote)) != 0 || len(only(rd.MessagesAfterPersist, MsgVote)) != 2 {
		t.Fatalf("vote requests must wait for the raftReady's persistence: %+v", rd)
	}
	// A grant arrives before the self-vote is durable: one vote of three is not a majority.
	if err := n.r.step(Message{Type: MsgVoteResp, From: "n2", To: "n1", Term: 2}); err != nil {
		t.Fatal(err)
	}
	if n.r.role != roleCandidate {
		t.Fatalf("won with an unpersisted self-vote")
	}
	n.log.save(rd)
	n.r.advance(rd)
	if n.r.role != roleLeader {
		t.Fatalf("with the self-vote durable, two of three must win: %v", n.r.role)
	}
}

func TestCandidateBecomesFollowerOnAppendFromNewLeader(t *testing.T) {
	n := newNode(t, "n1", 1, nil)
	tickUntil(n, roleCandidate)
	n.flush()
	n.stepFlush(t, appendMsg("n2", 2, 0, 0, 0))
	if n.r.role != roleFollower || n.r.lead != "n2" {
		t.Fatalf("candidate must follow the leader of its term: %v lead %q", n.r.role, n.r.lead)
	}
}

func TestCandidateReturnsToFollowerWhenMajorityRejects(t *testing.T) {
	n := newNode(t, "n1", 1, nil)
	tickUntil(n, roleCandidate)
	n.flush()
	n.stepFlush(t, Message{Type: MsgVoteResp, From: "n2", To: "n1", Term: 2, Reject: true})
	n.stepFlush(t, Message{Type: MsgVoteResp, From: "n3", To: "n1", Term: 2, Reject: true})
	if n.r.role != roleFollower {
		t.Fatalf("lost election, role %v", n.r.role)
	}
}

func TestCandidateStartsNewElectionOnTimeout(t *testing.T) {
	n := newNode(t, "n1", 1, nil)
	tickUntil(n, roleCandidate)
	for n.r.term == 2 {
		n.r.tick()
	}
	if n.r.role != roleCandidate || n.r.term != 3 {
		t.Fatalf("split vote: want a new election in term 3, got %v term %d", n.r.role, n.r.term)
	}
}

// ---- Leaders: CheckQuorum ----

func TestLeaderStepsDownWithoutQuorumCheckQuorum(t *testing.T) {
	n := newNode(t, "n1", 1, nil, withCheckQuorum)
	makeLeader(t, n)
	for range 2 * n.r.electionTicks {
		n.r.tick()
		n.flush()
	}
	if n.r.role != roleFollower {
		t.Fatalf("a leader that heard from nobody for two election timeouts is %v", n.r.role)
	}
	m := newNode(t, "n1", 1, nil, withCheckQuorum)
	makeLeader(t, m)
	for range 3 * m.r.electionTicks {
		m.r.tick()
		m.flush()
		m.stepFlush(t, Message{Type: MsgHeartbeatResp, From: "n2", To: "n1", Term: m.r.term})
	}
	if m.r.role != roleLeader {
		t.Fatalf("a leader hearing from a quorum stepped down")
	}
}

// ---- Scenarios ----

// S1: term and vote survive a crash; a restarted node never votes twice in one term.
func TestS1RestartedNodeNeverVotesTwiceInATerm(t *testing.T) {
	n := newNode(t, "n1", 4, nil)
	n.stepFlush(t, Message{Type: MsgVote, From: "n2", To: "n1", Term: 5})
	n.start(t) // crash and restart from what was persisted
	if n.r.term != 5 || n.r.vote != "n2" {
		t.Fatalf("restarted with term %d vote %q", n.r.term, n.r.vote)
	}
	resp := one(t, n.stepFlush(t, Message{Type: MsgVote, From: "n3", To: "n1", Term: 5}), MsgVoteResp)
	if !resp.Reject {
		t.Fatal("voted twice in term 5")
	}
}

// S1: a grant that was handed out but never persisted is lost with the crash, and the grant
// never left (it waits for persistence).
func TestS1VoteGrantNeverLeavesBeforePersist(t *testing.T) {
	n := newNode(t, "n1", 4, nil)
	if err := n.r.step(Message{Type: MsgVote, From: "n2", To: "n1", Term: 5}); err != nil {
		t.Fatal(err)
	}
	rd := n.r.ready()
	if len(only(rd.Messages, MsgVoteResp)) != 0 {
		t.Fatal("grant would leave before the vote is durable")
	}
	n.start(t) // crash before Save: the grant was never sent
	resp := one(t, n.stepFlush(t, Message{Type: MsgVote, From: "n3", To: "n1", Term: 5}), MsgVoteResp)
	if resp.Reject {
		t.Fatal("nothing was promised, so n3 may get the vote")
	}
}

// S3: a follower that received entries past a gap (reordered appends) stores none of them,
// so it campaigns with its true last index and loses against a longer log.
func TestS3NodeWithGapNeverWinsOnLastIndex(t *testing.T) {
	n := newNode(t, "n1", 1, []uint64{1, 1})
	n.stepFlush(t, appendMsg("n2", 1, 4, 1, 0, 1, 1, 1)) // entries 5..7 arrive before 3..4
	if n.r.log.lastIndex() != 2 {
		t.Fatalf("entries stored past a gap: last %d", n.r.log.lastIndex())
	}
	tickUntil(n, roleCandidate)
	req := only(n.flush(), MsgVote)[0]
	if req.Index != 2 {
		t.Fatalf("vote request claims last index %d", req.Index)
	}
	voter := newNode(t, "n3", 1, []uint64{1, 1, 1, 1})
	if resp := one(t, voter.stepFlush(t, req), MsgVoteResp); !resp.Reject {
		t.Fatal("a voter with a longer log granted")
	}
}

// S6: PreVote. A node that hears from a live leader refuses pre-votes; pre-votes change no
// term or vote; a node returning from a partition does not disrupt the leader.
func TestS6PreVoteProtectsHealthyLeader(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	l := c.elect(200)
	term := l.r.term
	f := c.follower(l)
	c.isolate(f.id)
	for range 10 * f.r.electionTicks {
		c.tick()
	}
	if f.r.term != term {
		t.Fatalf("an isolated node with PreVote raised its term to %d", f.r.term)
	}
	c.heal()
	for range 3 * f.r.electionTicks {
		c.tick()
	}
	if c.leader() != l || l.r.term != term {
		t.Fatalf("the returning node disrupted the leader: leader %v term %d", c.leader().id, c.leader().r.term)
	}
	// Direct: a follower in contact with the leader refuses a pre-vote, and grants none.
	var g *testNode
	for _, id := range c.ids {
		if id != l.id && id != f.id {
			g = c.node(id)
		}
	}
	last, lastTerm := g.r.log.lastIndex(), g.r.log.lastTerm()
	resp := one(t, g.stepFlush(t, Message{Type: MsgPreVote, From: f.id, To: g.id, Term: term + 1, Index: last + 10, LogTerm: lastTerm}), MsgPreVoteResp)
	if !resp.Reject || g.r.term != term || g.r.vote != l.id && g.r.vote != "" {
		t.Fatalf("pre-vote in the lease: %+v, term %d vote %q", resp, g.r.term, g.r.vote)
	}
}

func TestS6PreVoteGrantChangesNothingAndIsNotAVote(t *testing.T) {
	n := newNode(t, "n1", 3, nil, withPreVote)
	resp := one(t, n.stepFlush(t, Message{Type: MsgPreVote, From: "n2", To: "n1", Term: 4}), MsgPreVoteResp)
	if resp.Reject || n.r.term != 3 || n.r.vote != "" {
		t.Fatalf("pre-vote: %+v, term %d vote %q", resp, n.r.term, n.r.vote)
	}
	// A pre-candidate never becomes leader on pre-vote grants alone.
	p := newNode(t, "n1", 3, nil, withPreVote)
	tickUntil(p, rolePreCandidate)
	p.flush()
	p.stepFlush(t, Message{Type: MsgPreVoteResp, From: "n2", To: "n1", Term: 4})
	if p.r.role != roleCandidate || p.r.term != 4 {
		t.Fatalf("after a pre-vote majority: %v term %d, want candidate in 4", p.r.role, p.r.term)
	}
	p.stepFlush(t, Message{Type: MsgPreVoteResp, From: "n3", To: "n1", Term: 4})
	if p.r.role == roleLeader {
		t.Fatal("pre-vote grants were counted as votes")
	}
}

// S7: five nodes starting at the same instant elect a leader within a bounded number of
// rounds, for many seeds: timeouts are randomized per node.
func TestS7FiveNodesStartingTogetherElectQuickly(t *testing.T) {
	for seed := range uint64(50) {
		c := newTestCluster(t, 5, func(cfg *raftConfig) {
			cfg.rand = rand.New(rand.NewPCG(seed, uint64(cfg.id[1])))
		})
		c.elect(6 * 10) // three election timeouts of 2E at most
	}
}

// S37, with PreVote off: a candidate's vote requests leave only once the raftReady holding
// its term, its vote and the log they claim is durable. Here n1 holds entry 2 (committed by
// n2 and n3) only in memory when it campaigns; it crashes before saving, restarts with a
// shorter log and campaigns again in the same term. Had its first requests left at once,
// n3's grant of them (judged against the entry n1 no longer has) would make n1 a leader
// without a committed entry.
func TestCandidateSendsVoteRequestsOnlyOnceTheirClaimsAreDurableS37(t *testing.T) {
	n := newNode(t, "n1", 1, []uint64{1})
	if err := n.r.step(appendMsg("n2", 1, 1, 1, 1, 1)); err != nil {
		t.Fatal(err)
	}
	tickUntil(n, roleCandidate)
	rd := n.r.ready()
	if last := n.r.log.lastIndex(); last != 2 || n.r.term != 2 {
		t.Fatalf("setup: candidate in term %d with last index %d", n.r.term, last)
	}
	voter := newNode(t, "n3", 1, []uint64{1, 1})
	var grants []Message
	for _, req := range only(rd.Messages, MsgVote) {
		if req.To == "n3" {
			grants = append(grants, only(voter.stepFlush(t, req), MsgVoteResp)...)
		}
	}
	n.start(t) // crash: rd was never saved, its after-persist messages never sent
	if n.r.term != 1 || n.r.log.lastIndex() != 1 {
		t.Fatalf("restarted in term %d with last index %d", n.r.term, n.r.log.lastIndex())
	}
	tickUntil(n, roleCandidate)
	n.flush()
	for _, g := range grants {
		n.stepFlush(t, g) // delayed grants of the first campaign, in the same term 2
	}
	if n.r.role == roleLeader {
		t.Fatalf("n1 leads term %d with log %v, without committed entry 2", n.r.term, logTerms(n))
	}
}
