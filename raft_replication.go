package kommander

// This file is log replication (Raft §5.3): the leader's appends and heartbeats and its
// handling of their responses (probe, replicate, rejection hints), the commit rule, and
// the follower's AppendEntries receiver with its rejections.
//
// Beyond the paper, three fields carry what the leader needs to tell fresh answers from
// stale ones and a follower that lost its log from a slow one (S13, S36):
//   - Context on MsgAppend and MsgHeartbeat numbers the messages to each follower
//     (progress.seq); the follower echoes it in its MsgAppendResp and MsgHeartbeatResp.
//     The leader also learns from it which read rounds a follower acknowledged
//     (raft_read.go).
//   - Index on MsgHeartbeatResp is the follower's last index.
//   - Reject on MsgHeartbeatResp says that the follower could not take the heartbeat's
//     commit on trust (see handleHeartbeat).
//
// The lost-log rule (S36): within its term, a follower never loses an entry it
// acknowledged, unless its storage lost it (a wiped data directory, a disk that dropped
// writes). So an answer to a message sent after the acknowledgement that established match
// (its Context above progress.matchSeq) which reports a last index below match, or rejects
// a prevIndex at or below match, proves the loss; the leader then forgets match and probes
// the follower from what it has (progress.lostEntries), and takes no acknowledgement of a
// message sent before the proof (progress.lostSeq). Any other answer that looks short
// may be older than that acknowledgement, reordered, delayed or duplicated: it moves
// nothing back. Without the rule the leader takes such a follower's rejection of the
// append at match for a stale one, and the follower stays at commit 0 while writes continue.

import (
	"fmt"
	"math"
)

// appendLocal appends entries to the leader's log, assigning term and index in place.
func (r *raft) appendLocal(ents []Entry) {
	li := r.log.lastIndex()
	for i := range ents {
		ents[i].Term = r.term
		ents[i].Index = li + 1 + uint64(i)
	}
	r.log.append(ents)
	r.logAppended(ents)
	r.appendPending = true
}

func (r *raft) stepLeader(m Message, pr *progress) error {
	switch m.Type {
	case MsgAppendResp:
		pr.recentActive = true
		// An append sent after a round's heartbeat proves that round too (raft_read.go).
		r.readAcked(pr, m.Context)
		if m.Reject {
			r.handleAppendReject(m, pr)
		} else {
			r.handleAppendSuccess(m, pr)
		}
	case MsgHeartbeatResp:
		pr.recentActive = true
		r.readAcked(pr, m.Context)
		if m.Index < pr.match && pr.answersAfterMatch(m.Context) {
			// The follower reports a last index below what it acknowledged, in answer to a
			// heartbeat sent after that acknowledgement: it lost entries (S36). Probe it
			// from what it has.
			pr.lostEntries(m.Index + 1)
		}
		if m.Reject {
			// The follower could not take the heartbeat's commit on trust (it has not
			// matched an append of ours since it last became our follower): forget that it
			// was told, so that an append at its match tells it again.
			pr.sentCommit = 0
		}
		switch {
		case pr.state == progressSnapshot:
			// A transfer is under way: the node reports its end.
		case pr.state == progressProbe:
			pr.probeSent = false // the probe or its answer may have been lost: probe again
			r.sendAppends(pr)
		case pr.match+1 < pr.next:
			// Appends are outstanding. Ask whether the follower has the last one: an empty
			// append at next-1. If appends were lost it rejects, with a hint, and we probe
			// from there; otherwise it acknowledges. Without this, a lost append would stall
			// a follower whose window is full until the next proposal.
			r.sendEmptyAppend(pr, pr.next-1, false)
		default:
			r.sendAppends(pr)
		}
	}
	if r.transfer.target != "" && (m.Type == MsgAppendResp || m.Type == MsgHeartbeatResp) {
		r.sendTimeoutNowIfMatched(pr)
	}
	return nil
}

