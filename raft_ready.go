package kommander

// This file is the hand-off between the group and its node: raftReady (what to persist,
// send and apply), and advance, which acknowledges it and counts what became durable.

// raftReady is what one group hands to the node to do, in this order: send Messages (they may
// go out before persistence), save HardState (if SaveHardState) and Entries in one durable
// write, then send MessagesAfterPersist, apply CommittedEntries in order, and call advance.
//
// Ownership: the Entries slices (in Entries, CommittedEntries and in messages) are
// read-only and may be kept. The backing arrays of Messages and MessagesAfterPersist are
// reused by the group after advance: copy out the Message values (not the slices) you keep.
type raftReady struct {
	// HardState is the term, vote and commit index to persist when SaveHardState is set.
	HardState     HardState
	SaveHardState bool
	// Entries are to be appended to storage; an entry at or below the stored last index
	// replaces the stored suffix from there on.
	Entries []Entry
	// Messages may be sent at once, before the raftReady is persisted: a leader's appends and
	// heartbeats and a pre-candidate's pre-vote requests.
	Messages []Message
	// MessagesAfterPersist may be sent only once HardState and Entries are durable: a
	// candidate's vote requests, vote grants, append responses and every other response.
	MessagesAfterPersist []Message
	// CommittedEntries are to be applied in order. All of them are durable on this node.
	CommittedEntries []Entry
	// SendSnapshots are followers to send the newest snapshot to; the node reports how
	// each transfer ended with reportSnapshot.
	SendSnapshots []string
	// InstallSnapshot, when set, is a received snapshot to install before anything else of
	// this raftReady: restore the state machine from it and compact the stored log up to it
	// (its entries, if any, follow the snapshot).
	InstallSnapshot *snapshotMeta
	// ReadStates are the reads released since the last raftReady (raft_read.go): each may be
	// served once the entries up to its index are applied, or failed. The slice is reused
	// after advance.
	ReadStates []readState
}

// flush sends what proposals and commits left pending since the last raftReady: one pass over
// the followers per raftReady, however many proposals came in.
func (r *raft) flush() {
	if r.role == roleLeader {
		r.flushReads()
	}
	if r.role == roleLeader && (r.appendPending || r.commitPending) {
		for _, pr := range r.tracker.prs {
			if pr != r.tracker.self {
				r.sendAppends(pr)
			}
		}
	}
	r.appendPending, r.commitPending = false, false
	// After the commit went out: a removed leader steps down once its removal commits.
	r.stepDownIfRemoved()
}

func (r *raft) hardState() HardState {
	return HardState{Term: r.term, Vote: r.vote, Commit: r.log.committed}
}

// hasReady reports whether ready would hand out anything. It is false while a raftReady is
// outstanding (handed out and not yet advanced).
func (r *raft) hasReady() bool {
	if r.readyOut {
		return false
	}
	return r.appendPending || r.commitPending || r.readsReady() ||
		len(r.msgs) > 0 || len(r.msgsAfterPersist) > 0 ||
		len(r.snapshotSends) > 0 || r.pendingInstall != nil ||
		r.hardState() != r.prevHardState ||
		r.log.handedOut < r.log.lastIndex() ||
		(!r.applyPaused && r.log.applying < min(r.log.committed, r.log.stable))
}

// limitApply bounds the committed entries the next raftReady hands out to room entries;
// with room 0 or less it hands out none until a later call gives room.
func (r *raft) limitApply(room int) {
	r.applyPaused, r.applyRoom = room <= 0, max(room, 0)
}

// ready hands out what the node must do (see raftReady). At most one raftReady is outstanding:
// call advance before the next ready. step, tick and propose may be called in between.
func (r *raft) ready() raftReady {
	if r.readyOut {
		panic("raft: ready called before advance of the previous raftReady")
	}
	r.flush()
	var rd raftReady
	if hs := r.hardState(); hs != r.prevHardState {
		rd.HardState, rd.SaveHardState = hs, true
		r.prevHardState = hs
	}
	rd.Entries = r.log.pendingEntries()
	rd.SendSnapshots, rd.InstallSnapshot = r.snapshotSends, r.pendingInstall
	r.snapshotSends, r.pendingInstall = nil, nil
	rd.ReadStates = r.takeReleased()
	rd.Messages, rd.MessagesAfterPersist = r.msgs, r.msgsAfterPersist
	r.msgs, r.msgsAfterPersist = r.spareMsgs[:0], r.spareAfter[:0]
	r.spareMsgs, r.spareAfter = nil, nil
	if !r.applyPaused {
		rd.CommittedEntries = r.log.nextCommitted(r.maxApplyBytes, r.applyRoom)
	}
	r.readyOut = true
	return rd
}

