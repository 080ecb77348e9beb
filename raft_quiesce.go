package kommander

// This file is quiescence: an idle group stops its timers, so that thousands of idle
// partitions cost neither heartbeats nor ticks. Safety never depends on it: it only stops
// heartbeats and election timers, which Raft needs for liveness alone; every rule of
// election, replication and commit runs unchanged, and any message of the group wakes it.
//
// A leader whose followers hold its whole log (those it hears from, at least a quorum with
// itself), with everything committed and nothing in flight (no proposal, read, snapshot or
// append), counts quiet heartbeat intervals.
// After quiesceBeats of them it sends one last heartbeat marked quiesce and stops its
// heartbeats. A follower that takes such a heartbeat from the leader of its term, with its
// log proved to match the leader's (leaderMatch) up to the heartbeat's commit and nothing
// beyond, stops its election timer. One that cannot (it lost entries, or has not matched an
// append of this leader since it restarted) says so in its answer (Reject), which wakes the
// leader and makes it send the append that proves the match.
//
// What wakes a quiesced group: a proposal, a read, any message of the group except the
// answers to the quiesce heartbeat, and the node. The node watches its peers as a whole
// (node_liveness.go): a follower whose leader's node falls silent for an election timeout
// is woken with its lease over and its timer run out (leaderSuspected), so that it
// campaigns within another election timeout; a leader whose node loses a quorum of its peers is woken, so that
// CheckQuorum (thesis §6.2) deposes it.
//
// A quiesced follower keeps the lease of thesis §4.2.3 (it ignores vote requests while it
// heard from a live leader): while its leader's node is heard from, the leader is alive.
// A quiesced leader keeps no lease for reads (thesis §6.4.1): its ticks stop, so a lease
// counted in them would never run out; waking ends it, and a read waits for a new round.

// quiesceBeats is how many heartbeat intervals a leader's group stays idle, every
// follower answering, before it quiesces: a burst of writes with short pauses keeps its
// timers, and a follower that missed the last append has time to say so.
const quiesceBeats = 3

// quiesceState is a group's quiescence.
type quiesceState struct {
	enabled bool // the node lets the group quiesce
	on      bool // the group is quiesced: tick does nothing
	// quietBeats counts the leader's heartbeat intervals in a row in which it could have
	// quiesced.
	quietBeats int
}

// quiesced reports whether the group is quiesced: ticks do nothing until it wakes.
func (r *raft) quiesced() bool { return r.quiet.on }

// leaderIdle reports whether the leader could quiesce now: it has durably stored its whole
// log, all of it committed in its term, nothing waits to be sent (appends, snapshots,
// reads), and every follower it heard from since the last CheckQuorum round holds the
// whole log, which makes a quorum with itself. A follower it no longer hears from (down,
// or cut off) does not keep the group awake: when it comes back, its campaign or its
// node's suspicion of this leader sends a message that wakes the group.
func (r *raft) leaderIdle() bool {
	last := r.log.lastIndex()
	if r.log.committed != last || r.log.stable != last || !r.noopCommitted() ||
		r.appendPending || r.commitPending || len(r.reads.pending) > 0 ||
		len(r.snapshotSends) > 0 || r.pendingInstall != nil || r.transfer.target != "" {
		return false
	}
	caughtUp := 0 // voters holding the whole log, the leader included if it votes
	for _, pr := range r.tracker.prs {
		switch {
		case pr == r.tracker.self:
		case !pr.recentActive:
			continue
		case pr.state != progressReplicate || pr.match != last || pr.inflight.count > 0:
			return false
		}
		if pr.voter {
			caughtUp++
		}
	}
	return caughtUp >= r.tracker.quorum()
}

// maybeQuiesce is called by the leader at each heartbeat interval, before it heartbeats:
// once the group was idle for quiesceBeats intervals in a row, it quiesces, and this
// heartbeat, the last, carries the mark.
func (r *raft) maybeQuiesce() {
	if !r.quiet.enabled || !r.leaderIdle() {
		r.quiet.quietBeats = 0
		return
	}
	r.quiet.quietBeats++
	if r.quiet.quietBeats < quiesceBeats {
		return
	}
	r.quiet.on, r.quiet.quietBeats = true, 0
	r.reads.leaseUntil = 0
}

