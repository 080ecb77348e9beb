package kommander

// This file is leader election: the election timer, pre-vote (thesis §9.6), candidacy and
// the vote count, becoming leader, the RequestVote receiver, and the lease that ignores vote
// requests while a live leader is heard from.

import "math"

func (r *raft) resetElectionTimer() {
	r.electionElapsed = 0
	r.randomizedElectionTimeout = r.electionTicks + r.rand.IntN(r.electionTicks)
}

func (r *raft) becomeFollower(term uint64, lead string) {
	r.resetReads()
	r.abortTransfer()
	if term != r.term {
		r.term = term
		r.vote = ""
	}
	r.role = roleFollower
	r.lead, r.leaderMatch = lead, 0
	r.heartbeatElapsed = 0
	r.appendPending, r.commitPending = false, false
	r.resetElectionTimer()
}

// maxCampaignTerm is the term from which no node campaigns (see campaign).
const maxCampaignTerm = math.MaxUint64 - 1

func (r *raft) campaign() {
	if r.term >= maxCampaignTerm || !r.promotable() {
		// No election at or past the top of the term range: peers refuse its term, and the
		// one after would overflow to 0 (S31). Only forged or corrupt state gets here. Nor
		// by a learner, a removed node or a replica waiting to be added (S27): it waits
		// for a leader.
		r.resetElectionTimer()
		return
	}
	if r.preVote {
		r.becomePreCandidate()
	} else {
		r.becomeCandidate(0)
	}
}

// becomePreCandidate asks whether an election at term+1 could be won, without changing the
// term (thesis §9.6): a node that cannot win, or that is cut off, never raises the term of
// a healthy group.
func (r *raft) becomePreCandidate() {
	r.role = rolePreCandidate
	r.lead = ""
	r.resetElectionTimer()
	r.tracker.resetVotes()
	if r.rules.voteCounts(r, r.id) {
		r.tracker.recordVote(r.id, true) // a pre-vote changes nothing, so no persistence is needed
	}
	if r.tracker.voteResult() == voteGranted {
		r.becomeCandidate(0)
		return
	}
	// Pre-votes change nothing, so they need not wait for persistence.
	r.requestVotes(MsgPreVote, r.term+1, 0, (*raft).send)
}

// becomeCandidate starts an election (Figure 2, Candidates). The self-vote is counted only
// in advance, once the new term and vote are persisted: counting it before would allow this
// node to win, crash, forget, and vote for a second leader of the same term.
//
// The vote requests, too, leave only after the raftReady that holds the new term, the vote
// and every entry they claim (lastIndex, lastTerm) is durable (S37). Sent before, a crash
// could lose that raftReady: the node restarts in the old term with a shorter log,
// campaigns again in the same term, and the grants its first requests earned, delayed in
// the network, count for the second campaign, whose log the voters never judged; it could
// win without an entry they hold committed. Once the requests leave after persistence, a
// restarted node already holds the term with its own vote and campaigns only in a later
// term, where those grants do not count. The cost is one disk write before the requests
// leave, as for the self-vote.
//
// ctx is the vote requests' Context: transferVoteContext when a leader asked this node to
// campaign (raft_transfer.go), else 0.
func (r *raft) becomeCandidate(ctx uint64) {
	r.term++
	r.vote = r.id
	r.role = roleCandidate
	r.lead = ""
	r.resetElectionTimer()
	r.tracker.resetVotes()
	if r.rules.selfVoteCounts(false) {
		r.recordVote(r.id, true)
	}
	r.requestVotes(MsgVote, r.term, ctx, r.rules.releaseVoteRequest)
}

// requestVotes asks every other voter for its (pre-)vote in term, handing each request to
// release to be queued.
func (r *raft) requestVotes(t MessageType, term, ctx uint64, release func(*raft, Message)) {
	lastIndex := r.log.lastIndex()
	lastTerm := r.log.lastTerm()
	for _, pr := range r.tracker.voterPrs() {
		if pr == r.tracker.self {
			continue
		}
		release(r, Message{Type: t, To: pr.id, Term: term, LogTerm: lastTerm, Index: lastIndex, Context: ctx})
	}
}