// handleAppendReject moves next back after a rejection, to no less than match+1 and no more
// than the rejected prevIndex, so that next stays within [match+1, lastIndex+1] whatever the
// rejection claims (S31).
func (r *raft) handleAppendReject(m Message, pr *progress) {
	switch {
	case pr.state == progressSnapshot:
		// A snapshot transfer is under way: the node reports its end.
		return
	case m.Index >= pr.next:
		// No append of ours had its prevIndex at or past next: forged, or of an earlier
		// leadership (S31).
		return
	case m.Index <= pr.match:
		if !pr.answersAfterMatch(m.Context) {
			return // a stale rejection, of an append older than what is acknowledged (S13)
		}
		// The follower no longer has an entry it acknowledged, in answer to an append sent
		// after that acknowledgement: it lost entries (S36). Probe it from this rejection.
		pr.lostEntries(pr.next)
	case pr.state == progressProbe && m.Index != pr.next-1:
		return // not the probe we are waiting for (S13)
	}
	next := m.RejectHint
	if m.LogTerm > 0 {
		// The follower has term LogTerm at m.Index. If we have entries of that term, our
		// logs may agree up to our last one; otherwise skip the follower's whole term.
		i := min(m.Index, r.log.lastIndex())
		for i > pr.match {
			t, err := r.log.term(i)
			if err != nil || t <= m.LogTerm {
				if err == nil && t == m.LogTerm {
					next = i + 1
				}
				break
			}
			i--
		}
	}
	next = max(min(next, m.Index, r.log.lastIndex()+1), pr.match+1)
	pr.becomeProbe(next)
	r.sendAppends(pr)
}

// handleAppendSuccess records an acknowledgement. A follower whose whole append was below
// its commit index answers with that commit index, which may exceed what it was sent (its
// committed entries are in our log, Raft §5.4): so match moves to no more than what was
// sent, never past our last index (S31), and never back (S13).
func (r *raft) handleAppendSuccess(m Message, pr *progress) {
	if m.Index > r.log.lastIndex() {
		return // cannot be an answer to us
	}
	if pr.lostSeq > 0 && m.Context <= pr.lostSeq {
		return // acknowledges what the follower has since lost (S36)
	}
	idx := min(m.Index, pr.sentIndex)
	advanced := idx > pr.match
	probeAnswered := pr.state == progressProbe && (advanced || idx+1 >= pr.next)
	if advanced {
		pr.match, pr.matchSeq = idx, pr.seq
		pr.next = max(pr.next, idx+1)
	}
	pr.inflight.freeLE(idx)
	if probeAnswered {
		pr.becomeReplicate()
	}
	r.snapshotAcked(pr)
	if advanced {
		r.maybeCommit()
	}
	r.sendAppends(pr)
}

// maybeCommit advances the commit index to the highest index a quorum has matched, but
// only if that entry is of the current term (Raft §5.4.2, Figure 8, S11).
func (r *raft) maybeCommit() {
	idx := r.tracker.quorumMatch()
	if idx <= r.log.committed {
		return
	}
	if !r.rules.commitByCounting(r, idx) {
		return
	}
	r.log.committed = idx
	r.commitPending = true
}

// sendAppends sends to the follower of pr what its progress allows: one probe, or appends
// until the in-flight window is full. With nothing to send, it sends the commit index if the
// follower has not been told it.
func (r *raft) sendAppends(pr *progress) {
	sent := false
	for r.sendAppend(pr) {
		sent = true
		if pr.state == progressProbe {
			break
		}
	}
	if !sent && pr.state == progressReplicate && min(pr.match, r.log.committed) > pr.sentCommit {
		// prev = match: the follower has it, so this never causes a spurious rejection, and
		// it lets the follower commit up to min(commit, match), which it has not been told.
		// Its success would tell us nothing: the follower answers only a rejection.
		r.sendEmptyAppend(pr, pr.match, true)
	}
}

// sendEmptyAppend sends an append without entries at prevIndex, carrying the commit index;
// commitOnly marks one that asks for no answer on success (Message.commitOnly).
func (r *raft) sendEmptyAppend(pr *progress, prevIndex uint64, commitOnly bool) {
	prevTerm, err := r.log.term(prevIndex)
	if err != nil {
		if compactedErr(err) {
			r.requestSnapshot(pr) // the appends in flight were lost and compacted meanwhile
		}
		return
	}
	r.send(Message{Type: MsgAppend, To: pr.id, Term: r.term, LogTerm: prevTerm,
		Index: prevIndex, Commit: r.log.committed, Context: pr.stamp(), commitOnly: commitOnly})
	// A follower commits no further than the last index an append vouches for.
	pr.sentCommit = min(r.log.committed, prevIndex)
	pr.sentIndex = max(pr.sentIndex, prevIndex)
}

