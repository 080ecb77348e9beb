package kommander

import "testing"

// S20: a follower whose next entry the leader compacted away gets one snapshot, installs it,
// and is then replicated to from the log: its next index moves past the snapshot and no
// second snapshot is sent.
func TestRaftSendsSnapshotToFollowerBehindCompactionS20(t *testing.T) {
	for _, report := range []bool{true, false} {
		t.Run(map[bool]string{true: "reported", false: "acknowledged"}[report], func(t *testing.T) {
			testSnapshotCatchUp(t, report)
		})
	}
}

func testSnapshotCatchUp(t *testing.T, report bool) {
	c := newTestCluster(t, 3, nil)
	l := c.elect(100)
	l.noSnapshotReport = !report
	var lag string
	for _, id := range c.ids {
		if id != l.id {
			lag = id
			break
		}
	}
	c.down[lag] = true
	for i := range 50 {
		c.propose(l, string(rune('a'+i%26)))
	}
	l.log.compact(40)
	c.down[lag] = false
	for range 5 {
		c.tick()
	}
	f := c.node(lag)
	if f.installs != 1 || l.snapshotsSent != 1 {
		t.Fatalf("installs %d, snapshots sent %d; want 1 and 1", f.installs, l.snapshotsSent)
	}
	if f.r.log.lastIndex() != l.r.log.lastIndex() || f.r.log.committed != l.r.log.committed {
		t.Fatalf("follower last %d commit %d, leader last %d commit %d", f.r.log.lastIndex(), f.r.log.committed, l.r.log.lastIndex(), l.r.log.committed)
	}
	pr := l.r.tracker.progress(lag)
	if pr.state != progressReplicate || pr.next != l.r.log.lastIndex()+1 || pr.match != l.r.log.lastIndex() {
		t.Fatalf("progress %+v, want replicate at last %d", pr, l.r.log.lastIndex())
	}
	// Entries after the snapshot come from the log.
	idx := c.propose(l, "after")
	if f.r.log.committed != idx || f.installs != 1 {
		t.Fatalf("follower commit %d installs %d after a new entry at %d", f.r.log.committed, f.installs, idx)
	}
	if got := f.applied[len(f.applied)-1]; got.Index != idx || string(got.Data) != "after" {
		t.Fatalf("follower applied %+v last", got)
	}
}

// snapshotMsg is a complete snapshot, as the node steps it in once received and checked.
func snapshotMsg(from, to string, term, index, snapTerm uint64) Message {
	return Message{Type: msgSnapshot, From: from, To: to, Term: term,
		snapshot: &snapshotChunk{Index: index, Term: snapTerm, Voters: []string{"n1", "n2", "n3"}, Done: true}}
}

// followerWithLog returns follower n2 of {n1, n2, n3} whose stored log has the given terms
// and whose commit index is commit.
func followerWithLog(t *testing.T, commit uint64, terms ...uint64) *testNode {
	t.Helper()
	log := &memLog{}
	log.setLog(terms...)
	log.hs = HardState{Term: terms[len(terms)-1], Commit: commit}
	return newTestNode(t, testConfig("n2", []string{"n1", "n2", "n3"}), log)
}

// Figure 13, rule 7: a snapshot the follower's log does not match discards the whole log,
// conflicting suffix included.
func TestRaftSnapshotInstallDiscardsConflictingSuffixS20(t *testing.T) {
	f := followerWithLog(t, 2, 1, 1, 2, 2, 2, 2)
	out := f.stepFlush(t, snapshotMsg("n1", "n2", 3, 4, 3))
	if f.installs != 1 || f.r.log.lastIndex() != 4 || f.r.log.committed != 4 {
		t.Fatalf("installs %d last %d commit %d; want 1, 4, 4", f.installs, f.r.log.lastIndex(), f.r.log.committed)
	}
	if tm, err := f.r.log.term(4); err != nil || tm != 3 {
		t.Fatalf("term(4) = %d, %v; want 3", tm, err)
	}
	if _, err := f.r.log.term(3); !compactedErr(err) {
		t.Fatalf("term(3) = %v; want ErrCompacted", err)
	}
	if len(out) != 1 || out[0].Type != MsgAppendResp || out[0].Reject || out[0].Index != 4 {
		t.Fatalf("answer %+v; want an acknowledgement of index 4", out)
	}
	// Appends after the snapshot go on from it.
	f.stepFlush(t, Message{Type: MsgAppend, From: "n1", To: "n2", Term: 3, Index: 4, LogTerm: 3,
		Entries: []Entry{{Index: 5, Term: 3}}, Commit: 5})
	if f.r.log.lastIndex() != 5 || f.r.log.committed != 5 || f.applied[len(f.applied)-1].Index != 5 {
		t.Fatalf("after an append: last %d commit %d", f.r.log.lastIndex(), f.r.log.committed)
	}
}