// heartbeatTo returns the heartbeat to the follower of pr, numbered seq. The quiesce mark
// goes only to a follower that holds the whole log, with the leader's last index (Index):
// one that lags (it was down, or a snapshot is on its way) keeps its timer, and wakes the
// group when it runs out.
func (r *raft) heartbeatTo(pr *progress, seq uint64) Message {
	m := Message{Type: MsgHeartbeat, To: pr.id, Term: r.term, Commit: min(r.log.committed, pr.match), Context: seq}
	if r.quiet.on && pr.match == r.log.lastIndex() {
		m.quiesce, m.Index = true, pr.match
	}
	return m
}

// followQuiesce takes a heartbeat marked quiesce from the leader of our term, after its
// commit was taken. It reports whether this follower quiesced; when it cannot (its log is
// not known to be the leader's, whole and committed), the answer asks the leader for an
// append instead.
func (r *raft) followQuiesce(m Message) bool {
	last := r.log.lastIndex()
	if !r.quiet.enabled || r.role != roleFollower || m.From != r.lead || m.Index != last ||
		m.Commit != last || r.log.committed != last || r.leaderMatch < last {
		return false
	}
	r.quiet.on = true
	return true
}

// keepsQuiet reports whether m leaves a quiesced group quiesced: only a follower's clean
// answer to the quiesce heartbeat (it holds the leader's whole log and took its commit).
// Everything else wakes the group, from any term and any sender.
func (r *raft) keepsQuiet(m Message) bool {
	return r.role == roleLeader && m.Type == MsgHeartbeatResp && m.Term == r.term &&
		!m.Reject && m.Index == r.log.lastIndex()
}

// wake ends the group's quiescence: the leader heartbeats again, at once, with no lease
// until that round is confirmed and every follower to be heard from anew before the next
// CheckQuorum; a follower restarts its election timer.
func (r *raft) wake() {
	if !r.quiet.on {
		return
	}
	r.quiet.on, r.quiet.quietBeats = false, 0
	if r.role == roleLeader {
		r.electionElapsed, r.heartbeatElapsed = 0, 0
		r.reads.leaseUntil = 0
		for _, pr := range r.tracker.prs {
			pr.recentActive = false
		}
		// A round at once: it wakes the followers, and once a quorum acknowledges it the
		// lease starts again from now.
		r.bcastHeartbeat()
		return
	}
	r.resetElectionTimer()
}

// leaderSuspected tells a follower that the node has not heard from its leader's node
// within an election timeout, so neither from the leader: its lease that refuses votes
// ends (thesis §4.2.3), whatever restarted its timer meanwhile (a vote request that woke
// it), and a quiesced follower wakes, since a quiesced timer tells nothing of the time
// the leader has been silent. The node names one follower per partition to go first
// (first). It campaigns within a quarter of an election timeout, but not before a
// heartbeat interval and two ticks have passed, by which time the other survivors, which
// hear from the leader's node on the same schedule, suspect it too and grant their votes.
// The others campaign one and a half election timeouts after their suspicion at the
// earliest, if the first has not won by then. The gap between the two, about an election
// timeout, leaves the first's election time to complete even when the survivors suspect a
// tick or two apart and each round of it waits for a disk write: otherwise both could
// campaign at once and split the vote, which costs another election timeout (Raft §5.2).
func (r *raft) leaderSuspected(first bool) {
	if r.role != roleFollower {
		return
	}
	r.wake()
	r.electionElapsed = r.electionTicks
	if first {
		r.randomizedElectionTimeout = r.electionTicks + r.heartbeatTicks + 2 + r.rand.IntN(max(r.electionTicks/4, 1))
	} else {
		r.randomizedElectionTimeout = 2*r.electionTicks + r.electionTicks/2 + r.rand.IntN(r.electionTicks)
	}
}

// releaseIdleMemory gives back the buffers a group keeps for its next burst of work: the
// room ahead in its in-memory log (grown 64 entries at a time) and its message and read
// buffers, several kilobytes per group that thousands of quiesced groups would hold for
// nothing. The node calls it on a quiesced group with no raftReady out; the first append
// after it grows the log again.
func (r *raft) releaseIdleMemory() {
	if r.readyOut || len(r.msgs) > 0 || len(r.msgsAfterPersist) > 0 {
		return
	}
	r.msgs, r.msgsAfterPersist, r.spareMsgs, r.spareAfter = nil, nil, nil, nil
	if rs := &r.reads; len(rs.released) == 0 && len(rs.pending) == 0 {
		rs.released, rs.spare, rs.pending = nil, nil, nil
	}
	if l := &r.log; cap(l.ents) > len(l.ents) {
		// A new array: slices handed out earlier keep theirs.
		l.ents = append([]Entry(nil), l.ents...)
	}
}
