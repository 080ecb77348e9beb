package kommander

import (
	"errors"
	"testing"
)

// otherThan returns a node of c other than those listed.
func (c *testCluster) otherThan(ids ...string) *testNode {
	for _, id := range c.ids {
		if !contains(ids, id) {
			return c.node(id)
		}
	}
	return nil
}

func contains(ids []string, id string) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// Thesis §3.10: a transfer to an up-to-date voter makes it leader of the next term at once,
// without a tick, although CheckQuorum and PreVote make the voters refuse elections while
// they hear from the leader.
func TestTransferToUpToDateVoterElectsItAtOnce(t *testing.T) {
	c, l := clusterWithLeader(t, nil)
	c.propose(l, "x")
	to := c.otherThan(l.id)
	term := l.r.term
	if err := l.r.transferLeadership(to.id); err != nil {
		t.Fatal(err)
	}
	if l.r.transferTarget() != to.id {
		t.Fatalf("transferTarget %q", l.r.transferTarget())
	}
	c.settle()
	if to.r.role != roleLeader || to.r.term != term+1 {
		t.Fatalf("target %v in term %d (was %d)", to.r.role, to.r.term, term)
	}
	if l.r.role != roleFollower || l.r.transferTarget() != "" {
		t.Fatalf("old leader %v, target %q", l.r.role, l.r.transferTarget())
	}
	c.propose(to, "y")
}

// Thesis §3.10: a target behind the leader is first brought up to date; meanwhile the
// leader takes no proposal nor change (errTransferring).
func TestTransferCatchesTheTargetUpAndRefusesProposals(t *testing.T) {
	c, l := clusterWithLeader(t, nil)
	to := c.otherThan(l.id)
	c.down[to.id] = true
	for range 5 {
		c.propose(l, "x")
	}
	c.down[to.id] = false
	c.cut[[2]string{l.id, to.id}] = true // the transfer cannot end yet
	if err := l.r.transferLeadership(to.id); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.r.propose([]Entry{{Data: []byte("y")}}); !errors.Is(err, errTransferring) {
		t.Fatalf("proposal during a transfer: %v", err)
	}
	if _, err := l.r.proposeConfChange(confChange{confAddLearner, "n9"}, 0); !errors.Is(err, errTransferring) {
		t.Fatalf("change during a transfer: %v", err)
	}
	if err := l.r.transferLeadership(c.otherThan(l.id, to.id).id); !errors.Is(err, errTransferring) {
		t.Fatalf("second transfer to another target: %v", err)
	}
	delete(c.cut, [2]string{l.id, to.id})
	c.tick()
	if to.r.role != roleLeader {
		t.Fatalf("target %v after catching up", to.r.role)
	}
	if got, want := to.r.log.lastIndex(), l.r.log.lastIndex(); got != want {
		t.Fatalf("target last %d, old leader %d", got, want)
	}
}

// Thesis §3.10: without a new leader within an election timeout the transfer is given up
// and the leader takes proposals again.
func TestTransferIsAbandonedAfterAnElectionTimeout(t *testing.T) {
	c, l := clusterWithLeader(t, nil)
	to := c.otherThan(l.id)
	c.down[to.id] = true
	if err := l.r.transferLeadership(to.id); err != nil {
		t.Fatal(err)
	}
	for range l.r.electionTicks - 1 {
		c.tick()
	}
	if l.r.transferTarget() != to.id {
		t.Fatal("given up before an election timeout")
	}
	c.tick()
	if l.r.transferTarget() != "" || l.r.role != roleLeader {
		t.Fatalf("after an election timeout: target %q role %v", l.r.transferTarget(), l.r.role)
	}
	c.propose(l, "again")
}

// Only a voter can be the target.
func TestTransferToNonVoterIsRefused(t *testing.T) {
	c, l := clusterWithLeader(t, nil)
	c.addEmptyNode("n4", nil)
	c.change(l, confChange{confAddLearner, "n4"})
	for _, to := range []string{"n4", "n9"} {
		if err := l.r.transferLeadership(to); !errors.Is(err, errInvalidProposal) {
			t.Fatalf("transfer to %s: %v", to, err)
		}
	}
	if err := c.otherThan(l.id).r.transferLeadership(l.id); !errors.Is(err, errNotLeader) {
		t.Fatalf("transfer on a follower: %v", err)
	}
}

