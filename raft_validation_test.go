package kommander

import (
	"errors"
	"math"
	"testing"
)

// These tests hold the core to what it may believe of a message (S31): every field is
// checked against the protocol and the group's own state, nothing panics, and no field moves
// next, match or commit beyond what the group can prove.

// replicatingLeader returns n1 leading term 2 of a 3-node group, with both followers
// replicating its log [1, 2, 2, 2] (term 1, then the no-op and two entries of term 2).
func replicatingLeader(t *testing.T) *testNode {
	t.Helper()
	n := newNode(t, "n1", 1, []uint64{1})
	makeLeader(t, n)
	for _, f := range []string{"n2", "n3"} {
		n.stepFlush(t, Message{Type: MsgAppendResp, From: f, To: "n1", Term: 2, Index: 2})
	}
	n.r.propose([]Entry{{Data: []byte("a")}, {Data: []byte("b")}})
	n.flush()
	for _, f := range []string{"n2", "n3"} {
		n.stepFlush(t, Message{Type: MsgAppendResp, From: f, To: "n1", Term: 2, Index: 4})
	}
	if pr := n.r.tracker.progress("n2"); pr.match != 4 || pr.state != progressReplicate || n.r.log.committed != 4 {
		t.Fatalf("setup: match %d state %v commit %d", pr.match, pr.state, n.r.log.committed)
	}
	return n
}

// S31, the forged packet of the issue: a rejection claiming prevIndex 2^64-2 with hint
// 2^64-1 and the leader's own term answers no append the leader sent. It used to move next
// past the log and panic the leader in sendAppend; it must change nothing.
func TestLeaderIgnoresRejectionOfAnAppendItNeverSentS31(t *testing.T) {
	n := replicatingLeader(t)
	pr := n.r.tracker.progress("n2")
	before := *pr
	n.stepFlush(t, Message{Type: MsgAppendResp, From: "n2", To: "n1", Term: 2, Reject: true,
		Index: math.MaxUint64 - 1, RejectHint: math.MaxUint64, LogTerm: 2})
	if pr.match != before.match || pr.next != before.next || pr.state != before.state {
		t.Fatalf("a forged rejection moved the progress: match %d next %d state %v, was %d %d %v",
			pr.match, pr.next, pr.state, before.match, before.next, before.state)
	}
}

// S31: an acknowledgement moves match no further than what was sent to the follower: the
// entries a probe has not carried yet are not acknowledged by a claim.
func TestLeaderTakesNoAcknowledgementPastWhatItSentS31(t *testing.T) {
	n := newNode(t, "n1", 1, nil)
	makeLeader(t, n) // probes carry the no-op at index 1
	n.r.propose([]Entry{{Data: []byte("a")}, {Data: []byte("b")}})
	n.flush() // the probe is unanswered: entries 2 and 3 are not sent
	n.stepFlush(t, Message{Type: MsgAppendResp, From: "n2", To: "n1", Term: 2, Index: 3})
	if pr := n.r.tracker.progress("n2"); pr.match != 1 {
		t.Fatalf("match %d: acknowledged entries that were never sent", pr.match)
	}
}

// S31: a heartbeat's commit is taken no further than an append of this leader proved our
// log to match. Here the follower holds entries 3 and 4 of an old term 2 that the leader
// of term 3 does not have; the leader's stale view of its match must not commit them.
func TestFollowerCommitsOnHeartbeatOnlyWhatAnAppendProvedS31(t *testing.T) {
	n := newNode(t, "n1", 2, []uint64{1, 1, 2, 2})
	resp := one(t, n.stepFlush(t, Message{Type: MsgHeartbeat, From: "n2", To: "n1", Term: 3, Commit: 4}), MsgHeartbeatResp)
	if n.r.log.committed != 0 {
		t.Fatalf("a heartbeat committed %d, entries no append of the leader vouched for", n.r.log.committed)
	}
	if !resp.Reject || resp.Index != 4 {
		t.Fatalf("the response must say the commit was not taken and carry the last index: %+v", resp)
	}
	// The leader's append proves the match; then its commit is taken.
	wantAppendAccepted(t, n, appendMsg("n2", 3, 2, 1, 4, 3, 3), 4)
	if n.r.log.committed != 4 || !equalTerms(logTerms(n), []uint64{1, 1, 3, 3}) {
		t.Fatalf("commit %d log %v", n.r.log.committed, logTerms(n))
	}
	resp = one(t, n.stepFlush(t, Message{Type: MsgHeartbeat, From: "n2", To: "n1", Term: 3, Commit: 4}), MsgHeartbeatResp)
	if resp.Reject {
		t.Fatalf("a follower that took the commit refused it: %+v", resp)
	}
}