// sendAppend sends one append with entries from pr.next, if the progress state allows.
func (r *raft) sendAppend(pr *progress) bool {
	last := r.log.lastIndex()
	switch {
	case pr.state == progressSnapshot:
		return false
	case pr.state == progressProbe && pr.probeSent:
		return false
	case pr.state == progressReplicate && (pr.inflight.full() || pr.next > last):
		return false
	}
	prevIndex := pr.next - 1
	prevTerm, err := r.log.term(prevIndex)
	if err != nil {
		if compactedErr(err) {
			r.requestSnapshot(pr)
		}
		return false
	}
	ents, err := r.log.entries(pr.next, last+1, r.maxMsgBytes)
	if err != nil || (pr.state == progressReplicate && len(ents) == 0) {
		if compactedErr(err) {
			r.requestSnapshot(pr)
		}
		return false
	}
	// A probe at next = lastIndex+1 (say, a follower that just installed our snapshot)
	// carries no entries: it asks whether the follower has our last entry.
	lastSent := prevIndex + uint64(len(ents))
	r.send(Message{Type: MsgAppend, To: pr.id, Term: r.term, LogTerm: prevTerm,
		Index: prevIndex, Entries: ents, Commit: r.log.committed, Context: pr.stamp()})
	// A follower commits no further than the last index an append vouches for.
	pr.sentCommit = min(r.log.committed, lastSent)
	pr.sentIndex = max(pr.sentIndex, lastSent)
	if pr.state == progressProbe {
		pr.probeSent = true
		return true
	}
	var bytes uint64
	for j := range ents {
		bytes += ents[j].size()
	}
	pr.inflight.add(lastSent, bytes)
	pr.next = lastSent + 1
	return true
}

// bcastHeartbeat sends a heartbeat to every follower: one read round (raft_read.go).
func (r *raft) bcastHeartbeat() {
	round := r.nextReadRound()
	for _, pr := range r.tracker.prs {
		if pr == r.tracker.self {
			continue
		}
		seq := pr.stamp()
		pr.reads.record(round, seq)
		r.send(r.heartbeatTo(pr, seq))
	}
}

func (r *raft) stepFollower(m Message) error {
	switch m.Type {
	case MsgAppend:
		r.followLeader(m.From)
		return r.handleAppend(m)
	case MsgHeartbeat:
		r.followLeader(m.From)
		r.handleHeartbeat(m)
	case msgSnapshot:
		r.electionElapsed = 0
		r.lead = m.From
		return r.handleSnapshot(m)
	}
	return nil
}

// followLeader records that lead leads our term; what we knew to match another leader's log
// says nothing of its log.
func (r *raft) followLeader(lead string) {
	r.electionElapsed = 0
	if r.lead != lead {
		r.lead, r.leaderMatch = lead, 0
	}
}

// checkAppend refuses an append that no leader could have sent (S31): a leader of term 0,
// a previous entry of a later term than the leader's or at index 0 with a term, entries
// that are not consecutive from prevIndex+1, that would run past the last index, or whose
// terms go backwards, start at 0 or exceed the leader's term, or a configuration entry
// that does not decode.
func checkAppend(m Message) error {
	if m.Term == 0 || m.LogTerm > m.Term || (m.Index == 0 && m.LogTerm != 0) ||
		uint64(len(m.Entries)) > math.MaxUint64-m.Index || (m.commitOnly && len(m.Entries) > 0) {
		return fmt.Errorf("%w: append from %s in term %d after prev (%d, %d) with %d entries",
			errInvalidMessage, m.From, m.Term, m.Index, m.LogTerm, len(m.Entries))
	}
	prevTerm := m.LogTerm
	for i := range m.Entries {
		e := &m.Entries[i]
		if e.Index != m.Index+1+uint64(i) || e.Term == 0 || e.Term > m.Term || e.Term < prevTerm {
			return fmt.Errorf("%w: append from %s: entry %d has index %d term %d after prev (%d, %d)",
				errInvalidMessage, m.From, i, e.Index, e.Term, m.Index, m.LogTerm)
		}
		if e.Kind == entryConfig {
			// It takes effect as soon as it is appended (S27): it must be a configuration.
			if _, err := decodeMembership(e.Data); err != nil {
				return fmt.Errorf("%w: append from %s: entry %d: %w", errInvalidMessage, m.From, e.Index, err)
			}
		}
		prevTerm = e.Term
	}
	return nil
}

