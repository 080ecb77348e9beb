package kommander

import (
	"errors"
	"math/rand/v2"
	"testing"
)

// These tests read like Figure 2 of the Raft paper: one test per rule, named after it, and
// one per failure scenario of SCENARIOS.md that the core reaches (S-numbers in the names).

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

// makeLeader runs an election on n (preVote off) that every peer grants.
func makeLeader(t *testing.T, n *testNode) []Message {
	t.Helper()
	for n.r.role != roleCandidate {
		n.r.tick()
	}
	n.flush()
	var out []Message
	for _, v := range n.r.members.voters {
		if v != n.id && n.r.role == roleCandidate {
			out = append(out, n.stepFlush(t, Message{Type: MsgVoteResp, From: v, To: n.id, Term: n.r.term})...)
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

// ---- AppendEntries receiver (Figure 2) ----

// Rule 1: reply false if term < currentTerm; the reply carries our term so that a deposed
// leader steps down (S4).
func TestAppendEntriesReceiverRejectsStaleTerm(t *testing.T) {
	n := newNode(t, "n1", 3, []uint64{1})
	resp := one(t, n.stepFlush(t, appendMsg("n2", 2, 1, 1, 0, 2)), MsgAppendResp)
	if !resp.Reject || resp.Term != 3 {
		t.Fatalf("want rejection carrying term 3, got %+v", resp)
	}
	if n.r.log.lastIndex() != 1 {
		t.Fatalf("stale append changed the log: last %d", n.r.log.lastIndex())
	}
}

// Rule 2: reply false if the log has no entry at prevLogIndex. The hint is our last index+1,
// and no entry is stored past the gap (S3).
func TestAppendEntriesReceiverRejectsMissingPrevIndexS3(t *testing.T) {
	n := newNode(t, "n1", 1, []uint64{1, 1})
	resp := one(t, n.stepFlush(t, appendMsg("n2", 1, 5, 1, 0, 1)), MsgAppendResp)
	if !resp.Reject || resp.RejectHint != 3 || resp.Index != 5 {
		t.Fatalf("want rejection of prev 5 with hint 3, got %+v", resp)
	}
	if n.r.log.lastIndex() != 2 {
		t.Fatalf("a gap was created: last %d", n.r.log.lastIndex())
	}
}

// Rule 2: reply false if the entry at prevLogIndex has another term, with the conflicting
// term and its first index so that the leader skips the whole term (S13).
func TestAppendEntriesReceiverRejectsPrevTermMismatchWithHint(t *testing.T) {
	n := newNode(t, "n1", 3, []uint64{1, 1, 2, 2, 2})
	resp := one(t, n.stepFlush(t, appendMsg("n2", 3, 5, 3, 0, 3)), MsgAppendResp)
	if !resp.Reject || resp.LogTerm != 2 || resp.RejectHint != 3 {
		t.Fatalf("want rejection with conflict term 2 from index 3, got %+v", resp)
	}
}

// Rule 3: an existing entry that conflicts with a new one (same index, other term) is
// deleted with all that follow it.
func TestAppendEntriesReceiverTruncatesConflictingSuffix(t *testing.T) {
	n := newNode(t, "n1", 2, []uint64{1, 1, 2, 2})
	resp := one(t, n.stepFlush(t, appendMsg("n2", 3, 2, 1, 0, 3)), MsgAppendResp)
	if resp.Reject || resp.Index != 3 {
		t.Fatalf("want success at 3, got %+v", resp)
	}
	if got := logTerms(n); !equalTerms(got, []uint64{1, 1, 3}) {
		t.Fatalf("log terms %v, want [1 1 3]", got)
	}
	if got := n.log.ents; len(got) != 3 || got[2].Term != 3 {
		t.Fatalf("storage was not truncated: %+v", got)
	}
}

// Rule 4: append any new entries not already in the log; entries already there are kept,
// so a stale or duplicated append never truncates (S12).
func TestAppendEntriesReceiverAppendsOnlyNewEntriesS12(t *testing.T) {
	n := newNode(t, "n1", 1, []uint64{1, 1, 1, 1})
	resp := one(t, n.stepFlush(t, appendMsg("n2", 1, 1, 1, 0, 1)), MsgAppendResp)
	if resp.Reject || resp.Index != 2 {
		t.Fatalf("want success at 2, got %+v", resp)
	}
	if n.r.log.lastIndex() != 4 {
		t.Fatalf("a stale append truncated the log to %d", n.r.log.lastIndex())
	}
	n.stepFlush(t, appendMsg("n2", 1, 4, 1, 0, 1, 1))
	if got := logTerms(n); !equalTerms(got, []uint64{1, 1, 1, 1, 1, 1}) {
		t.Fatalf("log terms %v", got)
	}
}

// Rule 5: if leaderCommit > commitIndex, commitIndex = min(leaderCommit, last new entry).
func TestAppendEntriesReceiverSetsCommitToMinOfLeaderCommitAndLastNew(t *testing.T) {
	n := newNode(t, "n1", 1, []uint64{1, 1, 1, 1, 1})
	n.stepFlush(t, appendMsg("n2", 1, 2, 1, 5, 1))
	if c := n.r.log.committed; c != 3 {
		t.Fatalf("commit %d, want min(5, 3) = 3", c)
	}
	n.stepFlush(t, appendMsg("n2", 1, 5, 1, 4))
	if c := n.r.log.committed; c != 4 {
		t.Fatalf("commit %d, want 4", c)
	}
}

func TestAppendResponseLeavesOnlyAfterPersistence(t *testing.T) {
	n := newNode(t, "n1", 1, nil)
	if err := n.r.step(appendMsg("n2", 1, 0, 0, 0, 1)); err != nil {
		t.Fatal(err)
	}
	rd := n.r.ready()
	if len(rd.Entries) != 1 || len(only(rd.Messages, MsgAppendResp)) != 0 || len(only(rd.MessagesAfterPersist, MsgAppendResp)) != 1 {
		t.Fatalf("the ack must wait for the entries' persistence: %+v", rd)
	}
	n.r.advance(rd)
}

func TestAppendEntriesReceiverRefusesMalformedEntries(t *testing.T) {
	n := newNode(t, "n1", 1, nil)
	m := appendMsg("n2", 1, 0, 0, 0, 1, 1)
	m.Entries[1].Index = 7
	if err := n.r.step(m); !errors.Is(err, errInvalidMessage) {
		t.Fatalf("want errInvalidMessage, got %v", err)
	}
	if n.r.log.lastIndex() != 0 {
		t.Fatal("a malformed append changed the log")
	}
	if err := n.r.step(Message{Type: MsgAppend, Partition: 9, From: "n2", To: "n1", Term: 1}); !errors.Is(err, errInvalidMessage) {
		t.Fatalf("a message of another partition: want errInvalidMessage, got %v", err)
	}
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
// The self-vote counts only once persisted (see becomeCandidate).
func TestCandidateCountsSelfVoteOnlyOncePersisted(t *testing.T) {
	n := newNode(t, "n1", 1, nil)
	for n.r.role != roleCandidate {
		n.r.tick()
	}
	rd := n.r.ready()
	if !rd.SaveHardState || rd.HardState.Vote != "n1" || rd.HardState.Term != 2 {
		t.Fatalf("the raftReady must persist the self-vote: %+v", rd.HardState)
	}
	if len(only(rd.Messages, MsgVote)) != 2 {
		t.Fatalf("vote requests may go out at once: %+v", rd.Messages)
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
	for n.r.role != roleCandidate {
		n.r.tick()
	}
	n.flush()
	n.stepFlush(t, appendMsg("n2", 2, 0, 0, 0))
	if n.r.role != roleFollower || n.r.lead != "n2" {
		t.Fatalf("candidate must follow the leader of its term: %v lead %q", n.r.role, n.r.lead)
	}
}

func TestCandidateReturnsToFollowerWhenMajorityRejects(t *testing.T) {
	n := newNode(t, "n1", 1, nil)
	for n.r.role != roleCandidate {
		n.r.tick()
	}
	n.flush()
	n.stepFlush(t, Message{Type: MsgVoteResp, From: "n2", To: "n1", Term: 2, Reject: true})
	n.stepFlush(t, Message{Type: MsgVoteResp, From: "n3", To: "n1", Term: 2, Reject: true})
	if n.r.role != roleFollower {
		t.Fatalf("lost election, role %v", n.r.role)
	}
}

func TestCandidateStartsNewElectionOnTimeout(t *testing.T) {
	n := newNode(t, "n1", 1, nil)
	for n.r.role != roleCandidate {
		n.r.tick()
	}
	for n.r.term == 2 {
		n.r.tick()
	}
	if n.r.role != roleCandidate || n.r.term != 3 {
		t.Fatalf("split vote: want a new election in term 3, got %v term %d", n.r.role, n.r.term)
	}
}

// ---- Leaders ----

// Upon election: a no-op entry of the new term, sent to each server (Raft §5.4.2).
func TestLeaderAppendsNoopOnElection(t *testing.T) {
	n := newNode(t, "n1", 1, []uint64{1})
	msgs := makeLeader(t, n)
	if last, _ := n.r.log.entries(2, 3, 100); len(last) != 1 || last[0].Kind != EntryNoop || last[0].Term != 2 {
		t.Fatalf("no no-op of term 2 at index 2: %+v", last)
	}
	if apps := only(msgs, MsgAppend); len(apps) != 2 || apps[0].Entries[0].Kind != EntryNoop {
		t.Fatalf("the no-op must be sent to both followers: %+v", msgs)
	}
}

// Heartbeats carry min(commit, the follower's match) so that no follower commits an entry
// it does not share with the leader.
func TestLeaderHeartbeatCarriesCommitBoundedByMatch(t *testing.T) {
	n := newNode(t, "n1", 1, nil)
	makeLeader(t, n)
	n.stepFlush(t, Message{Type: MsgAppendResp, From: "n2", To: "n1", Term: 2, Index: 1})
	if n.r.log.committed != 1 {
		t.Fatalf("commit %d, want 1", n.r.log.committed)
	}
	n.r.tick()
	hbs := only(n.flush(), MsgHeartbeat)
	if len(hbs) != 2 {
		t.Fatalf("want 2 heartbeats, got %+v", hbs)
	}
	for _, hb := range hbs {
		want := map[string]uint64{"n2": 1, "n3": 0}[hb.To]
		if hb.Commit != want {
			t.Fatalf("heartbeat to %s carries commit %d, want %d", hb.To, hb.Commit, want)
		}
	}
}

// Appends go out before the leader's own persistence; its own entries count toward the
// commit only once persisted.
func TestLeaderSendsBeforePersistingButCountsItselfAfter(t *testing.T) {
	n := newNode(t, "n1", 1, nil, withVoters("n1", "n2", "n3", "n4", "n5"))
	makeLeader(t, n)
	for _, f := range []string{"n2", "n3", "n4", "n5"} {
		n.stepFlush(t, Message{Type: MsgAppendResp, From: f, To: "n1", Term: 2, Index: 1})
	}
	if _, _, err := n.r.propose([]Entry{{Data: []byte("a")}}); err != nil {
		t.Fatal(err)
	}
	rd := n.r.ready()
	if len(rd.Entries) != 1 || len(only(rd.Messages, MsgAppend)) != 4 {
		t.Fatalf("appends must leave with the entries to persist: %+v", rd)
	}
	n.r.step(Message{Type: MsgAppendResp, From: "n2", To: "n1", Term: 2, Index: 2})
	n.r.step(Message{Type: MsgAppendResp, From: "n3", To: "n1", Term: 2, Index: 2})
	if n.r.log.committed != 1 {
		t.Fatalf("committed %d with the leader's copy not durable", n.r.log.committed)
	}
	n.log.save(rd)
	n.r.advance(rd)
	if n.r.log.committed != 2 {
		t.Fatalf("committed %d, want 2 once the leader's copy is durable", n.r.log.committed)
	}
}

// Proposals made between two Readies go to each follower in one append.
func TestLeaderBatchesProposalsIntoOneAppendPerFollower(t *testing.T) {
	n := newNode(t, "n1", 1, nil)
	makeLeader(t, n)
	for _, f := range []string{"n2", "n3"} {
		n.stepFlush(t, Message{Type: MsgAppendResp, From: f, To: "n1", Term: 2, Index: 1})
	}
	for i := range 5 {
		idx, term, err := n.r.propose([]Entry{{ID: uint64(i + 1), Data: []byte{byte(i)}}})
		if err != nil || idx != uint64(i+2) || term != 2 {
			t.Fatalf("propose %d: index %d term %d err %v", i, idx, term, err)
		}
	}
	apps := only(n.flush(), MsgAppend)
	if len(apps) != 2 || len(apps[0].Entries) != 5 {
		t.Fatalf("want one append of 5 entries per follower, got %+v", apps)
	}
}

// The in-flight window bounds appends per follower; the message size bounds each append.
func TestLeaderBoundsInflightAppendsAndMessageSize(t *testing.T) {
	n := newNode(t, "n1", 1, nil, func(c *raftConfig) { c.maxInflightMsgs = 2; c.maxMsgBytes = 1 })
	makeLeader(t, n)
	n.stepFlush(t, Message{Type: MsgAppendResp, From: "n2", To: "n1", Term: 2, Index: 1})
	for i := range 5 {
		if _, _, err := n.r.propose([]Entry{{Data: []byte{byte(i)}}}); err != nil {
			t.Fatal(err)
		}
	}
	var toN2 []Message
	for _, m := range only(n.flush(), MsgAppend) {
		if m.To == "n2" {
			toN2 = append(toN2, m)
		}
	}
	if len(toN2) != 2 || len(toN2[0].Entries) != 1 || len(toN2[1].Entries) != 1 {
		t.Fatalf("want 2 one-entry appends in flight, got %+v", toN2)
	}
	// An acknowledgement frees the window for more.
	more := only(n.stepFlush(t, Message{Type: MsgAppendResp, From: "n2", To: "n1", Term: 2, Index: 3}), MsgAppend)
	if len(more) != 2 || more[0].Index != 3 {
		t.Fatalf("after the ack of 3, want two appends from 4, got %+v", more)
	}
}

// S13: the leader skips a follower's whole conflicting term in one round trip.
func TestLeaderSkipsConflictingTermInOneRoundTripS13(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	long := make([]uint64, 0, 60)
	long = append(long, 1, 1)
	for range 50 {
		long = append(long, 2) // a deposed leader's uncommitted suffix
	}
	c.node("n3").log.setLog(long...)
	c.node("n3").log.hs = HardState{Term: 2}
	for _, id := range []string{"n1", "n2"} {
		c.node(id).log.setLog(1, 1, 3)
		c.node(id).log.hs = HardState{Term: 3}
	}
	for _, id := range c.ids {
		c.node(id).start(t)
	}
	c.isolate("n3")
	c.campaign("n1")
	if c.leader() != c.node("n1") {
		t.Fatal("n1 did not win")
	}
	c.heal()
	rejections := 0
	for range 20 {
		c.node("n1").r.tick()
		c.queue = append(c.queue, c.node("n1").flush()...)
		for len(c.queue) > 0 {
			q := c.queue
			c.queue = nil
			for _, m := range q {
				out := c.node(m.To).stepFlush(t, m)
				for _, o := range out {
					if o.Type == MsgAppendResp && o.Reject && o.From == "n3" {
						rejections++
					}
				}
				c.queue = append(c.queue, out...)
			}
		}
	}
	if got, want := logTerms(c.node("n3")), logTerms(c.node("n1")); !equalTerms(got, want) {
		t.Fatalf("n3 did not catch up: %v vs %v", got, want)
	}
	if rejections > 2 {
		t.Fatalf("%d rejections to skip one conflicting term", rejections)
	}
}

// S13: stale responses never move a follower's match index back, and a stale rejection
// does not reset a replicating follower.
func TestLeaderIgnoresStaleResponsesS13(t *testing.T) {
	n := newNode(t, "n1", 1, nil)
	makeLeader(t, n)
	for i := range 4 {
		n.r.propose([]Entry{{Data: []byte{byte(i)}}})
	}
	n.flush()
	n.stepFlush(t, Message{Type: MsgAppendResp, From: "n2", To: "n1", Term: 2, Index: 5})
	pr := &n.r.prs[n.r.members.indexOf("n2")]
	if pr.match != 5 || pr.state != progressReplicate {
		t.Fatalf("match %d state %v", pr.match, pr.state)
	}
	n.stepFlush(t, Message{Type: MsgAppendResp, From: "n2", To: "n1", Term: 2, Index: 3})
	n.stepFlush(t, Message{Type: MsgAppendResp, From: "n2", To: "n1", Term: 2, Index: 2, Reject: true, RejectHint: 1})
	n.stepFlush(t, Message{Type: MsgAppendResp, From: "n2", To: "n1", Term: 1, Index: 1})
	if pr.match != 5 || pr.state != progressReplicate {
		t.Fatalf("stale responses moved the progress: match %d state %v", pr.match, pr.state)
	}
}

// S11, Figure 8: a leader never commits an entry of an older term by counting replicas; it
// commits it through an entry of its own term.
func TestLeaderCommitsOnlyCurrentTermEntriesByCountingS11(t *testing.T) {
	// n1 led term 2 and wrote index 2 only locally; it is now elected in term 3.
	n := newNode(t, "n1", 2, []uint64{1, 2})
	n.log.hs.Commit = 1
	n.start(t)
	makeLeader(t, n) // no-op at index 3, term 3
	n.stepFlush(t, Message{Type: MsgAppendResp, From: "n2", To: "n1", Term: 3, Index: 2})
	if n.r.log.committed != 1 {
		t.Fatalf("committed %d: index 2 (term 2) is on a majority but must not commit by counting", n.r.log.committed)
	}
	n.stepFlush(t, Message{Type: MsgAppendResp, From: "n2", To: "n1", Term: 3, Index: 3})
	if n.r.log.committed != 3 {
		t.Fatalf("committed %d, want 3 through the no-op of term 3", n.r.log.committed)
	}
}

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
	for n.r.role != roleCandidate {
		n.r.tick()
	}
	req := only(n.flush(), MsgVote)[0]
	if req.Index != 2 {
		t.Fatalf("vote request claims last index %d", req.Index)
	}
	voter := newNode(t, "n3", 1, []uint64{1, 1, 1, 1})
	if resp := one(t, voter.stepFlush(t, req), MsgVoteResp); !resp.Reject {
		t.Fatal("a voter with a longer log granted")
	}
}

// S4: a higher term deposes a leader at once, and followers that moved on never keep
// acknowledging the deposed leader (no phantom quorum).
func TestS4DeposedLeaderGetsNoAcknowledgements(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *raftConfig) { cfg.checkQuorum, cfg.preVote = false, false })
	old := c.elect(200)
	var others []string
	for _, id := range c.ids {
		if id != old.id {
			others = append(others, id)
		}
	}
	c.isolate(old.id)
	c.campaign(others[0])
	if c.node(others[0]).r.role != roleLeader {
		t.Fatalf("%s did not win", others[0])
	}
	// The old leader does not know yet: its proposal must not commit.
	idx, _, err := old.r.propose([]Entry{{Data: []byte("phantom")}})
	if err != nil {
		t.Fatal(err)
	}
	c.heal()
	c.settle()
	if old.r.role == roleLeader {
		t.Fatal("deposed leader still leads after hearing a higher term")
	}
	for _, id := range c.ids {
		n := c.node(id)
		if ents, _ := n.r.log.entries(idx, idx+1, 100); len(ents) == 1 && string(ents[0].Data) == "phantom" && n.r.log.committed >= idx {
			t.Fatalf("%s committed the deposed leader's entry", id)
		}
	}
}

// S6: PreVote. A node that hears from a live leader refuses pre-votes; pre-votes change no
// term or vote; a node returning from a partition does not disrupt the leader.
func TestS6PreVoteProtectsHealthyLeader(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	l := c.elect(200)
	term := l.r.term
	var f *testNode
	for _, id := range c.ids {
		if id != l.id {
			f = c.node(id)
			break
		}
	}
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
	for p.r.role != rolePreCandidate {
		p.r.tick()
	}
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

// S12: reordered, duplicated and delayed appends never create a hole, never truncate a
// committed entry and never hand out an entry twice.
func TestS12ReorderedDuplicatedAppendsAreHarmless(t *testing.T) {
	n := newNode(t, "n1", 1, nil)
	a1 := appendMsg("n2", 1, 0, 0, 0, 1, 1)
	a2 := appendMsg("n2", 1, 2, 1, 2, 1, 1)
	a3 := appendMsg("n2", 1, 4, 1, 4, 1)
	var applied []Entry
	for _, m := range []Message{a2, a3, a1, a1, a2, a3, a2, a1} {
		n.stepFlush(t, m)
	}
	applied = append(applied, n.applied...)
	if n.r.log.lastIndex() != 5 || n.r.log.committed != 4 {
		t.Fatalf("last %d commit %d, want 5 and 4", n.r.log.lastIndex(), n.r.log.committed)
	}
	for i, e := range applied {
		if e.Index != uint64(i+1) {
			t.Fatalf("applied out of order or twice: %+v", applied)
		}
	}
}

// S15: a new leader never reissues an index that an older leader acknowledged as committed.
func TestS15NewLeaderNeverReissuesCommittedIndex(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	l := c.elect(200)
	idx := c.propose(l, "acknowledged")
	if l.r.log.committed < idx {
		t.Fatalf("not committed: %d < %d", l.r.log.committed, idx)
	}
	c.down[l.id] = true
	nl := c.elect(200)
	nidx, _, err := nl.r.propose([]Entry{{Data: []byte("next")}})
	if err != nil {
		t.Fatal(err)
	}
	if nidx <= idx {
		t.Fatalf("new leader reissued index %d (acknowledged %d)", nidx, idx)
	}
	ents, _ := nl.r.log.entries(idx, idx+1, 100)
	if len(ents) != 1 || string(ents[0].Data) != "acknowledged" {
		t.Fatalf("new leader lost the acknowledged entry: %+v", ents)
	}
}

// S17: apply order is the log order on leader and followers alike.
func TestS17ApplyOrderIsLogOrderEverywhere(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	l := c.elect(200)
	for i := range 20 {
		l.r.propose([]Entry{{ID: uint64(i + 1), Data: []byte{byte(i)}}})
		if i%3 == 0 {
			c.settle()
		}
	}
	for range 3 {
		c.tick()
	}
	for _, id := range c.ids {
		n := c.node(id)
		var ids []uint64
		for i, e := range n.applied {
			if e.Index != uint64(i+1) {
				t.Fatalf("%s applied index %d at position %d", id, e.Index, i)
			}
			if e.Kind == EntryNormal {
				ids = append(ids, e.ID)
			}
		}
		if len(ids) != 20 {
			t.Fatalf("%s applied %d of 20 entries", id, len(ids))
		}
		for i, x := range ids {
			if x != uint64(i+1) {
				t.Fatalf("%s applied out of proposal order: %v", id, ids)
			}
		}
	}
}

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
		{"not a voter", func(c *raftConfig) { c.voters = []string{"n2", "n3"} }},
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

func TestSingleVoterGroupCommitsAlone(t *testing.T) {
	n := newNode(t, "n1", 0, nil, withVoters("n1"))
	for n.r.role != roleLeader {
		n.r.tick()
		n.flush()
	}
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
		MsgHeartbeat, MsgHeartbeatResp, msgTimeoutNow, msgSnapshot, MsgForward, msgReadIndex, msgReadIndexResp, msgTypeCount, 200}
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

// A follower whose acknowledgement arrives after the entry committed on the others' votes
// learns the commit index at once, not at the next heartbeat: a write made through that
// follower would otherwise wait a whole heartbeat interval to be applied there.
func TestLeaderTellsLateFollowerTheCommitOnItsAck(t *testing.T) {
	n := newNode(t, "n1", 1, nil)
	makeLeader(t, n)
	for _, f := range []string{"n2", "n3"} {
		n.stepFlush(t, Message{Type: MsgAppendResp, From: f, To: "n1", Term: 2, Index: 1})
	}
	if _, _, err := n.r.propose([]Entry{{Data: []byte("a")}}); err != nil {
		t.Fatal(err)
	}
	n.flush() // the append of index 2 goes to n2 and n3
	// n2 acknowledges first: index 2 commits. n3's append is still in flight, so whatever
	// the leader tells n3 now can only commit up to n3's match (1).
	n.stepFlush(t, Message{Type: MsgAppendResp, From: "n2", To: "n1", Term: 2, Index: 2})
	if n.r.log.committed != 2 {
		t.Fatalf("commit %d, want 2", n.r.log.committed)
	}
	msgs := n.stepFlush(t, Message{Type: MsgAppendResp, From: "n3", To: "n1", Term: 2, Index: 2})
	for _, m := range msgs {
		if m.To == "n3" && (m.Type == MsgAppend || m.Type == MsgHeartbeat) && m.Commit >= 2 && m.Index+uint64(len(m.Entries)) >= 2 {
			return
		}
	}
	t.Fatalf("n3 acknowledged index 2 after it committed, but was not sent commit 2: %+v", msgs)
}
