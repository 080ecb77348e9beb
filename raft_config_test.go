package kommander

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// addEmptyNode adds a node to the cluster's network that starts with no configuration at
// all, as a replica created to be added later (S27).
func (c *testCluster) addEmptyNode(id string, opt func(*raftConfig)) *testNode {
	c.t.Helper()
	cfg := testConfig(id, nil)
	cfg.rand = rand.New(rand.NewPCG(uint64(len(c.ids)+1), 7))
	cfg.checkQuorum, cfg.preVote = true, true
	if opt != nil {
		opt(&cfg)
	}
	n := newTestNode(c.t, cfg, nil)
	c.ids = append(c.ids, id)
	c.nodes[id] = n
	return n
}

// change proposes cc on the leader l and settles; it fails the test on a refusal.
func (c *testCluster) change(l *testNode, cc confChange) uint64 {
	c.t.Helper()
	idx, err := l.r.proposeConfChange(cc, 0)
	if err != nil {
		c.t.Fatalf("%s: %v %s: %v", l.id, cc.Type, cc.Node, err)
	}
	c.settle()
	return idx
}

// clusterWithLeader is a settled 3-node cluster whose leader committed its no-op.
func clusterWithLeader(t *testing.T, opt func(*raftConfig)) (*testCluster, *testNode) {
	c := newTestCluster(t, 3, opt)
	l := c.elect(200)
	c.settle()
	return c, l
}

func wantMembership(t *testing.T, n *testNode, voters, learners []string) {
	t.Helper()
	m := n.r.membership()
	if !slices.Equal(m.Voters, voters) || !slices.Equal(m.Learners, learners) {
		t.Fatalf("%s: %v, want voters %v learners %v", n.id, m, voters, learners)
	}
}

// S27: a node joins as a learner that receives the log, then is promoted; every node,
// the new one included, ends up with the same configuration, and it counts from then on.
func TestConfLearnerJoinsThenIsPromotedS27(t *testing.T) {
	c, l := clusterWithLeader(t, nil)
	n4 := c.addEmptyNode("n4", nil)
	c.propose(l, "before")
	c.change(l, confChange{confAddLearner, "n4"})
	for _, id := range c.ids {
		wantMembership(t, c.node(id), []string{"n1", "n2", "n3"}, []string{"n4"})
	}
	if n4.r.log.lastIndex() != l.r.log.lastIndex() || n4.r.log.committed != l.r.log.committed {
		t.Fatalf("learner last %d commit %d, leader %d %d", n4.r.log.lastIndex(), n4.r.log.committed, l.r.log.lastIndex(), l.r.log.committed)
	}
	if m, ok := l.r.memberMatch("n4"); !ok || m != l.r.log.lastIndex() {
		t.Fatalf("memberMatch(n4) = %d, %v", m, ok)
	}
	c.change(l, confChange{confAddVoter, "n4"})
	for _, id := range c.ids {
		wantMembership(t, c.node(id), []string{"n1", "n2", "n3", "n4"}, nil)
	}
	// Now a quorum is 3 of 4: with two voters down nothing commits.
	var others []string
	for _, id := range c.ids {
		if id != l.id && id != "n4" {
			others = append(others, id)
		}
	}
	c.down[others[0]], c.down[others[1]] = true, true
	idx, _, err := l.r.propose([]Entry{{Data: []byte("x")}})
	if err != nil {
		t.Fatal(err)
	}
	c.settle()
	if l.r.log.committed >= idx {
		t.Fatalf("committed %d with 2 of 4 voters", idx)
	}
	c.down[others[0]] = false
	c.tick()
	if l.r.log.committed < idx {
		t.Fatalf("not committed with 3 of 4 voters: commit %d < %d", l.r.log.committed, idx)
	}
}