// S31, the leader's side of the rule above: a follower that could not take a heartbeat's
// commit gets an append at its match that carries it.
func TestLeaderAnswersRefusedHeartbeatCommitWithAnAppendS31(t *testing.T) {
	n := replicatingLeader(t)
	n.r.tick()
	hb := only(n.flush(), MsgHeartbeat)[0]
	out := n.stepFlush(t, Message{Type: MsgHeartbeatResp, From: hb.To, To: "n1", Term: 2, Context: hb.Context, Index: 4, Reject: true})
	app := one(t, out, MsgAppend)
	if app.To != hb.To || app.Index != 4 || app.Commit != 4 {
		t.Fatalf("want an append at the match 4 carrying commit 4 to %s, got %+v", hb.To, app)
	}
}

// S31: appends no leader could have sent are refused before they change anything, the term
// included.
func TestAppendEntriesReceiverRefusesAppendsNoLeaderSendsS31(t *testing.T) {
	overflow := appendMsg("n2", 3, math.MaxUint64, 1, 0, 1)
	overflow.Entries[0].Index = 0 // MaxUint64 + 1
	for name, m := range map[string]Message{
		"prev entry at index 0 with a term": appendMsg("n2", 3, 0, 1, 0, 1),
		"prev term above the leader's":      appendMsg("n2", 3, 1, 4, 0),
		"entry of term 0":                   appendMsg("n2", 3, 0, 0, 0, 0),
		"entry term above the leader's":     appendMsg("n2", 3, 1, 1, 0, 4),
		"entry terms going backwards":       appendMsg("n2", 3, 1, 1, 0, 3, 2),
		"indexes past the top of the range": overflow,
		"leader of term 0":                  appendMsg("n2", 0, 0, 0, 0),
	} {
		t.Run(name, func(t *testing.T) {
			n := newNode(t, "n1", 2, []uint64{1, 1})
			if err := n.r.step(m); !errors.Is(err, errInvalidMessage) {
				t.Fatalf("want errInvalidMessage, got %v", err)
			}
			if n.r.term != 2 || n.r.lead != "" || !equalTerms(logTerms(n), []uint64{1, 1}) {
				t.Fatalf("a refused append changed the state: term %d lead %q log %v", n.r.term, n.r.lead, logTerms(n))
			}
		})
	}
}

// S31: a term at the top of the range is refused, so that no later campaign overflows it.
func TestStepRefusesTermAtTheTopOfTheRangeS31(t *testing.T) {
	n := newNode(t, "n1", 2, []uint64{1})
	if err := n.r.step(Message{Type: MsgHeartbeat, From: "n2", To: "n1", Term: math.MaxUint64}); !errors.Is(err, errInvalidMessage) {
		t.Fatalf("want errInvalidMessage, got %v", err)
	}
	if n.r.term != 2 {
		t.Fatalf("term %d", n.r.term)
	}
}

// S31: a node whose term is at the top of the range (only forged or corrupt state gets it
// there) does not campaign: its peers would refuse the term, and the next would wrap to 0.
func TestNoElectionAtTheTopOfTheTermRangeS31(t *testing.T) {
	n := newNode(t, "n1", math.MaxUint64-1, []uint64{1})
	for range 100 {
		n.r.tick()
		n.flush()
		if n.r.term < math.MaxUint64-1 {
			t.Fatalf("the term wrapped to %d", n.r.term)
		}
	}
}

