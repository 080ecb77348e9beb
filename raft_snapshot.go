package kommander

// This file is the core's part in snapshots (Raft §7, thesis §5): a leader that finds a
// follower's next entry compacted away asks its node to send that follower a snapshot and
// waits in the snapshot state; a follower asks its node to install a snapshot that is newer
// than what it has committed, discarding its log. The node does the I/O: it writes, sends,
// receives and restores snapshots, and tells the core how a transfer ended.

import (
	"errors"
	"fmt"
)

// requestSnapshot puts pr in the snapshot state and asks the node to send the follower
// the newest snapshot: the entries it needs next are compacted away.
func (r *raft) requestSnapshot(pr *progress) {
	if pr.state == progressSnapshot {
		return
	}
	pr.becomeSnapshot()
	r.snapshotSends = append(r.snapshotSends, pr.id)
}

// compactedErr reports whether err says the log no longer holds an entry.
func compactedErr(err error) bool { return errors.Is(err, ErrCompacted) }

// snapshotAcked takes a follower out of the snapshot state once what it acknowledged lets
// the leader go on from its log: the next entry it needs is still stored.
func (r *raft) snapshotAcked(pr *progress) {
	if pr.state == progressSnapshot && pr.match >= r.log.compactedTo() {
		pr.becomeReplicate()
	}
}

// reportSnapshot is the node telling the leader how the transfer to follower to of the
// snapshot at index ended: installed (ok) or abandoned. Either way the follower leaves the
// snapshot state and is probed; after a failure the probe finds the entries still
// compacted and asks for another transfer, which the node paces.
func (r *raft) reportSnapshot(to string, index uint64, ok bool) {
	pr := r.tracker.progress(to)
	if r.role != roleLeader || pr == nil || pr == r.tracker.self || pr.state != progressSnapshot {
		return
	}
	if ok {
		// The snapshot sent everything up to index: acknowledgements up to it are ours.
		pr.sentIndex = max(pr.sentIndex, min(index, r.log.lastIndex()))
		pr.becomeProbe(min(max(pr.match+1, index+1), r.log.lastIndex()+1))
		r.sendAppends(pr)
		return
	}
	pr.becomeProbe(pr.match + 1)
}

// handleSnapshot is the follower's InstallSnapshot receiver (Raft §7, Figure 13): the node
// has received and checked the whole snapshot that m describes.
func (r *raft) handleSnapshot(m Message) error {
	s := m.snapshot
	if s == nil || !s.Done || s.Index == 0 || s.Term == 0 || s.Term > m.Term {
		return fmt.Errorf("%w: snapshot from %s without a complete description", errInvalidMessage, m.From)
	}
	switch {
	case s.Index <= r.log.committed:
		// Older than what we know is committed: it would take us back (S22).
		r.sendAfterPersist(Message{Type: MsgAppendResp, To: m.From, Term: r.term, Index: r.log.committed})
		return nil
	case r.log.matchTerm(s.Index, s.Term):
		// We hold the entry the snapshot ends with: by Log Matching our log up to it is
		// the leader's, and so committed; keep the log and apply it instead (Figure 13,
		// rule 6).
		r.commitTo(s.Index)
		r.sendAfterPersist(Message{Type: MsgAppendResp, To: m.From, Term: r.term, Index: s.Index})
		return nil
	}
	// Rule 7: discard the whole log, conflicting suffix included, and install.
	r.log.restore(s.Index, s.Term)
	conf := s.membership()
	r.restoreMembership(s.Index, conf)
	r.pendingInstall = &snapshotMeta{partition: r.partition, index: s.Index, term: s.Term, voters: conf.Voters, learners: conf.Learners}
	r.sendAfterPersist(Message{Type: MsgAppendResp, To: m.From, Term: r.term, Index: s.Index})
	return nil
}

// restore empties the log: it now starts after the snapshot at index, whose term is term,
// and everything up to index counts as committed and applied (the node restores the state
// machine before the next raftReady is acknowledged).
func (l *raftLog) restore(index, term uint64) {
	l.ents = nil
	l.first = index + 1
	l.snapIndex, l.snapTerm = index, term
	l.stable, l.handedOut = index, index
	l.committed, l.applying, l.applied = index, index, index
	l.bytes, l.unstableBytes = 0, 0
}

// compactedTo returns the highest index whose entry the log no longer holds: the stored
// log's compaction point, or an installed snapshot's index.
func (l *raftLog) compactedTo() uint64 {
	return max(l.snapIndex, l.storage.firstIndex()-1)
}