// S27: learners never count for a commit or an election, and never campaign.
func TestConfLearnerNeverCountsNorCampaignsS27(t *testing.T) {
	c, l := clusterWithLeader(t, nil)
	n4 := c.addEmptyNode("n4", nil)
	n5 := c.addEmptyNode("n5", nil)
	c.change(l, confChange{confAddLearner, "n4"})
	c.change(l, confChange{confAddLearner, "n5"})
	// Two voters down: the leader and two learners are three of five nodes, no quorum.
	var others []string
	for _, id := range []string{"n1", "n2", "n3"} {
		if id != l.id {
			others = append(others, id)
		}
	}
	c.down[others[0]], c.down[others[1]] = true, true
	idx, _, _ := l.r.propose([]Entry{{Data: []byte("x")}})
	c.settle()
	if l.r.log.committed >= idx {
		t.Fatalf("learners counted toward commit: commit %d >= %d", l.r.log.committed, idx)
	}
	// Learners cut off from everyone never campaign.
	c.isolate("n4")
	term := n4.r.term
	for range 100 {
		n4.r.tick()
		n4.flush()
	}
	if n4.r.role != roleFollower || n4.r.term != term {
		t.Fatalf("learner %v in term %d (was %d)", n4.r.role, n4.r.term, term)
	}
	// A candidate does not count a learner's grant.
	cand := newNode(t, "n1", 1, []uint64{1}, withVoters("n1", "n2", "n3"), func(c *raftConfig) { c.learners = []string{"n4", "n5"} })
	tickUntil(cand, roleCandidate)
	cand.flush()
	for _, from := range []string{"n4", "n5"} {
		cand.stepFlush(t, Message{Type: MsgVoteResp, From: from, To: "n1", Term: cand.r.term})
	}
	if cand.r.role != roleCandidate {
		t.Fatalf("learners' grants made the candidate %v", cand.r.role)
	}
	_ = n5
}

// S27: a voter is added only by promoting a learner, and only once it is caught up.
func TestConfPromotionOnlyOfCaughtUpLearnerS27(t *testing.T) {
	c, l := clusterWithLeader(t, func(c *raftConfig) { c.maxLearnerLag = 5 })
	c.addEmptyNode("n4", nil)
	if _, err := l.r.proposeConfChange(confChange{confAddVoter, "n4"}, 0); !errors.Is(err, errInvalidConfChange) {
		t.Fatalf("adding a voter that is not a learner: %v", err)
	}
	// Within the lag but without the configuration that made it a learner: not yet (it
	// would not know whose vote requests to take).
	c.down["n4"] = true
	c.change(l, confChange{confAddLearner, "n4"})
	if _, err := l.r.proposeConfChange(confChange{confAddVoter, "n4"}, 0); !errors.Is(err, errLearnerBehind) {
		t.Fatalf("promoting a learner that lacks the configuration: %v", err)
	}
	c.down["n4"] = false
	c.tick()
	c.down["n4"] = true
	for i := range 10 {
		c.propose(l, fmt.Sprint(i))
	}
	if _, err := l.r.proposeConfChange(confChange{confAddVoter, "n4"}, 0); !errors.Is(err, errLearnerBehind) {
		t.Fatalf("promoting a learner 10 entries behind (lag 5): %v", err)
	}
	c.down["n4"] = false
	c.tick()
	c.change(l, confChange{confAddVoter, "n4"})
	wantMembership(t, l, []string{"n1", "n2", "n3", "n4"}, nil)
	if _, err := l.r.proposeConfChange(confChange{confAddLearner, "n4"}, 0); !errors.Is(err, errInvalidConfChange) {
		t.Fatalf("demoting a voter: %v", err)
	}
}