// S31: a vote request whose last entry is of a later term than the election's claims a log
// no candidate has; it is refused and no vote is given.
func TestRequestVoteReceiverRefusesImpossibleLastEntryS31(t *testing.T) {
	for name, m := range map[string]Message{
		"last term above the election's": {Type: MsgVote, From: "n2", To: "n1", Term: 3, Index: 5, LogTerm: 4},
		"empty log with a last term":     {Type: MsgVote, From: "n2", To: "n1", Term: 3, Index: 0, LogTerm: 2},
	} {
		t.Run(name, func(t *testing.T) {
			n := newNode(t, "n1", 2, []uint64{1})
			if err := n.r.step(m); !errors.Is(err, errInvalidMessage) {
				t.Fatalf("want errInvalidMessage, got %v", err)
			}
			if n.r.term != 2 || n.r.vote != "" {
				t.Fatalf("term %d vote %q", n.r.term, n.r.vote)
			}
		})
	}
}

// S31: message types the core does not handle are refused before their term is believed.
func TestStepRefusesTypesTheCoreDoesNotHandleS31(t *testing.T) {
	for _, typ := range []MessageType{MsgNone} {
		n := newNode(t, "n1", 2, []uint64{1})
		if err := n.r.step(Message{Type: typ, From: "n2", To: "n1", Term: 9}); !errors.Is(err, errInvalidMessage) {
			t.Fatalf("%v: want errInvalidMessage, got %v", typ, err)
		}
		if n.r.term != 2 {
			t.Fatalf("%v raised the term to %d", typ, n.r.term)
		}
	}
}

// S31, S21: a snapshot message that does not describe a whole snapshot (none attached, not
// the last chunk, index or term 0, a term past the message's) is refused before its term is
// believed.
func TestStepRefusesSnapshotsWithoutACompleteDescriptionS31(t *testing.T) {
	for name, s := range map[string]*snapshotChunk{
		"none":            nil,
		"not done":        {Index: 5, Term: 2},
		"index 0":         {Index: 0, Term: 2, Done: true},
		"term 0":          {Index: 5, Term: 0, Done: true},
		"term past claim": {Index: 5, Term: 10, Done: true},
	} {
		n := newNode(t, "n1", 2, []uint64{1})
		if err := n.r.step(Message{Type: msgSnapshot, From: "n2", To: "n1", Term: 9, snapshot: s}); !errors.Is(err, errInvalidMessage) {
			t.Fatalf("%s: want errInvalidMessage, got %v", name, err)
		}
		if n.r.term != 2 {
			t.Fatalf("%s raised the term to %d", name, n.r.term)
		}
	}
}

// S31: a read request or answer that no correct peer could send (term 0, or a granted read
// at index 0) is refused before its term is believed.
func TestStepRefusesImpossibleReadMessagesS31(t *testing.T) {
	for name, m := range map[string]Message{
		"request in term 0":       {Type: MsgReadIndex, From: "n2", To: "n1", Term: 0, Context: 1},
		"answer in term 0":        {Type: MsgReadIndexResp, From: "n2", To: "n1", Term: 0, Index: 3, Context: 1},
		"granted read at index 0": {Type: MsgReadIndexResp, From: "n2", To: "n1", Term: 9, Context: 1},
	} {
		t.Run(name, func(t *testing.T) {
			n := newNode(t, "n1", 2, []uint64{1})
			if err := n.r.step(m); !errors.Is(err, errInvalidMessage) {
				t.Fatalf("want errInvalidMessage, got %v", err)
			}
			if n.r.term != 2 || len(n.r.reads.released) != 0 {
				t.Fatalf("term %d, released %v", n.r.term, n.r.reads.released)
			}
		})
	}
}
