package kommander

import (
	"errors"
	"testing"
)

// These tests cover log replication (raft_replication.go), in the order of Figure 2.

// wantAppendAccepted steps m into n and fails unless n acknowledges it up to index.
func wantAppendAccepted(t *testing.T, n *testNode, m Message, index uint64) {
	t.Helper()
	resp := one(t, n.stepFlush(t, m), MsgAppendResp)
	if resp.Reject || resp.Index != index {
		t.Fatalf("want success at %d, got %+v", index, resp)
	}
}

// sentTo returns the last message of type typ to node to in msgs.
func sentTo(t *testing.T, msgs []Message, typ MessageType, to string) Message {
	t.Helper()
	var out []Message
	for _, m := range only(msgs, typ) {
		if m.To == to {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no %v to %s in %+v", typ, to, msgs)
	}
	return out[len(out)-1]
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
	wantAppendAccepted(t, n, appendMsg("n2", 3, 2, 1, 0, 3), 3)
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
	wantAppendAccepted(t, n, appendMsg("n2", 1, 1, 1, 0, 1), 2)
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
	// n2 acknowledges the no-op, so that the leader streams it entries 2..5 (a leader takes
	// no acknowledgement of entries it has not sent, S31).
	n.stepFlush(t, Message{Type: MsgAppendResp, From: "n2", To: "n1", Term: 2, Index: 1})
	for i := range 4 {
		n.r.propose([]Entry{{Data: []byte{byte(i)}}})
	}
	n.flush()
	n.stepFlush(t, Message{Type: MsgAppendResp, From: "n2", To: "n1", Term: 2, Index: 5})
	pr := n.r.tracker.progress("n2")
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

// ---- Scenarios ----

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

// S36: a follower that answers a heartbeat sent after it acknowledged index 4 with a last
// index of 0 has lost its log (its data directory was wiped): the leader forgets its match
// and probes it from what it has, instead of waiting forever for it to match index 4.
func TestLeaderProbesFollowerThatReportsALogShorterThanItsMatchS36(t *testing.T) {
	n := replicatingLeader(t)
	n.r.tick()
	hb := only(n.flush(), MsgHeartbeat)[0]
	out := n.stepFlush(t, Message{Type: MsgHeartbeatResp, From: hb.To, To: "n1", Term: 2, Context: hb.Context, Index: 0})
	pr := n.r.tracker.progress(hb.To)
	if pr.match != 0 || pr.state != progressProbe || pr.next != 1 {
		t.Fatalf("after proof of a lost log: match %d next %d state %v", pr.match, pr.next, pr.state)
	}
	if app := one(t, out, MsgAppend); app.Index != 0 || len(app.Entries) == 0 {
		t.Fatalf("want a probe from index 1, got %+v", app)
	}
}

// S36: the same proof from a rejection: an append sent after the follower acknowledged
// index 4 is rejected at prevIndex 4.
func TestLeaderProbesFollowerThatRejectsAnIndexItAcknowledgedS36(t *testing.T) {
	n := replicatingLeader(t)
	n.r.propose([]Entry{{Data: []byte("c")}})
	app := sentTo(t, n.flush(), MsgAppend, "n2")
	if app.Index != 4 {
		t.Fatalf("setup: append to n2 at prevIndex %d", app.Index)
	}
	n.stepFlush(t, Message{Type: MsgAppendResp, From: "n2", To: "n1", Term: 2, Context: app.Context, Index: 4, Reject: true, RejectHint: 1})
	if pr := n.r.tracker.progress("n2"); pr.match != 0 || pr.state != progressProbe || pr.next != 1 {
		t.Fatalf("after proof of a lost log: match %d next %d state %v", pr.match, pr.next, pr.state)
	}
}

// S36 and S13: answers to messages sent before the follower acknowledged its match report
// an older, shorter log; reordered, delayed or duplicated, they never move match back.
func TestLeaderTakesNoStaleShortLogReportAsLossS36(t *testing.T) {
	n := newNode(t, "n1", 1, []uint64{1})
	makeLeader(t, n)
	n.stepFlush(t, Message{Type: MsgAppendResp, From: "n2", To: "n1", Term: 2, Index: 2})
	n.r.tick()
	hb := sentTo(t, n.flush(), MsgHeartbeat, "n2")
	n.r.propose([]Entry{{Data: []byte("a")}, {Data: []byte("b")}})
	app := sentTo(t, n.flush(), MsgAppend, "n2")
	rej := Message{Type: MsgAppendResp, From: "n2", To: "n1", Term: 2, Reject: true, Index: 2, RejectHint: 2, Context: app.Context}
	n.stepFlush(t, Message{Type: MsgAppendResp, From: "n2", To: "n1", Term: 2, Index: 4})
	pr := n.r.tracker.progress("n2")
	if pr.match != 4 {
		t.Fatalf("setup: match %d", pr.match)
	}
	for range 2 {
		n.stepFlush(t, Message{Type: MsgHeartbeatResp, From: "n2", To: "n1", Term: 2, Context: hb.Context, Index: 2})
		n.stepFlush(t, rej)
	}
	if pr.match != 4 || pr.state != progressReplicate {
		t.Fatalf("stale answers moved the progress: match %d state %v", pr.match, pr.state)
	}
}

// S36: a follower that restarts with an empty log and an empty hard state (a wiped data
// directory) catches up with the leader while writes continue, and commits what it has.
func TestFollowerWithWipedDataCatchesUpS36(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	l := c.elect(200)
	for i := range 5 {
		c.propose(l, string(rune('a'+i)))
	}
	f := c.follower(l)
	f.log, f.applied = &memLog{}, nil
	f.start(t)
	for i := range 3 {
		c.propose(l, string(rune('x'+i)))
		c.tick()
	}
	for range 5 {
		c.tick()
	}
	if c.leader() != l {
		t.Fatalf("the leader changed: %v", c.leader())
	}
	if got, want := logTerms(f), logTerms(l); !equalTerms(got, want) {
		t.Fatalf("the wiped follower did not catch up: %v vs %v", got, want)
	}
	if f.r.log.committed != l.r.log.committed || uint64(len(f.applied)) != l.r.log.committed {
		t.Fatalf("the wiped follower commits %d and applied %d, the leader commits %d", f.r.log.committed, len(f.applied), l.r.log.committed)
	}
}

// S36 and S13: once a follower proved it lost entries, a delayed acknowledgement of an
// append sent before the proof tells of the lost log and moves match nowhere.
func TestLeaderTakesNoAcknowledgementOfALostLogS36(t *testing.T) {
	n := replicatingLeader(t)
	n.r.propose([]Entry{{Data: []byte("c")}})
	app := sentTo(t, n.flush(), MsgAppend, "n2")
	n.r.tick()
	hb := sentTo(t, n.flush(), MsgHeartbeat, "n2")
	n.stepFlush(t, Message{Type: MsgHeartbeatResp, From: "n2", To: "n1", Term: 2, Context: hb.Context, Index: 0})
	n.stepFlush(t, Message{Type: MsgAppendResp, From: "n2", To: "n1", Term: 2, Context: app.Context, Index: 5})
	if pr := n.r.tracker.progress("n2"); pr.match != 0 || pr.state != progressProbe {
		t.Fatalf("an acknowledgement of the lost log came back: match %d state %v", pr.match, pr.state)
	}
}

// TestLeaderSendsEarlyToIdleFollowersWhileItsReadyIsOutstanding: while a leader's
// raftReady is being saved, takeEarly hands out its answers to acknowledgements and the
// appends of entries proposed meanwhile, but the latter only to followers with nothing in
// flight; those entries still go to storage with the next raftReady, which does not send
// them again.
func TestLeaderSendsEarlyToIdleFollowersWhileItsReadyIsOutstanding(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	l := c.elect(50)
	c.propose(l, "a")
	propose := func(data string) uint64 {
		t.Helper()
		idx, _, err := l.r.propose([]Entry{{Type: "set", Data: []byte(data)}})
		if err != nil {
			t.Fatal(err)
		}
		return idx
	}
	// deliver hands msgs to the followers, steps their answers into the leader and
	// returns what the leader then hands out early.
	deliver := func(msgs []Message) []Message {
		t.Helper()
		for _, m := range msgs {
			for _, resp := range c.node(m.To).stepFlush(t, m) {
				if err := l.r.step(resp); err != nil {
					t.Fatal(err)
				}
			}
		}
		return l.r.takeEarly(nil)
	}
	// appended reports the last entry index each follower was sent in msgs.
	appended := func(msgs []Message) map[string]uint64 {
		got := map[string]uint64{}
		for _, m := range msgs {
			if m.Type != MsgAppend {
				t.Fatalf("takeEarly handed out a %v, want only appends: %+v", m.Type, msgs)
			}
			for _, e := range m.Entries {
				got[m.To] = max(got[m.To], e.Index)
			}
		}
		return got
	}
	followers := []string{}
	for _, id := range c.ids {
		if id != l.id {
			followers = append(followers, id)
		}
	}
	wantSent := func(what string, msgs []Message, idx uint64) {
		t.Helper()
		got := appended(msgs)
		for _, f := range followers {
			if got[f] != idx {
				t.Fatalf("%s: early appends reach %v, want %d to each follower: %+v", what, got, idx, msgs)
			}
		}
	}

	b := propose("b")
	if out := l.r.takeEarly(nil); len(out) != 0 {
		t.Fatalf("takeEarly without an outstanding raftReady handed out %+v", out)
	}
	rd := l.r.ready() // being saved from here on; its appends of b are in flight
	c1 := propose("c1")
	if out := l.r.takeEarly(nil); len(out) != 0 {
		t.Fatalf("c1 went early to followers with b in flight: %+v", out)
	}
	// The followers acknowledge b while the leader still saves it; the leader answers
	// each acknowledgement with what it has: c1.
	early := deliver(rd.Messages)
	if l.r.log.committed < b {
		t.Fatalf("b, acknowledged by both followers, is not committed: commit %d, b %d", l.r.log.committed, b)
	}
	wantSent("answers to the acknowledgements of b", early, c1)
	for len(early) > 0 {
		early = deliver(early)
	}
	// Now nothing is in flight: c2 goes to both followers at once.
	c2 := propose("c2")
	early = l.r.takeEarly(nil)
	wantSent("c2 proposed beside idle followers", early, c2)
	if again := l.r.takeEarly(nil); len(again) != 0 {
		t.Fatalf("takeEarly handed out %+v a second time", again)
	}

	// The next raftReady saves c1 and c2 and sends neither again.
	l.log.save(rd)
	l.r.advance(rd)
	rd2 := l.r.ready()
	if n := len(rd2.Entries); n != 2 || rd2.Entries[0].Index != c1 || rd2.Entries[1].Index != c2 {
		t.Fatalf("the next raftReady saves %+v, want %d and %d", rd2.Entries, c1, c2)
	}
	for _, m := range rd2.Messages {
		if len(m.Entries) > 0 {
			t.Fatalf("the next raftReady sends entries again: %+v", m)
		}
	}
	l.log.save(rd2)
	l.r.advance(rd2)
	deliver(early)
	c.settle()
	for _, id := range c.ids {
		if got := c.node(id).r.log.committed; got != c2 {
			t.Fatalf("%s: commit %d after settling, want %d", id, got, c2)
		}
	}
}

// TestFollowerAcknowledgesNothingEarly: a follower that steps an append while its own
// raftReady is being saved hands out no acknowledgement through takeEarly: it answers
// only once what it acknowledges is durable.
func TestFollowerAcknowledgesNothingEarly(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	l := c.elect(50)
	c.propose(l, "a")
	f := c.follower(l)
	appendTo := func() Message {
		t.Helper()
		if _, _, err := l.r.propose([]Entry{{Type: "set", Data: []byte("x")}}); err != nil {
			t.Fatal(err)
		}
		rd := l.r.ready()
		defer func() { l.log.save(rd); l.r.advance(rd) }()
		for _, m := range rd.Messages {
			if m.To == f.id && m.Type == MsgAppend && len(m.Entries) > 0 {
				return m
			}
		}
		t.Fatalf("no append to %s in %+v", f.id, rd.Messages)
		return Message{}
	}
	if err := f.r.step(appendTo()); err != nil {
		t.Fatal(err)
	}
	frd := f.r.ready() // being saved from here on
	if len(frd.MessagesAfterPersist) == 0 {
		t.Fatal("the follower's raftReady holds no acknowledgement")
	}
	if err := f.r.step(appendTo()); err != nil {
		t.Fatal(err)
	}
	for _, m := range f.r.takeEarly(nil) {
		t.Fatalf("the follower handed out a %v before its Save returned", m.Type)
	}
	f.log.save(frd)
	f.r.advance(frd)
	rd := f.r.ready()
	if len(rd.MessagesAfterPersist) != 1 || rd.MessagesAfterPersist[0].Type != MsgAppendResp {
		t.Fatalf("the follower's next raftReady answers %+v, want one MsgAppendResp after its Save", rd.MessagesAfterPersist)
	}
	f.log.save(rd)
	f.r.advance(rd)
}

// TestCommitOnlyAppendsAreAnsweredOnlyToReject: once the acknowledgements of an entry
// commit it, the leader tells the followers the new commit index in appends marked
// commit-only, at an index it knows they have. A follower takes the commit index and does
// not answer (the answer would tell the leader nothing); it still answers one it must
// reject, and the commit-only mark is not set on any other append.
func TestCommitOnlyAppendsAreAnsweredOnlyToReject(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	l := c.elect(50)
	c.propose(l, "a")
	f := c.follower(l)
	idx, _, err := l.r.propose([]Entry{{Type: "set", Data: []byte("b")}})
	if err != nil {
		t.Fatal(err)
	}
	var acks []Message
	for _, m := range l.flush() {
		if m.Type != MsgAppend {
			continue
		}
		if m.commitOnly {
			t.Fatalf("an append with %d entries is marked commit-only", len(m.Entries))
		}
		for _, a := range c.nodes[m.To].stepFlush(t, m) {
			if a.Type == MsgAppendResp && !a.Reject {
				acks = append(acks, a)
			}
		}
	}
	if len(acks) != 2 {
		t.Fatalf("%d acknowledgements of the append, want 2", len(acks))
	}
	var commitOnly []Message
	for _, a := range acks {
		for _, m := range l.stepFlush(t, a) {
			if m.Type == MsgAppend && m.To == f.id && m.commitOnly {
				commitOnly = append(commitOnly, m)
			}
		}
	}
	if l.r.log.committed != idx {
		t.Fatalf("leader committed %d, want %d", l.r.log.committed, idx)
	}
	if len(commitOnly) != 1 {
		t.Fatalf("%d commit-only appends to %s, want 1", len(commitOnly), f.id)
	}
	m := commitOnly[0]
	if len(m.Entries) != 0 || m.Index != idx || m.Commit != idx {
		t.Fatalf("commit-only append at %d with %d entries and commit %d, want at %d with none and commit %d",
			m.Index, len(m.Entries), m.Commit, idx, idx)
	}
	if out := f.stepFlush(t, m); len(out) != 0 {
		t.Fatalf("the follower answered a commit-only append it matched with %+v", out)
	}
	if f.r.log.committed != idx {
		t.Fatalf("follower committed %d after the commit-only append, want %d", f.r.log.committed, idx)
	}

	// A follower that lost its log (say, a wiped disk) rejects it, and says so.
	wiped := newTestNode(t, testConfig(f.id, c.ids), nil)
	m.Term = wiped.r.term + 1
	out := wiped.stepFlush(t, m)
	if len(out) != 1 || out[0].Type != MsgAppendResp || !out[0].Reject {
		t.Fatalf("a follower without the entry answered a commit-only append with %+v, want one rejection", out)
	}

	// Entries cannot be commit-only: the follower refuses such an append as malformed.
	bad := m
	bad.Index, bad.LogTerm = idx, l.r.term
	bad.Entries = []Entry{{Index: idx + 1, Term: l.r.term, Type: "set"}}
	if err := f.r.step(bad); !errors.Is(err, errInvalidMessage) {
		t.Fatalf("a commit-only append with entries: %v, want errInvalidMessage", err)
	}
}

// TestLostCommitOnlyAppendIsMadeGoodByHeartbeats: nobody answers a commit-only append, so
// nobody notices one lost; the heartbeats carry the commit index too, and the follower
// learns it from the next one.
func TestLostCommitOnlyAppendIsMadeGoodByHeartbeats(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	l := c.elect(50)
	c.propose(l, "a")
	f := c.follower(l)
	idx, _, err := l.r.propose([]Entry{{Type: "set", Data: []byte("b")}})
	if err != nil {
		t.Fatal(err)
	}
	c.queue = append(c.queue, l.flush()...)
	// Deliver everything, but drop the commit-only appends to f.
	for range 100 {
		q := c.queue
		c.queue = nil
		for _, m := range q {
			if m.To == f.id && m.commitOnly {
				continue
			}
			c.queue = append(c.queue, c.nodes[m.To].stepFlush(t, m)...)
		}
		for _, id := range c.ids {
			c.queue = append(c.queue, c.nodes[id].flush()...)
		}
		if len(c.queue) == 0 {
			break
		}
	}
	if l.r.log.committed != idx || f.r.log.committed == idx {
		t.Fatalf("leader committed %d and follower %d; want the leader at %d and the follower behind",
			l.r.log.committed, f.r.log.committed, idx)
	}
	c.tick() // heartbeatTicks is 1
	if f.r.log.committed != idx {
		t.Fatalf("follower committed %d after a heartbeat, want %d", f.r.log.committed, idx)
	}
}