// S27: a removed leader that crashed before its removal committed must still campaign:
// the voter that lacks the removal cannot win against its longer log and needs its vote.
// It wins in the new configuration (without counting itself), commits the removal, steps
// down and hands over.
func TestConfNodeHoldingItsUncommittedRemovalStillCampaignsS27(t *testing.T) {
	c := newTestCluster(t, 2, nil)
	l := c.elect(200)
	c.settle()
	f := c.otherThan(l.id)
	c.cut[[2]string{l.id, f.id}] = true
	if _, err := l.r.proposeConfChange(confChange{confRemove, l.id}, 0); err != nil {
		t.Fatal(err)
	}
	c.settle()
	l.start(t) // a crash: it restarts from its log, which holds its removal
	if l.r.isVoter() || f.r.membership().isVoter(l.id) == false {
		t.Fatalf("%s: %v; %s: %v", l.id, l.r.membership(), f.id, f.r.membership())
	}
	c.heal()
	for range 300 {
		c.tick()
		if f.r.role == roleLeader && f.r.pendingConfIndex() == 0 && !f.r.membership().isVoter(l.id) {
			c.propose(f, "after")
			return
		}
	}
	t.Fatalf("stuck: %s %v %v, %s %v %v", l.id, l.r.role, l.r.membership(), f.id, f.r.role, f.r.membership())
}