// The lease ends when a transfer starts: the target's election overrides the followers'
// promise the lease rests on (thesis §6.4.1), and it is not used again in that term.
func TestTransferEndsTheReadLease(t *testing.T) {
	c, l := clusterWithLeader(t, nil)
	c.tick()
	if !l.r.leaseHolds() {
		t.Fatal("no lease before the transfer")
	}
	to := c.otherThan(l.id)
	c.down[to.id] = true
	if err := l.r.transferLeadership(to.id); err != nil {
		t.Fatal(err)
	}
	if l.r.leaseHolds() {
		t.Fatal("lease holds during a transfer")
	}
	for range 2 * l.r.electionTicks {
		c.tick()
	}
	if l.r.role != roleLeader || l.r.transferTarget() != "" {
		t.Fatalf("%v, target %q", l.r.role, l.r.transferTarget())
	}
	if l.r.leaseHolds() {
		t.Fatal("lease holds again in the term of a transfer")
	}
}

// S31: msgTimeoutNow makes a node campaign only when it comes from the leader it follows,
// in its term, and the node votes; a forged one moves neither its role nor its term.
func TestTimeoutNowOnlyFromTheLeaderOfOurTermS31(t *testing.T) {
	for name, tc := range map[string]struct {
		from string
		term uint64
		opt  func(*raftConfig)
	}{
		"from another follower": {"n3", 2, nil},
		"from a higher term":    {"n2", 5, nil},
		"from a stranger":       {"n9", 2, nil},
		"to a learner":          {"n2", 2, func(c *raftConfig) { c.voters, c.learners = []string{"n2", "n3"}, []string{"n1"} }},
	} {
		t.Run(name, func(t *testing.T) {
			opts := []func(*raftConfig){withPreVote, withCheckQuorum}
			if tc.opt != nil {
				opts = append(opts, tc.opt)
			}
			n := newNode(t, "n1", 2, []uint64{1, 2}, opts...)
			n.stepFlush(t, Message{Type: MsgHeartbeat, From: "n2", To: "n1", Term: 2})
			msgs := n.stepFlush(t, Message{Type: msgTimeoutNow, From: tc.from, To: "n1", Term: tc.term})
			if n.r.role != roleFollower || n.r.term != 2 || len(only(msgs, MsgVote)) != 0 {
				t.Fatalf("%v term %d, sent %v", n.r.role, n.r.term, msgs)
			}
		})
	}
	n := newNode(t, "n1", 2, []uint64{1, 2}, withPreVote, withCheckQuorum)
	n.stepFlush(t, Message{Type: MsgHeartbeat, From: "n2", To: "n1", Term: 2})
	msgs := n.stepFlush(t, Message{Type: msgTimeoutNow, From: "n2", To: "n1", Term: 2})
	if n.r.role != roleCandidate || n.r.term != 3 || len(only(msgs, MsgVote)) != 2 {
		t.Fatalf("from the leader: %v term %d, sent %v", n.r.role, n.r.term, msgs)
	}
	if v := only(msgs, MsgVote)[0]; v.Context != transferVoteContext {
		t.Fatalf("vote request without the transfer mark: %+v", v)
	}
}

// Thesis §3.10: a voter that hears from a live leader grants the transfer target's vote,
// but still refuses an ordinary candidate's (S6).
func TestTransferVoteIsGrantedDespiteALiveLeader(t *testing.T) {
	for _, ctx := range []uint64{0, transferVoteContext} {
		n := newNode(t, "n1", 2, []uint64{1, 2}, withPreVote, withCheckQuorum)
		n.stepFlush(t, Message{Type: MsgHeartbeat, From: "n2", To: "n1", Term: 2})
		msgs := n.stepFlush(t, Message{Type: MsgVote, From: "n3", To: "n1", Term: 3, Index: 2, LogTerm: 2, Context: ctx})
		granted := len(msgs) == 1 && msgs[0].Type == MsgVoteResp && !msgs[0].Reject
		if granted != (ctx == transferVoteContext) {
			t.Fatalf("context %d: granted %v (%v)", ctx, granted, msgs)
		}
	}
}
