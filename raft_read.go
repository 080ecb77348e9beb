package kommander

// This file is linearizable reads without a log write (thesis §6.4): ReadIndex on the
// leader, its forwarding from followers, and the leader's lease (thesis §6.4.1).
//
// A read request records the leader's commit index and is released once a quorum has
// acknowledged a heartbeat sent after the request arrived: at that moment no other leader
// can have committed anything this leader does not know of, so the recorded index is at
// least every index committed before the request. Every heartbeat broadcast is a numbered
// round. The heartbeats carry in Context not the round but the leader's number of the
// message to each follower (progress.stamp, which the lost-log and stale-answer rules
// need, S13/S36); the leader remembers, per follower, which message carried which round
// (followerReads). An answer echoing message number s, to a heartbeat or an append, proves
// that the follower took, in this term, a message sent no earlier than every heartbeat
// numbered up to s: it acknowledges the rounds those carried, and a follower's
// acknowledgement of round k vouches for every round up to k. Requests share rounds: while
// a round that carries requests is in flight, those that arrive meanwhile wait and then
// share the next one.

// readState is a read released by the group: once the node has applied up to index, a read
// of its state machine is linearizable. failed means the read was not served (this node
// lost leadership, or the leader asked refused it); the caller may retry.
type readState struct {
	id     uint64
	index  uint64
	failed bool
}

// readRequest is a read waiting on the leader: its caller's ID, the follower that asked
// ("" for a local one), the commit index recorded for it and the heartbeat round that
// confirms it (0 while it has none: it waits for the next flush).
type readRequest struct {
	id    uint64
	from  string
	index uint64
	round uint64
}

// leaseDriftPercent is the clock-drift bound the lease allows for: the leader's ticks may run
// this much slower than a follower's before the lease could outlive its followers'
// promise not to vote (thesis §6.4.1).
const leaseDriftPercent = 10

// readIndexState is the leader's bookkeeping of reads, and the released reads of any role
// waiting to be handed out.
type readIndexState struct {
	pending  []readRequest
	released []readState
	spare    []readState // the released slice of the last advanced raftReady, reused

	// round is the last heartbeat round sent; rounds only grow. What each follower
	// acknowledged is on its progress (followerReads).
	round uint64
	// carried is the last round that carried requests.
	carried uint64
	// roundTicks remembers when recent rounds were sent, by round modulo its size, so that a
	// confirmed round starts the lease from its send time.
	roundTicks [16]struct{ round, tick uint64 }
	ticks      uint64 // ticks while leader, counted for the lease
	leaseUntil uint64 // the lease holds while ticks < leaseUntil
}

// leaseTicks is how long a confirmed round lets the leader serve reads without a new one:
// strictly shorter than the election timeout, by the drift bound and three ticks: one of
// granularity (a follower's timer restarts within a tick) and two for the node's ticks
// lagging its clock by as much as leaseUsable lets pass.
func (r *raft) leaseTicks() uint64 {
	l := r.electionTicks - r.electionTicks*leaseDriftPercent/100 - 3
	return uint64(max(l, 0))
}

// readIndex asks for a linearizable read with the caller's id; the answer comes out as a
// readState in a later raftReady. On the leader it joins the next heartbeat round (or, with
// lease set and the lease holding, is released at the next flush without one). On a
// follower that knows a leader it asks the leader (MsgReadIndex); the leader's answer, or
// its loss, is the caller's to wait for. Without a known leader it returns a
// *notLeaderError.
func (r *raft) readIndex(id uint64, lease bool) error {
	switch {
	case r.role == roleLeader:
		if lease && r.leaseHolds() {
			r.reads.released = append(r.reads.released, readState{id: id, index: r.log.committed})
			return nil
		}
		r.reads.pending = append(r.reads.pending, readRequest{id: id})
		return nil
	case r.lead != "" && r.role == roleFollower:
		r.send(Message{Type: MsgReadIndex, To: r.lead, Term: r.term, Context: id})
		return nil
	}
	return &notLeaderError{Leader: r.lead, Term: r.term}
}