// S27: one change in flight, and none before the leader committed an entry of its term.
func TestConfOneChangeInFlightS27(t *testing.T) {
	c, l := clusterWithLeader(t, nil)
	c.addEmptyNode("n4", nil)
	if _, err := l.r.proposeConfChange(confChange{confAddLearner, "n4"}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := l.r.proposeConfChange(confChange{confRemove, "n4"}, 0); !errors.Is(err, errConfChangePending) {
		t.Fatalf("second change while the first is uncommitted: %v", err)
	}
	c.settle()
	if _, err := l.r.proposeConfChange(confChange{confRemove, "n4"}, 0); err != nil {
		t.Fatalf("change after the first committed: %v", err)
	}
	c.settle()
	// A new leader whose no-op has not committed yet refuses.
	n := newNode(t, "n1", 1, []uint64{1})
	makeLeader(t, n)
	if _, err := n.r.proposeConfChange(confChange{confAddLearner, "n4"}, 0); !errors.Is(err, errConfChangePending) {
		t.Fatalf("change before the leader's no-op committed: %v", err)
	}
	if _, err := c.node("n2").r.proposeConfChange(confChange{confAddLearner, "n5"}, 0); l.id != "n2" && !errors.Is(err, errNotLeader) {
		t.Fatalf("change on a follower: %v", err)
	}
}

// S27: the last voter cannot be removed.
func TestConfRemoveLastVoterIsRefusedS27(t *testing.T) {
	n := soloLeader(t)
	if _, err := n.r.proposeConfChange(confChange{confRemove, "n1"}, 0); !errors.Is(err, errRemoveLastVoter) {
		t.Fatalf("removing the last voter: %v", err)
	}
}

// S27: a configuration takes effect when appended, not when committed, and truncating its
// entry reverts to the one before (thesis §4.1).
func TestConfTakesEffectWhenAppendedAndRevertsOnTruncationS27(t *testing.T) {
	n := newNode(t, "n1", 1, []uint64{1})
	m := appendMsg("n2", 2, 1, 1, 1, 2)
	m.Entries[0].Kind = entryConfig
	m.Entries[0].Data = encodeMembership(membership{Voters: []string{"n1", "n2", "n3"}, Learners: []string{"n4"}})
	wantAppendAccepted(t, n, m, 2)
	wantMembership(t, n, []string{"n1", "n2", "n3"}, []string{"n4"})
	if n.r.tracker.progress("n4") == nil {
		t.Fatal("no progress for the new learner")
	}
	// A leader of term 3 replaces entry 2: the configuration before it is back.
	wantAppendAccepted(t, n, appendMsg("n3", 3, 1, 1, 1, 3), 2)
	wantMembership(t, n, []string{"n1", "n2", "n3"}, nil)
	if n.r.tracker.progress("n4") != nil {
		t.Fatal("the learner of a truncated configuration is still tracked")
	}
}

// S27: a removed leader goes on replicating until its removal commits, without counting
// itself, then steps down, and never campaigns again; the others go on without it.
func TestConfRemovedLeaderStepsDownOnceCommittedS27(t *testing.T) {
	c, l := clusterWithLeader(t, nil)
	idx, err := l.r.proposeConfChange(confChange{confRemove, l.id}, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Until the change commits it leads; its own copy does not count: with one of the
	// two remaining voters down, the change does not commit.
	var rest []string
	for _, id := range c.ids {
		if id != l.id {
			rest = append(rest, id)
		}
	}
	c.down[rest[0]] = true
	c.settle()
	if l.r.role != roleLeader || l.r.log.committed >= idx {
		t.Fatalf("removed leader %v commit %d (change at %d)", l.r.role, l.r.log.committed, idx)
	}
	c.down[rest[0]] = false
	c.tick()
	if l.r.role == roleLeader {
		t.Fatalf("removed leader still leads after its removal committed (commit %d, change %d)", l.r.log.committed, idx)
	}
	next := c.elect(200)
	if next == l {
		t.Fatal("the removed leader was elected")
	}
	c.propose(next, "after")
	for range 50 {
		c.tick()
	}
	if l.r.role != roleFollower {
		t.Fatalf("removed node is %v", l.r.role)
	}
	wantMembership(t, next, rest, nil)
}

// S5, S27: a (pre-)vote request from a node that is not a voter here (a removed node, a
// stranger, a learner) whose log is behind ours is dropped without a word and does not
// move our term: a removed node cannot disrupt the group.
func TestConfVoteRequestsFromNonVotersAreIgnoredS5(t *testing.T) {
	for _, typ := range []MessageType{MsgVote, MsgPreVote} {
		for _, from := range []string{"n9", "n4"} {
			n := newNode(t, "n1", 2, []uint64{1, 2}, func(c *raftConfig) { c.learners = []string{"n4"} })
			msgs := n.stepFlush(t, Message{Type: typ, From: from, To: "n1", Term: 9, Index: 1, LogTerm: 1})
			if n.r.term != 2 || n.r.vote != "" || len(msgs) != 0 {
				t.Fatalf("%v from %s: term %d vote %q, sent %v", typ, from, n.r.term, n.r.vote, msgs)
			}
		}
	}
}

// S5: a replica that knows no configuration (created empty) never votes: no candidate can
// need it, and it would forget nothing it promised.
func TestConfReplicaWithoutConfigurationNeverVotesS5(t *testing.T) {
	n := newTestNode(t, testConfig("n4", nil), nil)
	for _, typ := range []MessageType{MsgVote, MsgPreVote} {
		msgs := n.stepFlush(t, Message{Type: typ, From: "n1", To: "n4", Term: 3, Index: 5, LogTerm: 2})
		if n.r.term != 0 || n.r.vote != "" || len(msgs) != 0 {
			t.Fatalf("%v: term %d vote %q, sent %v", typ, n.r.term, n.r.vote, msgs)
		}
	}
}

// S27 (thesis §4.2.3): a vote request from a node our configuration does not list as a
// voter is granted when its log is at least as up to date as ours: it may be a voter just
// added, by a change we lack, and the only one that can win.
func TestConfVoteFromAVoterWeDoNotKnowOfIsGrantedS27(t *testing.T) {
	c, l := clusterWithLeader(t, func(c *raftConfig) { c.checkQuorum, c.preVote = false, false })
	c.addEmptyNode("n4", func(c *raftConfig) { c.checkQuorum, c.preVote = false, false })
	c.change(l, confChange{confAddLearner, "n4"})
	var a, b string // the leader's two followers
	for _, id := range []string{"n1", "n2", "n3"} {
		if id != l.id {
			if a == "" {
				a = id
			} else {
				b = id
			}
		}
	}
	c.down[b] = true
	c.change(l, confChange{confAddVoter, "n4"}) // on l, a and n4; b lacks it
	c.cut[[2]string{l.id, a}] = true
	if _, _, err := l.r.propose([]Entry{{Data: []byte("x")}}); err != nil { // on l and n4 only
		t.Fatal(err)
	}
	c.settle()
	c.heal()
	c.down[l.id], c.down[b] = true, false
	// a cannot win (n4's log is longer), b cannot (a's is): n4 must, with b's vote.
	stale := c.node(b)
	if stale.r.membership().isVoter("n4") {
		t.Fatalf("%s knows of the promotion", b)
	}
	n4 := c.node("n4")
	n4.r.tick() // after the others' election timeouts
	for range 200 {
		c.tick()
		if ld := c.leader(); ld != nil && ld != l {
			return
		}
	}
	t.Fatalf("no leader with %s, %s and n4 up: %s %v, n4 %v", a, b, a, c.node(a).r.role, n4.r.role)
}

// S5: appends, heartbeats and snapshots of a leader are taken whatever our configuration
// says: a replica created empty, knowing no member, follows the leader that adds it.
func TestConfEmptyReplicaFollowsTheLeaderThatAddsItS27(t *testing.T) {
	n := newTestNode(t, testConfig("n4", nil), nil)
	for range 100 {
		n.r.tick()
		n.flush()
	}
	if n.r.role != roleFollower || n.r.term != 0 {
		t.Fatalf("an empty replica campaigned: %v term %d", n.r.role, n.r.term)
	}
	m := appendMsg("n1", 2, 0, 0, 0, 1, 2)
	m.To = "n4"
	m.Entries[1].Kind = entryConfig
	m.Entries[1].Data = encodeMembership(membership{Voters: []string{"n1"}, Learners: []string{"n4"}})
	msgs := n.stepFlush(t, m)
	if r := one(t, msgs, MsgAppendResp); r.Reject || r.Index != 2 {
		t.Fatalf("append refused: %+v", r)
	}
	wantMembership(t, n, []string{"n1"}, []string{"n4"})
	if n.r.lead != "n1" || n.r.term != 2 {
		t.Fatalf("lead %q term %d", n.r.lead, n.r.term)
	}
}

// S27: at restart the configuration is that of the log's configuration entries over the
// bootstrap one; after a compaction, the snapshot's.
func TestConfRecoveredAtRestartS27(t *testing.T) {
	c, l := clusterWithLeader(t, nil)
	c.addEmptyNode("n4", nil)
	c.change(l, confChange{confAddLearner, "n4"})
	c.change(l, confChange{confAddVoter, "n4"})
	c.change(l, confChange{confAddLearner, "n5"})
	want := l.r.membership()
	for _, id := range c.ids {
		n := c.node(id)
		n.start(t)
		if got := n.r.membership(); !slices.Equal(got.Voters, want.Voters) || !slices.Equal(got.Learners, want.Learners) {
			t.Fatalf("%s restarted with %v, want %v", id, got, want)
		}
		// Compacted past every configuration entry: the snapshot's configuration.
		n.log.compact(n.log.lastIndex())
		n.start(t)
		if got := n.r.membership(); !slices.Equal(got.Voters, want.Voters) || !slices.Equal(got.Learners, want.Learners) {
			t.Fatalf("%s restarted from a snapshot with %v, want %v", id, got, want)
		}
	}
}

// S27: a follower behind the compacted log gets a snapshot that carries the voters and the
// learners, and takes its configuration.
func TestConfSnapshotCarriesVotersAndLearnersS27(t *testing.T) {
	c, l := clusterWithLeader(t, nil)
	c.addEmptyNode("n4", nil)
	c.down["n4"] = true
	c.change(l, confChange{confAddLearner, "n4"})
	c.change(l, confChange{confAddLearner, "n5"})
	c.propose(l, "x")
	l.log.compact(l.log.lastIndex())
	c.down["n4"] = false
	c.tick()
	n4 := c.node("n4")
	if n4.installs != 1 {
		t.Fatalf("installs %d", n4.installs)
	}
	wantMembership(t, n4, []string{"n1", "n2", "n3"}, []string{"n4", "n5"})
	n4.start(t)
	wantMembership(t, n4, []string{"n1", "n2", "n3"}, []string{"n4", "n5"})
}

// encodeMembership and encodeConfChange round-trip; decoding refuses what they never write.
func TestConfEncodingRoundTripsAndRefusesMalformed(t *testing.T) {
	m := membership{Voters: []string{"a", "bb"}, Learners: []string{"c"}}
	got, err := decodeMembership(encodeMembership(m))
	if err != nil || !slices.Equal(got.Voters, m.Voters) || !slices.Equal(got.Learners, m.Learners) {
		t.Fatalf("round trip: %v, %v", got, err)
	}
	cc := confChange{confAddVoter, "n4"}
	if got, err := decodeConfChange(encodeConfChange(cc)); err != nil || got != cc {
		t.Fatalf("round trip: %v, %v", got, err)
	}
	good := encodeMembership(m)
	for name, b := range map[string][]byte{
		"empty":             nil,
		"version":           append([]byte{2}, good[1:]...),
		"truncated":         good[:len(good)-1],
		"trailing":          append(slices.Clone(good), 0),
		"duplicate":         encodeMembership(membership{Voters: []string{"a", "a"}}),
		"voter and learner": encodeMembership(membership{Voters: []string{"a"}, Learners: []string{"a"}}),
		"empty ID":          encodeMembership(membership{Voters: []string{""}}),
		"count past input":  {1, 0xff, 0xff},
	} {
		if _, err := decodeMembership(b); !errors.Is(err, errInvalidConfChange) {
			t.Errorf("membership %s: %v", name, err)
		}
	}
	goodCC := encodeConfChange(cc)
	for name, b := range map[string][]byte{
		"empty":     nil,
		"type 0":    encodeConfChange(confChange{0, "n4"}),
		"type 4":    encodeConfChange(confChange{4, "n4"}),
		"no node":   encodeConfChange(confChange{confRemove, ""}),
		"trailing":  append(slices.Clone(goodCC), 0),
		"truncated": goodCC[:len(goodCC)-1],
		"version":   append([]byte{9}, goodCC[1:]...),
	} {
		if _, err := decodeConfChange(b); !errors.Is(err, errInvalidConfChange) {
			t.Errorf("change %s: %v", name, err)
		}
	}
}

// S31: an append whose configuration entry does not decode is refused before anything of
// it is taken.
func TestConfAppendWithMalformedConfigurationIsRefusedS31(t *testing.T) {
	n := newNode(t, "n1", 1, []uint64{1})
	m := appendMsg("n2", 2, 1, 1, 1, 2)
	m.Entries[0].Kind = entryConfig
	m.Entries[0].Data = []byte{1, 2}
	if err := n.r.step(m); !errors.Is(err, errInvalidMessage) {
		t.Fatalf("want errInvalidMessage, got %v", err)
	}
	if n.r.term != 1 || n.r.log.lastIndex() != 1 {
		t.Fatalf("term %d last %d", n.r.term, n.r.log.lastIndex())
	}
}

// FuzzDecodeConfiguration feeds hostile bytes to decodeMembership and decodeConfChange
// (entries and forwarded requests from the network): neither may panic, and what either
// accepts re-encodes to the same bytes and is a valid configuration or change. The seed
// corpus is in testdata/fuzz/FuzzDecodeConfiguration.
func FuzzDecodeConfiguration(f *testing.F) {
	f.Add(encodeMembership(membership{Voters: []string{"n1", "n2", "n3"}, Learners: []string{"n4"}}))
	f.Add(encodeConfChange(confChange{confAddVoter, "n4"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := decodeMembership(b); err == nil {
			if m.check() != nil || !slices.Equal(encodeMembership(m), b) {
				t.Fatalf("accepted %x as %v, which re-encodes differently or is invalid", b, m)
			}
		}
		if cc, err := decodeConfChange(b); err == nil {
			if cc.Node == "" || !slices.Equal(encodeConfChange(cc), b) {
				t.Fatalf("accepted %x as %+v, which re-encodes differently", b, cc)
			}
		}
	})
}