func (r *raft) recordVote(from string, granted bool) {
	if !r.rules.voteCounts(r, from) || !r.tracker.recordVote(from, granted) {
		return // a duplicate response counts once
	}
	switch r.tracker.voteResult() {
	case voteGranted:
		if r.role == rolePreCandidate {
			r.becomeCandidate(0)
		} else {
			r.becomeLeader()
		}
	case voteRejected:
		r.becomeFollower(r.term, "")
	}
}

// becomeLeader takes over the group and appends a no-op entry of the new term (Raft §5.4.2,
// thesis §6.4): entries of older terms commit only through an entry of the leader's own
// term, and the no-op lets that happen without waiting for a proposal.
func (r *raft) becomeLeader() {
	r.abortTransfer()
	r.role = roleLeader
	r.lead = r.id
	r.heartbeatElapsed = 0
	r.electionElapsed = 0
	last := r.log.lastIndex()
	for _, pr := range r.tracker.prs {
		in := pr.inflight
		if in.maxCount == 0 {
			in = newInflights(r.maxInflightMsgs, r.maxInflightBytes)
		}
		in.reset()
		// seq goes on across leaderships, so that an answer to a message of an earlier one
		// is never taken for an answer to this one's.
		*pr = progress{id: pr.id, voter: pr.voter, next: last + 1, recentActive: true, inflight: in, seq: pr.seq, matchSeq: pr.seq}
	}
	r.tracker.self.match = r.log.stable
	r.tracker.self.state = progressReplicate
	r.resetReads()
	r.appendLocal([]Entry{{Kind: EntryNoop}})
}

// inLease reports whether this node heard from a live leader within the minimum election
// timeout. Vote requests are then ignored: the leader is alive, so an election would only
// disrupt it (thesis §4.2.3 and §9.6).
func (r *raft) inLease() bool {
	return (r.checkQuorum || r.preVote) && r.lead != "" && r.electionElapsed < r.electionTicks
}

// handleVoteRequest is the RequestVote receiver (Figure 2): grant if we have not voted for
// another candidate in this term and the candidate's log is at least as up to date as ours
// (Raft §5.4.1: compare last terms, then last indexes).
func (r *raft) handleVoteRequest(m Message) {
	respType := MsgVoteResp
	if m.Type == MsgPreVote {
		respType = MsgPreVoteResp
	}
	canVote := r.vote == m.From ||
		(r.vote == "" && r.lead == "") ||
		(m.Type == MsgPreVote && m.Term > r.term)
	if !canVote || !r.upToDate(m) {
		r.sendAfterPersist(Message{Type: respType, To: m.From, Term: r.term, Reject: true})
		return
	}
	grant := Message{Type: respType, To: m.From, Term: m.Term}
	if m.Type == MsgPreVote {
		r.sendAfterPersist(grant)
		return
	}
	r.vote = m.From
	r.electionElapsed = 0
	// The grant goes out only once the vote is durable (S1): a node that crashes after
	// granting must remember the vote, or it could grant a second one in the same term.
	r.rules.releaseVote(r, grant)
}

// upToDate reports whether the log a (pre-)vote request claims is at least as up to date
// as ours (Raft §5.4.1: compare last terms, then last indexes).
func (r *raft) upToDate(m Message) bool {
	lastIndex, lastTerm := r.log.lastIndex(), r.log.lastTerm()
	return m.LogTerm > lastTerm || (m.LogTerm == lastTerm && m.Index >= lastIndex)
}

func (r *raft) stepCandidate(m Message) error {
	switch m.Type {
	case MsgAppend:
		r.becomeFollower(m.Term, m.From) // Figure 2, Candidates: a leader of our term exists
		return r.handleAppend(m)
	case MsgHeartbeat:
		r.becomeFollower(m.Term, m.From)
		r.handleHeartbeat(m)
	case msgSnapshot:
		r.becomeFollower(m.Term, m.From)
		return r.handleSnapshot(m)
	case MsgVoteResp:
		if r.role == roleCandidate {
			r.recordVote(m.From, !m.Reject)
		}
	case MsgPreVoteResp:
		// Only responses to our own round count: a grant carries term+1, a rejection ours.
		if r.role == rolePreCandidate && (m.Reject || m.Term == r.term+1) {
			r.recordVote(m.From, !m.Reject)
		}
	}
	return nil
}