// leaseHolds reports whether the leader may serve a read without a round: its no-op is
// committed, CheckQuorum is on (it is what makes followers refuse votes while they hear
// from us), a quorum acknowledged a round sent less than leaseTicks ago, and it started no
// leadership transfer in this term (whose target's votes override that promise).
func (r *raft) leaseHolds() bool {
	return r.checkQuorum && r.noopCommitted() && r.reads.ticks < r.reads.leaseUntil &&
		r.transfer.startedIn != r.term // raft_transfer.go
}

// noopCommitted reports whether the leader committed an entry of its term: until it has,
// its commit index may lag what its predecessors committed (thesis §6.4, step 1).
func (r *raft) noopCommitted() bool { return r.log.matchTerm(r.log.committed, r.term) }

// stepRead takes a read request from a follower or the answer to ours.
func (r *raft) stepRead(m Message) {
	switch {
	case m.Type == MsgReadIndexResp:
		r.reads.released = append(r.reads.released, readState{id: m.Context, index: m.Index, failed: m.Reject})
	case r.role == roleLeader:
		r.reads.pending = append(r.reads.pending, readRequest{id: m.Context, from: m.From})
	default:
		// Not the leader (any more): say so at once, so that the follower asks again
		// rather than wait for a timeout.
		r.send(Message{Type: MsgReadIndexResp, To: m.From, Term: r.term, Context: m.Context, Reject: true})
	}
}

// nextReadRound numbers a heartbeat broadcast: it confirms every request recorded before
// it, and the requests waiting for a round (once the leader's no-op is committed) take it,
// with the commit index as their read index.
func (r *raft) nextReadRound() uint64 {
	rs := &r.reads
	rs.round++
	rs.roundTicks[rs.round%uint64(len(rs.roundTicks))] = struct{ round, tick uint64 }{rs.round, rs.ticks}
	if r.readsWaiting() {
		for i := len(rs.pending) - 1; i >= 0 && rs.pending[i].round == 0; i-- {
			rs.pending[i].index, rs.pending[i].round = r.log.committed, rs.round
		}
		rs.carried = rs.round
	}
	return rs.round
}

// readsWaiting reports whether requests wait for a round the leader can give them: some
// have none, and the leader's no-op is committed.
func (r *raft) readsWaiting() bool {
	rs := &r.reads
	return len(rs.pending) > 0 && rs.pending[len(rs.pending)-1].round == 0 && r.noopCommitted()
}

// readRoundDue reports whether the waiting requests should have a round of their own now:
// they do not wait behind a round that carries requests and is not yet confirmed. One such
// round in flight at a time lets the requests that arrive meanwhile share the next one,
// however many loop passes they span; a periodic heartbeat takes them too.
func (r *raft) readRoundDue() bool {
	c := r.reads.carried
	return r.readsWaiting() && (c == 0 || r.rules.readConfirmed(c, r.confirmedRound()))
}

// flushReads gives the waiting requests one shared round when one is due, and releases
// what a group of one confirms at once. Called by flush, on the leader.
func (r *raft) flushReads() {
	if !r.readRoundDue() {
		return
	}
	r.bcastHeartbeat() // numbers the round, which the waiting requests take
	// A group of one confirms it at once; with planted rules, perhaps without the round.
	r.releaseReads(r.confirmedRound())
}

// readRoundsKept bounds the heartbeats per follower whose rounds the leader remembers:
// when more are unanswered, the oldest is forgotten, which only delays its reads until a
// later round is acknowledged.
const readRoundsKept = 8

// followerReads is the leader's read bookkeeping of one follower in this term: the rounds
// carried by its last unanswered heartbeats with their message numbers, oldest first, and
// the highest round it acknowledged.
type followerReads struct {
	rounds       [readRoundsKept]struct{ round, seq uint64 }
	start, count int
	acked        uint64
}

// record remembers that the heartbeat numbered seq carried round.
func (fr *followerReads) record(round, seq uint64) {
	if fr.count == len(fr.rounds) {
		fr.start = (fr.start + 1) % len(fr.rounds)
		fr.count--
	}
	fr.rounds[(fr.start+fr.count)%len(fr.rounds)] = struct{ round, seq uint64 }{round, seq}
	fr.count++
}

