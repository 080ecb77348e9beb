package kommander

import (
	"errors"
	"math/rand/v2"
	"testing"
)

// These tests read like Figure 2 of the Raft paper: one test per rule, named after it, and
// one per failure scenario that the core reaches (S-numbers in the names). Election and
// replication have their own files (raft_election_test.go, raft_replication_test.go); this
// one holds the shared helpers, the rules for all servers, proposals and configuration.

var voters3 = []string{"n1", "n2", "n3"}

// newNode starts n (preVote and checkQuorum off unless opts say otherwise) from a persisted
// term and a log whose entry i+1 has term logTerms[i].
func newNode(t *testing.T, id string, term uint64, logTerms []uint64, opts ...func(*raftConfig)) *testNode {
	t.Helper()
	cfg := testConfig(id, voters3)
	for _, o := range opts {
		o(&cfg)
	}
	log := &memLog{}
	log.setLog(logTerms...)
	log.hs = HardState{Term: term}
	return newTestNode(t, cfg, log)
}

func withVoters(v ...string) func(*raftConfig) { return func(c *raftConfig) { c.voters = v } }
func withPreVote(c *raftConfig)                { c.preVote = true }
func withCheckQuorum(c *raftConfig)            { c.checkQuorum = true }

func only(msgs []Message, typ MessageType) []Message {
	var out []Message
	for _, m := range msgs {
		if m.Type == typ {
			out = append(out, m)
		}
	}
	return out
}

func one(t *testing.T, msgs []Message, typ MessageType) Message {
	t.Helper()
	got := only(msgs, typ)
	if len(got) != 1 {
		t.Fatalf("want one %v, got %d in %+v", typ, len(got), msgs)
	}
	return got[0]
}

// tickUntil ticks n until it plays role.
func tickUntil(n *testNode, role raftRole) {
	for n.r.role != role {
		n.r.tick()
	}
}

// makeLeader runs an election on n (preVote off) that every peer grants.
func makeLeader(t *testing.T, n *testNode) []Message {
	t.Helper()
	tickUntil(n, roleCandidate)
	n.flush()
	var out []Message
	for _, pr := range n.r.tracker.prs {
		if pr.id != n.id && n.r.role == roleCandidate {
			out = append(out, n.stepFlush(t, Message{Type: MsgVoteResp, From: pr.id, To: n.id, Term: n.r.term})...)
		}
	}
	if n.r.role != roleLeader {
		t.Fatalf("%s did not become leader: %v", n.id, n.r.role)
	}
	return out
}

func logTerms(n *testNode) []uint64 {
	var ts []uint64
	for i := uint64(1); i <= n.r.log.lastIndex(); i++ {
		tm, err := n.r.log.term(i)
		if err != nil {
			panic(err)
		}
		ts = append(ts, tm)
	}
	return ts
}