// S22: a snapshot at or below the follower's commit index is never installed: it would
// take the state back.
func TestRaftSnapshotOlderThanCommitIsIgnoredS22(t *testing.T) {
	f := followerWithLog(t, 5, 1, 1, 1, 1, 1, 1)
	f.flush()
	out := f.stepFlush(t, snapshotMsg("n1", "n2", 2, 4, 1))
	if f.installs != 0 || f.r.log.lastIndex() != 6 || f.r.log.committed != 5 {
		t.Fatalf("installs %d last %d commit %d; want 0, 6, 5", f.installs, f.r.log.lastIndex(), f.r.log.committed)
	}
	if len(out) != 1 || out[0].Type != MsgAppendResp || out[0].Index != 5 {
		t.Fatalf("answer %+v; want an acknowledgement of the commit index 5", out)
	}
}

// A follower that holds the snapshot's last entry keeps its log and commits up to it.
func TestRaftSnapshotMatchingLogIsKept(t *testing.T) {
	f := followerWithLog(t, 1, 1, 1, 1, 1, 1, 1)
	f.stepFlush(t, snapshotMsg("n1", "n2", 2, 4, 1))
	if f.installs != 0 || f.r.log.lastIndex() != 6 || f.r.log.committed != 4 {
		t.Fatalf("installs %d last %d commit %d; want 0, 6, 4", f.installs, f.r.log.lastIndex(), f.r.log.committed)
	}
}

// S21: a snapshot from a deposed leader (an older term) is never installed.
func TestRaftSnapshotFromDeposedLeaderIsIgnoredS21(t *testing.T) {
	f := followerWithLog(t, 1, 1, 1, 3)
	f.stepFlush(t, snapshotMsg("n1", "n2", 2, 10, 2))
	if f.installs != 0 || f.r.log.lastIndex() != 3 {
		t.Fatalf("installs %d last %d; want 0, 3", f.installs, f.r.log.lastIndex())
	}
}

// A transfer the node abandons puts the follower back to probing; the next probe finds the
// entries still compacted and asks for one more transfer, not for appends it cannot send.
func TestRaftAbandonedSnapshotIsAskedForAgain(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	l := c.elect(100)
	lag := c.ids[0]
	if lag == l.id {
		lag = c.ids[1]
	}
	c.down[lag] = true
	for range 20 {
		c.propose(l, "x")
	}
	l.log.compact(15)
	pr := l.r.tracker.progress(lag)
	pr.becomeProbe(pr.match + 1) // as after the next heartbeat response
	l.r.sendAppends(pr)
	rd := l.r.ready()
	if len(rd.SendSnapshots) != 1 || rd.SendSnapshots[0] != lag || pr.state != progressSnapshot {
		t.Fatalf("SendSnapshots %v state %v; want one for %s", rd.SendSnapshots, pr.state, lag)
	}
	l.r.advance(rd)
	l.r.step(Message{Type: MsgHeartbeatResp, From: lag, To: l.id, Term: l.r.term})
	if len(l.r.msgs) > 0 {
		t.Fatalf("sent %v while a snapshot transfer runs", l.r.msgs)
	}
	l.r.reportSnapshot(lag, 15, false)
	if pr.state != progressProbe {
		t.Fatalf("state %v after an abandoned transfer; want probe", pr.state)
	}
	l.r.step(Message{Type: MsgHeartbeatResp, From: lag, To: l.id, Term: l.r.term})
	rd = l.r.ready()
	if len(rd.SendSnapshots) != 1 {
		t.Fatalf("SendSnapshots %v after the probe; want a new transfer", rd.SendSnapshots)
	}
	l.r.advance(rd)
}