// handleAppend is the AppendEntries receiver (Figure 2); checkAppend has vetted m.
func (r *raft) handleAppend(m Message) error {
	ents := m.Entries
	prevIndex, prevTerm := m.Index, m.LogTerm
	if c := r.log.committed; prevIndex < c {
		// Everything up to our commit index matches every later leader's log: skip it.
		if prevIndex+uint64(len(ents)) <= c {
			r.sendAfterPersist(Message{Type: MsgAppendResp, To: m.From, Term: r.term, Index: c, Context: m.Context})
			return nil
		}
		ents = ents[c-prevIndex:]
		prevIndex = c
		prevTerm, _ = r.log.term(c)
	}
	// Receiver rule 2: reply false if the log has no entry at prevIndex whose term is
	// prevTerm, with a hint so that the leader skips back in one round trip (S13).
	last := r.log.lastIndex()
	if prevIndex > last {
		r.sendAfterPersist(Message{Type: MsgAppendResp, To: m.From, Term: r.term, Index: m.Index,
			Reject: true, RejectHint: last + 1, Context: m.Context})
		return nil
	}
	if t, err := r.log.term(prevIndex); err != nil || !r.rules.prevTermMatches(t, prevTerm) {
		hint := prevIndex
		for hint-1 > r.log.committed && r.log.matchTerm(hint-1, t) {
			hint--
		}
		r.sendAfterPersist(Message{Type: MsgAppendResp, To: m.From, Term: r.term, Index: m.Index,
			Reject: true, LogTerm: t, RejectHint: hint, Context: m.Context})
		return nil
	}
	// Receiver rules 3 and 4: delete a conflicting suffix, append what is new. Entries we
	// already have are left alone, so a duplicated or reordered append never truncates.
	for i := range ents {
		e := &ents[i]
		if e.Index > last {
			r.log.append(ents[i:])
			r.logAppended(ents[i:])
			break
		}
		if !r.log.matchTerm(e.Index, e.Term) {
			if e.Index <= r.log.committed {
				return fmt.Errorf("%w: append from %s conflicts with committed entry %d", errInvalidMessage, m.From, e.Index)
			}
			r.log.append(ents[i:])
			r.logAppended(ents[i:])
			// What followed e matched the leader's log only if the leader's log were not
			// consistent with itself; keep no claim past the truncation.
			r.leaderMatch = min(r.leaderMatch, e.Index-1)
			break
		}
	}
	// Receiver rule 5: commit up to min(leaderCommit, index of last new entry).
	lastNew := prevIndex + uint64(len(ents))
	r.leaderMatch = max(r.leaderMatch, lastNew)
	r.commitTo(min(m.Commit, lastNew))
	if m.commitOnly && lastNew == m.Index {
		// The leader knows we have m.Index: the answer would tell it nothing. A lost
		// commit index comes again with the heartbeats, which carry it too.
		return nil
	}
	r.sendAfterPersist(Message{Type: MsgAppendResp, To: m.From, Term: r.term, Index: lastNew, Context: m.Context})
	return nil
}

// handleHeartbeat advances the commit index, but no further than our log is known to match
// the leader's: the leader sends min(commit, our match index), yet its match index may be
// older than our log (we lost entries, or took an earlier leader's since, S31, S36), so we
// also bound it by what an append of this leader proved in this term (leaderMatch). When
// that leaves us short of the leader's commit, the response says so (Reject), and the
// leader answers with an append that proves the match. The response carries our last index
// (Index), from which the leader learns that we lost entries we had acknowledged (S36).
//
// A heartbeat marked quiesce that this follower cannot follow is answered with Reject too
// (raft_quiesce.go): the append it brings proves the match.
func (r *raft) handleHeartbeat(m Message) {
	r.commitTo(min(m.Commit, r.leaderMatch))
	quiesceRefused := m.quiesce && !r.followQuiesce(m)
	r.sendAfterPersist(Message{Type: MsgHeartbeatResp, To: m.From, Term: r.term, Context: m.Context,
		Index: r.log.lastIndex(), Reject: m.Commit > r.log.committed || quiesceRefused})
}

func (r *raft) commitTo(i uint64) {
	if i > r.log.committed {
		r.log.committed = i
	}
}