// answered takes an answer to the message numbered seq: every heartbeat numbered up to seq
// was sent no later than that message, so the follower acknowledged their rounds. It
// reports whether the acknowledged round rose.
func (fr *followerReads) answered(seq uint64) bool {
	rose := false
	for fr.count > 0 {
		h := fr.rounds[fr.start]
		if h.seq > seq {
			break
		}
		if h.round > fr.acked {
			fr.acked, rose = h.round, true
		}
		fr.start = (fr.start + 1) % len(fr.rounds)
		fr.count--
	}
	return rose
}

// readAcked takes a follower's answer (in this term) to the message numbered ctx, and
// releases the reads a quorum has now confirmed.
func (r *raft) readAcked(pr *progress, ctx uint64) {
	if ctx > pr.seq {
		return // answers no message of ours (S31)
	}
	if pr.reads.answered(ctx) {
		r.releaseReads(r.confirmedRound())
	}
}

// confirmedRound returns the highest round a quorum of voters (the leader included, if it
// votes) acknowledged in this term.
func (r *raft) confirmedRound() uint64 {
	if r.tracker.voters == 0 {
		return 0
	}
	ms := r.tracker.matchScratch[:0]
	for _, pr := range r.tracker.voterPrs() {
		if pr == r.tracker.self {
			ms = append(ms, r.reads.round)
		} else {
			ms = append(ms, pr.reads.acked)
		}
	}
	return kthHighest(ms, r.tracker.quorum())
}

// releaseReads releases the pending reads of rounds up to confirmed, and extends the lease
// from confirmed's send time. Pending reads are in round order (those without a round
// last), so the released ones are a prefix: an acknowledgement costs what it releases.
func (r *raft) releaseReads(confirmed uint64) {
	rs := &r.reads
	if slot := rs.roundTicks[confirmed%uint64(len(rs.roundTicks))]; slot.round == confirmed && confirmed > 0 {
		rs.leaseUntil = max(rs.leaseUntil, slot.tick+r.leaseTicks())
	}
	k := 0
	for ; k < len(rs.pending); k++ {
		q := &rs.pending[k]
		if q.round == 0 || !r.rules.readConfirmed(q.round, confirmed) {
			break
		}
		if q.from == "" {
			rs.released = append(rs.released, readState{id: q.id, index: q.index})
		} else {
			r.send(Message{Type: MsgReadIndexResp, To: q.from, Term: r.term, Index: q.index, Context: q.id})
		}
	}
	if k > 0 {
		n := copy(rs.pending, rs.pending[k:])
		clear(rs.pending[n:])
		rs.pending = rs.pending[:n]
	}
}

// resetReads starts a new term of leadership (becomeLeader) or ends one (becomeFollower):
// the acknowledgements and the lease belong to a term, and the reads still pending fail,
// never answered with an index this node can no longer vouch for. A follower's request is
// refused so that it asks the new leader.
func (r *raft) resetReads() {
	rs := &r.reads
	for _, pr := range r.tracker.prs {
		pr.reads = followerReads{}
	}
	rs.ticks, rs.leaseUntil, rs.carried = 0, 0, 0
	rs.roundTicks = [len(rs.roundTicks)]struct{ round, tick uint64 }{}
	for _, q := range rs.pending {
		if q.from == "" {
			rs.released = append(rs.released, readState{id: q.id, failed: true})
		} else {
			r.send(Message{Type: MsgReadIndexResp, To: q.from, Term: r.term, Context: q.id, Reject: true})
		}
	}
	clear(rs.pending)
	rs.pending = rs.pending[:0]
}

// readsReady reports whether there are released reads to hand out or requests to flush.
func (r *raft) readsReady() bool {
	rs := &r.reads
	return len(rs.released) > 0 || (r.role == roleLeader && r.readRoundDue())
}

// takeReleased hands out the released reads; their slice is reused after advance.
func (r *raft) takeReleased() []readState {
	rs := &r.reads
	out := rs.released
	rs.released, rs.spare = rs.spare[:0], nil
	return out
}

// advanceReads takes back the slice of an advanced raftReady's reads.
func (r *raft) advanceReads(done []readState) {
	clear(done)
	r.reads.spare = done[:0]
}
