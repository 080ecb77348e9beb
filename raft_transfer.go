package kommander

// This file is leadership transfer (thesis §3.10): the leader stops taking proposals,
// brings the target's log up to date, and tells it to time out now (msgTimeoutNow); the
// target campaigns at once, in the next term, with a vote request that voters take even
// though they heard from a leader recently. If no new leader shows up within an election
// timeout, the leader gives up and takes proposals again.
//
// The read lease: the target's vote request overrides the followers' promise not to vote
// while they hear from the leader (inLease), which is what the lease rests on. So the lease
// ends when a transfer starts and is not used again in that term: a msgTimeoutNow may stay
// in flight past the transfer's end and make the target win later.

import (
	"errors"
	"fmt"
)

// errTransferring refuses a proposal or a membership change while the leader transfers its
// leadership. The caller may retry (with the new leader).
var errTransferring = errors.New("kommander: leadership transfer in progress")

// transferVoteContext marks the Context of a MsgVote sent on a leader's request: voters
// take it even while they hear from a live leader (thesis §3.10).
const transferVoteContext = 1

// transferState is the leader's transfer under way, if any.
type transferState struct {
	target  string // "" when none
	elapsed int    // ticks since it started
	// startedIn is the last term in which this node started a transfer as leader: no
	// lease in that term (see above). It outlives the transfer.
	startedIn uint64
}

// transferLeadership starts a transfer of the leadership to voter to. Asking again for
// the same target while it runs is a no-op; for another one, errTransferring.
func (r *raft) transferLeadership(to string) error {
	if r.role != roleLeader {
		return &notLeaderError{Leader: r.lead, Term: r.term}
	}
	switch t := r.transfer.target; {
	case t == to:
		return nil
	case t != "":
		return fmt.Errorf("%w: to %s", errTransferring, t)
	case to == r.id && r.isVoter():
		return nil // it leads already
	}
	pr := r.tracker.progress(to)
	if pr == nil || !pr.voter || pr == r.tracker.self {
		return fmt.Errorf("%w: cannot transfer the leadership to %q: not a voter", errInvalidProposal, to)
	}
	r.transfer = transferState{target: to, startedIn: r.term}
	r.reads.leaseUntil = 0
	r.sendTimeoutNowIfMatched(pr)
	return nil
}

// transferTarget returns the node the leadership is being transferred to, or "".
func (r *raft) transferTarget() string { return r.transfer.target }

// sendTimeoutNowIfMatched tells the transfer's target to campaign once it holds the whole
// log; until then it is sent appends. Called when the transfer starts and whenever the
// target answers; a duplicate is harmless (it carries a term the target has left by then).
func (r *raft) sendTimeoutNowIfMatched(pr *progress) {
	if pr.id != r.transfer.target {
		return
	}
	if pr.match < r.log.lastIndex() {
		r.sendAppends(pr)
		return
	}
	r.send(Message{Type: msgTimeoutNow, To: pr.id, Term: r.term})
}

// tickTransfer gives up a transfer that has not produced a new leader within an election
// timeout.
func (r *raft) tickTransfer() {
	r.transfer.elapsed++
	if r.transfer.elapsed >= r.electionTicks {
		r.abortTransfer()
	}
}

// abortTransfer ends the transfer under way, if any.
func (r *raft) abortTransfer() {
	r.transfer.target, r.transfer.elapsed = "", 0
}

// handleTimeoutNow is the target's side: step has checked that the message carries our
// term; only the leader we follow in it may make us campaign, and only if we vote (S31).
func (r *raft) handleTimeoutNow(m Message) {
	if r.role != roleFollower || r.lead != m.From || !r.promotable() || r.term >= maxCampaignTerm {
		return
	}
	// No pre-vote: the leader asked, and the voters would refuse it while they hear from it.
	r.becomeCandidate(transferVoteContext)
}

// transferVote reports whether m is a vote request of a transfer's target.
func transferVote(m Message) bool { return m.Type == MsgVote && m.Context == transferVoteContext }