// takeEarly appends to out, while a raftReady is outstanding, the messages produced since
// that may go out before persistence (the kind raftReady.Messages holds): a leader's
// answers to acknowledgements, heartbeats, and appends of entries proposed meanwhile to
// each follower that has acknowledged everything sent to it. Thesis §10.2.1 lets a leader
// send entries it has not persisted yet; sending them at once, rather than after its own
// Save, lets an idle follower's write of them start while the leader still saves the
// previous batch. With many partitions a node leads some and follows others, so that
// follower is often saving too when the append finally arrives, and a write waited for
// one more fsync. A follower with appends in flight gets the new entries with the next
// raftReady instead, in one message rather than one per pass. The next raftReady hands out
// whatever was not taken.
func (r *raft) takeEarly(out []Message) []Message {
	if !r.readyOut {
		return out
	}
	if r.role == roleLeader && r.appendPending {
		for _, pr := range r.tracker.prs {
			if pr != r.tracker.self && pr.state == progressReplicate && pr.inflight.count == 0 {
				r.sendAppends(pr)
			}
		}
	}
	if len(r.msgs) == 0 {
		return out
	}
	out = append(out, r.msgs...)
	clear(r.msgs)
	r.msgs = r.msgs[:0]
	return out
}

// takeCommitted hands out, while a raftReady is outstanding, the committed entries that
// are durable on this node and were not handed out yet; the node applies them as if they
// were that raftReady's CommittedEntries, already advanced. Without it, a follower's
// acknowledgement that arrives while the leader saves its next batch would wait for that
// Save before its entries were applied: up to one more fsync on a write's latency.
func (r *raft) takeCommitted() []Entry {
	if !r.readyOut || r.applyPaused || r.pendingInstall != nil {
		return nil
	}
	ents := r.log.nextCommitted(r.maxApplyBytes, r.applyRoom)
	if n := len(ents); n > 0 {
		r.log.applied = ents[n-1].Index
	}
	return ents
}

// advance acknowledges rd: its hard state and entries are durable, its messages sent and
// its committed entries applied.
func (r *raft) advance(rd raftReady) {
	if !r.readyOut {
		panic("raft: advance without an outstanding raftReady")
	}
	r.readyOut = false
	if n := len(rd.Entries); n > 0 {
		r.log.stableTo(rd.Entries[n-1].Index, rd.Entries[n-1].Term)
	}
	if n := len(rd.CommittedEntries); n > 0 {
		r.log.applied = max(r.log.applied, rd.CommittedEntries[n-1].Index) // see takeCommitted
	}
	r.advanceReads(rd.ReadStates)
	clear(rd.Messages)
	clear(rd.MessagesAfterPersist)
	r.spareMsgs, r.spareAfter = rd.Messages[:0], rd.MessagesAfterPersist[:0]
	switch r.role {
	case roleCandidate:
		durable := rd.SaveHardState && rd.HardState.Term == r.term && rd.HardState.Vote == r.id
		if durable && r.rules.selfVoteCounts(true) {
			r.recordVote(r.id, true) // the self-vote is durable now
		}
	case roleLeader:
		// The leader's own copy counts toward commit only once it is durable.
		if self := r.tracker.self; r.log.stable > self.match {
			self.match = r.log.stable
			r.maybeCommit()
		}
	}
	// Entries applied here and, on a leader, acknowledged by every follower are no longer
	// needed in memory.
	upTo := min(r.log.stable, r.log.applied)
	if r.role == roleLeader {
		for _, pr := range r.tracker.prs {
			upTo = min(upTo, pr.match)
		}
	}
	r.log.trim(upTo, r.maxMemLogBytes)
}