func equalTerms(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func appendMsg(from string, term, prevIndex, prevTerm, commit uint64, entryTerms ...uint64) Message {
	m := Message{Type: MsgAppend, From: from, To: "n1", Term: term, Index: prevIndex, LogTerm: prevTerm, Commit: commit}
	for i, et := range entryTerms {
		m.Entries = append(m.Entries, Entry{Index: prevIndex + 1 + uint64(i), Term: et})
	}
	return m
}

// ---- Rules for all servers ----

// If commitIndex > lastApplied, apply log[lastApplied+1] in order; entries are handed out
// for apply only once durable on this node (S17).
func TestAllServersApplyCommittedEntriesInOrderOnceDurableS17(t *testing.T) {
	n := newNode(t, "n1", 1, nil)
	if err := n.r.step(appendMsg("n2", 1, 0, 0, 3, 1, 1, 1)); err != nil {
		t.Fatal(err)
	}
	rd := n.r.ready()
	if len(rd.CommittedEntries) != 0 {
		t.Fatalf("entries not yet durable were handed out for apply: %+v", rd.CommittedEntries)
	}
	n.log.save(rd)
	n.r.advance(rd)
	rd = n.r.ready()
	if len(rd.CommittedEntries) != 3 {
		t.Fatalf("want 3 committed entries after persistence, got %+v", rd.CommittedEntries)
	}
	for i, e := range rd.CommittedEntries {
		if e.Index != uint64(i+1) {
			t.Fatalf("apply order: %+v", rd.CommittedEntries)
		}
	}
	n.r.advance(rd)
	if n.r.hasReady() {
		t.Fatal("entries handed out again")
	}
	if st := n.r.status(); st.applied != 3 || st.commit != 3 {
		t.Fatalf("status %+v", st)
	}
}

// If a message carries a term > currentTerm: set currentTerm, convert to follower (S4).
func TestAllServersStepDownOnHigherTermS4(t *testing.T) {
	for _, typ := range []MessageType{MsgVote, MsgAppend, MsgHeartbeat, MsgAppendResp, MsgVoteResp, MsgHeartbeatResp} {
		t.Run(typ.String(), func(t *testing.T) {
			n := newNode(t, "n1", 1, nil)
			makeLeader(t, n)
			term := n.r.term
			n.stepFlush(t, Message{Type: typ, From: "n2", To: "n1", Term: term + 1})
			if n.r.role != roleFollower || n.r.term != term+1 {
				t.Fatalf("after %v of term %d: %v in term %d", typ, term+1, n.r.role, n.r.term)
			}
			if _, _, err := n.r.propose([]Entry{{Data: []byte("x")}}); !errors.Is(err, errNotLeader) {
				t.Fatalf("deposed leader accepted a proposal: %v", err)
			}
		})
	}
}

// ---- Proposals ----

func TestProposalOnFollowerIsRefusedWithLeaderHint(t *testing.T) {
	n := newNode(t, "n1", 1, nil)
	n.stepFlush(t, Message{Type: MsgHeartbeat, From: "n2", To: "n1", Term: 1})
	_, _, err := n.r.propose([]Entry{{Data: []byte("x")}})
	var nl *notLeaderError
	if !errors.Is(err, errNotLeader) || !errors.As(err, &nl) || nl.Leader != "n2" {
		t.Fatalf("want not-leader error with hint n2, got %v", err)
	}
	err = n.r.step(Message{Type: MsgForward, From: "n3", To: "n1", Entries: []Entry{{ID: 7}}})
	if !errors.As(err, &nl) || nl.Leader != "n2" {
		t.Fatalf("forwarded proposal on a follower: want hint n2, got %v", err)
	}
}

func TestForwardedProposalIsAppendedOnLeaderKeepingIDs(t *testing.T) {
	n := newNode(t, "n1", 1, nil)
	makeLeader(t, n)
	n.stepFlush(t, Message{Type: MsgForward, From: "n3", To: "n1", Entries: []Entry{{ID: 41, Type: "set"}, {ID: 42, Type: "set"}}})
	ents, err := n.r.log.entries(2, 4, 1<<20)
	if err != nil || len(ents) != 2 || ents[0].ID != 41 || ents[1].ID != 42 || ents[1].Term != 2 {
		t.Fatalf("entries %+v, err %v", ents, err)
	}
}

func TestProposalsAreDroppedWhenTooMuchIsUnpersisted(t *testing.T) {
	n := newNode(t, "n1", 1, nil, func(c *raftConfig) { c.maxUnstableBytes = 200 })
	makeLeader(t, n)
	var err error
	for range 10 {
		if _, _, err = n.r.propose([]Entry{{Data: make([]byte, 50)}}); err != nil {
			break
		}
	}
	if !errors.Is(err, errProposalDropped) {
		t.Fatalf("want errProposalDropped, got %v", err)
	}
	n.flush() // persisted: room again
	if _, _, err := n.r.propose([]Entry{{Data: make([]byte, 50)}}); err != nil {
		t.Fatalf("after persistence: %v", err)
	}
}

// ---- Scenarios ----

// S9: traffic on one partition never resets the election timer of another; each group
// draws its own timeout.
func TestS9TrafficOnOnePartitionDoesNotResetAnother(t *testing.T) {
	mk := func(p uint32) *testNode {
		cfg := testConfig("n1", voters3)
		cfg.partition = p
		cfg.rand = rand.New(rand.NewPCG(1, uint64(p)))
		return newTestNode(t, cfg, nil)
	}
	a, b := mk(0), mk(1)
	for range 30 {
		a.r.tick()
		b.r.tick()
		a.stepFlush(t, Message{Type: MsgHeartbeat, Partition: 0, From: "n2", To: "n1", Term: 1})
	}
	if a.r.role != roleFollower {
		t.Fatal("partition 0 hears its leader and must not campaign")
	}
	if b.r.role == roleFollower && b.r.term == 0 {
		t.Fatal("partition 1 hears nothing and must have campaigned")
	}
	if err := b.r.step(Message{Type: MsgHeartbeat, Partition: 0, From: "n2", To: "n1", Term: 9}); err == nil {
		t.Fatal("a message of partition 0 was accepted by partition 1")
	}
}

// ---- Configuration and robustness ----

func TestNewRaftRejectsBadConfigAndState(t *testing.T) {
	good := func() raftConfig {
		c := testConfig("n1", voters3)
		c.storage = &memLog{}
		return c
	}
	for _, tc := range []struct {
		name string
		mod  func(*raftConfig)
	}{
		{"no id", func(c *raftConfig) { c.id = "" }},
		{"voter and learner", func(c *raftConfig) { c.learners = []string{"n3"} }},
		{"empty learner", func(c *raftConfig) { c.learners = []string{""} }},
		{"duplicate voter", func(c *raftConfig) { c.voters = []string{"n1", "n2", "n2"} }},
		{"heartbeat >= election", func(c *raftConfig) { c.heartbeatTicks = 10 }},
		{"no storage", func(c *raftConfig) { c.storage = nil }},
		{"no rand", func(c *raftConfig) { c.rand = nil }},
		{"commit beyond log", func(c *raftConfig) { c.hardState.Commit = 3 }},
		{"applied beyond log", func(c *raftConfig) { c.applied = 3 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.mod(&c)
			if _, err := newRaft(c); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if _, err := newRaft(good()); err != nil {
		t.Fatalf("good config refused: %v", err)
	}
}

// soloLeader returns n1, the only voter of its group, once it leads.
func soloLeader(t *testing.T) *testNode {
	n := newNode(t, "n1", 0, nil, withVoters("n1"))
	for n.r.role != roleLeader {
		n.r.tick()
		n.flush()
	}
	return n
}

func TestSingleVoterGroupCommitsAlone(t *testing.T) {
	n := soloLeader(t)
	idx, _, err := n.r.propose([]Entry{{Data: []byte("solo")}})
	if err != nil {
		t.Fatal(err)
	}
	n.flush()
	if n.r.log.committed != idx || len(n.applied) != int(idx) {
		t.Fatalf("commit %d applied %d, want %d", n.r.log.committed, len(n.applied), idx)
	}
}

// Nothing read from the network may panic the process: arbitrary messages (wrong terms,
// indexes past the log, malformed entries, unknown types) stepped into a group in every
// role are refused or ignored.
func TestStepSurvivesArbitraryMessages(t *testing.T) {
	rng := rand.New(rand.NewPCG(2024, 11))
	types := []MessageType{MsgNone, MsgVote, MsgVoteResp, MsgPreVote, MsgPreVoteResp, MsgAppend, MsgAppendResp,
		MsgHeartbeat, MsgHeartbeatResp, msgTimeoutNow, msgSnapshot, MsgForward, MsgReadIndex, MsgReadIndexResp, msgTypeCount, 200}
	small := func() uint64 { return []uint64{0, 1, 2, 3, 4, 5, 8, 1 << 62, ^uint64(0)}[rng.IntN(9)] }
	for round := range 200 {
		opts := []func(*raftConfig){withCheckQuorum}
		if round%2 == 0 {
			opts = append(opts, withPreVote)
		}
		n := newNode(t, "n1", 2, []uint64{1, 1, 2, 2}, opts...)
		n.log.hs.Commit = uint64(round % 4) // committed entries a bad append must not rewrite
		n.start(t)
		switch round % 3 {
		case 1:
			if !n.r.preVote {
				makeLeader(t, n)
			}
		case 2:
			for n.r.role == roleFollower {
				n.r.tick()
			}
		}
		for range 100 {
			m := Message{
				Type:       types[rng.IntN(len(types))],
				From:       []string{"n1", "n2", "n3", "n9", ""}[rng.IntN(5)],
				To:         "n1",
				Term:       small(),
				LogTerm:    small(),
				Index:      small(),
				Commit:     small(),
				Reject:     rng.IntN(2) == 0,
				RejectHint: small(),
			}
			for j := range rng.IntN(4) {
				e := Entry{Index: m.Index + 1 + uint64(j), Term: m.LogTerm, Kind: EntryKind(rng.IntN(4))}
				if rng.IntN(4) == 0 {
					e.Index, e.Term = small(), small()
				}
				m.Entries = append(m.Entries, e)
			}
			_ = n.r.step(m) // refusals are fine; a panic fails the test
			if rng.IntN(4) == 0 {
				n.r.tick()
			}
			n.flush()
		}
	}
}
