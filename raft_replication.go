package kommander

// This file is log replication (Raft §5.3): the leader's appends and heartbeats and its
// handling of their responses (probe, replicate, rejection hints), the commit rule, and
// the follower's AppendEntries receiver with its rejections.

import "fmt"

// appendLocal appends entries to the leader's log, assigning term and index in place.
func (r *raft) appendLocal(ents []Entry) {
	li := r.log.lastIndex()
	for i := range ents {
		ents[i].Term = r.term
		ents[i].Index = li + 1 + uint64(i)
	}
	r.log.append(ents)
	r.appendPending = true
}

func (r *raft) stepLeader(m Message, pr *progress) error {
	switch m.Type {
	case MsgAppendResp:
		pr.recentActive = true
		if m.Reject {
			r.handleAppendReject(m, pr)
		} else {
			r.handleAppendSuccess(m, pr)
		}
	case MsgHeartbeatResp:
		pr.recentActive = true
		r.readAcked(m.From, m.Context)
		switch {
		case pr.state == progressProbe:
			pr.probeSent = false // the probe or its answer may have been lost: probe again
			r.sendAppends(pr)
		case pr.match+1 < pr.next:
			// Appends are outstanding. Ask whether the follower has the last one: an empty
			// append at next-1. If appends were lost it rejects, with a hint, and we probe
			// from there; otherwise it acknowledges. Without this, a lost append would stall
			// a follower whose window is full until the next proposal.
			r.sendEmptyAppend(pr, pr.next-1)
		default:
			r.sendAppends(pr)
		}
	}
	return nil
}

func (r *raft) handleAppendReject(m Message, pr *progress) {
	// A stale rejection (S13): of an append older than what is acknowledged, or not of the
	// probe we are waiting for.
	if m.Index <= pr.match || (pr.state == progressProbe && m.Index != pr.next-1) {
		return
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

func (r *raft) handleAppendSuccess(m Message, pr *progress) {
	if m.Index > r.log.lastIndex() {
		return // cannot be an answer to us
	}
	advanced := m.Index > pr.match
	probeAnswered := pr.state == progressProbe && (advanced || m.Index+1 >= pr.next)
	if advanced {
		pr.match = m.Index
		pr.next = max(pr.next, m.Index+1)
	}
	pr.inflight.freeLE(m.Index)
	if probeAnswered {
		pr.becomeReplicate()
	}
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
		r.sendEmptyAppend(pr, pr.match)
	}
}

// sendEmptyAppend sends an append without entries at prevIndex, carrying the commit index.
func (r *raft) sendEmptyAppend(pr *progress, prevIndex uint64) {
	prevTerm, err := r.log.term(prevIndex)
	if err != nil {
		return
	}
	r.send(Message{Type: MsgAppend, To: pr.id, Term: r.term, LogTerm: prevTerm,
		Index: prevIndex, Commit: r.log.committed})
	// A follower commits no further than the last index an append vouches for.
	pr.sentCommit = min(r.log.committed, prevIndex)
}

// sendAppend sends one append with entries from pr.next, if the progress state allows.
func (r *raft) sendAppend(pr *progress) bool {
	last := r.log.lastIndex()
	switch {
	case pr.state == progressProbe && pr.probeSent:
		return false
	case pr.state == progressReplicate && (pr.inflight.full() || pr.next > last):
		return false
	}
	prevIndex := pr.next - 1
	prevTerm, err := r.log.term(prevIndex)
	if err != nil {
		return false // compacted: a snapshot will be needed (not yet implemented)
	}
	ents, err := r.log.entries(pr.next, last+1, r.maxMsgBytes)
	if err != nil || (pr.state == progressReplicate && len(ents) == 0) {
		return false
	}
	r.send(Message{Type: MsgAppend, To: pr.id, Term: r.term, LogTerm: prevTerm,
		Index: prevIndex, Entries: ents, Commit: r.log.committed})
	// A follower commits no further than the last index an append vouches for.
	pr.sentCommit = min(r.log.committed, ents[len(ents)-1].Index)
	if pr.state == progressProbe {
		pr.probeSent = true
		return true
	}
	var bytes uint64
	for j := range ents {
		bytes += ents[j].size()
	}
	lastSent := ents[len(ents)-1].Index
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
		r.send(Message{Type: MsgHeartbeat, To: pr.id, Term: r.term, Commit: min(r.log.committed, pr.match), Context: round})
	}
}

func (r *raft) stepFollower(m Message) error {
	switch m.Type {
	case MsgAppend:
		r.electionElapsed = 0
		r.lead = m.From
		return r.handleAppend(m)
	case MsgHeartbeat:
		r.electionElapsed = 0
		r.lead = m.From
		r.handleHeartbeat(m)
	}
	return nil
}

// handleAppend is the AppendEntries receiver (Figure 2).
func (r *raft) handleAppend(m Message) error {
	for i := range m.Entries {
		e := &m.Entries[i]
		prevTerm := m.LogTerm
		if i > 0 {
			prevTerm = m.Entries[i-1].Term
		}
		if e.Index != m.Index+1+uint64(i) || e.Term > m.Term || e.Term < prevTerm {
			return fmt.Errorf("%w: append from %s: entry %d has index %d term %d after prev (%d, %d)",
				errInvalidMessage, m.From, i, e.Index, e.Term, m.Index, m.LogTerm)
		}
	}
	ents := m.Entries
	prevIndex, prevTerm := m.Index, m.LogTerm
	if c := r.log.committed; prevIndex < c {
		// Everything up to our commit index matches every later leader's log: skip it.
		if prevIndex+uint64(len(ents)) <= c {
			r.sendAfterPersist(Message{Type: MsgAppendResp, To: m.From, Term: r.term, Index: c})
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
			Reject: true, RejectHint: last + 1})
		return nil
	}
	if t, err := r.log.term(prevIndex); err != nil || !r.rules.prevTermMatches(t, prevTerm) {
		hint := prevIndex
		for hint-1 > r.log.committed && r.log.matchTerm(hint-1, t) {
			hint--
		}
		r.sendAfterPersist(Message{Type: MsgAppendResp, To: m.From, Term: r.term, Index: m.Index,
			Reject: true, LogTerm: t, RejectHint: hint})
		return nil
	}
	// Receiver rules 3 and 4: delete a conflicting suffix, append what is new. Entries we
	// already have are left alone, so a duplicated or reordered append never truncates.
	for i := range ents {
		e := &ents[i]
		if e.Index > last {
			r.log.append(ents[i:])
			break
		}
		if !r.log.matchTerm(e.Index, e.Term) {
			if e.Index <= r.log.committed {
				return fmt.Errorf("%w: append from %s conflicts with committed entry %d", errInvalidMessage, m.From, e.Index)
			}
			r.log.append(ents[i:])
			break
		}
	}
	// Receiver rule 5: commit up to min(leaderCommit, index of last new entry).
	lastNew := prevIndex + uint64(len(ents))
	r.commitTo(min(m.Commit, lastNew))
	r.sendAfterPersist(Message{Type: MsgAppendResp, To: m.From, Term: r.term, Index: lastNew})
	return nil
}

// handleHeartbeat advances the commit index as far as the leader knows our log matches its
// own (the leader sends min(commit, our match index)).
func (r *raft) handleHeartbeat(m Message) {
	r.commitTo(min(m.Commit, r.log.lastIndex()))
	r.sendAfterPersist(Message{Type: MsgHeartbeatResp, To: m.From, Term: r.term, Context: m.Context})
}

func (r *raft) commitTo(i uint64) {
	if i > r.log.committed {
		r.log.committed = i
	}
}
