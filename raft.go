package kommander

// This file is one Raft group as a pure, deterministic state machine: no goroutines, no
// clock, no I/O. Time is tick(); input is step(); every effect (entries and hard state to
// persist, messages to send, entries to apply) is handed out as data by ready() and
// acknowledged by advance(). References are to the Raft paper ("Raft §5.3", "Figure 2") and
// to Ongaro's thesis ("thesis §9.6").
//
// This file is the overview: the group's state, its configuration, and the entry points
// (newRaft, tick, step, propose, status). The rules live beside it by concern:
// raft_election.go (timeouts, pre-vote, votes, becoming leader), raft_replication.go
// (appends, their acceptance or rejection, commit), raft_log.go (the log), raft_tracker.go
// and raft_progress.go (the voters, the leader's view of each), raft_ready.go (the hand-off
// to the node).

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
)

// errNotLeader is the sentinel behind every refusal of a proposal on a node that is not the
// leader. Use errors.As with *notLeaderError to read the leader hint.
var errNotLeader = errors.New("kommander: not the leader")

// errProposalDropped refuses a proposal the leader cannot take now: too many of its entries
// are waiting to be persisted. The caller may retry later.
var errProposalDropped = errors.New("kommander: proposal dropped: too many unpersisted entries")

// errInvalidProposal refuses a proposal that is empty or of a kind the core does not take
// from outside.
var errInvalidProposal = errors.New("kommander: invalid proposal")

// errInvalidMessage refuses a message that breaks the protocol (wrong partition, malformed
// entries, a request that would rewrite a committed entry). The message is dropped; the
// group's state is unchanged.
var errInvalidMessage = errors.New("kommander: invalid raft message")

// notLeaderError refuses a proposal on a node that is not the leader, with the leader this
// node knows of (empty when none) so that the node can forward or the caller can retry.
type notLeaderError struct {
	Leader string
	Term   uint64
}

func (e *notLeaderError) Error() string {
	if e.Leader == "" {
		return fmt.Sprintf("kommander: not the leader (term %d, leader unknown)", e.Term)
	}
	return fmt.Sprintf("kommander: not the leader (term %d, leader %s)", e.Term, e.Leader)
}

func (e *notLeaderError) Unwrap() error { return errNotLeader }

// raftRole is the role a node plays in one group.
type raftRole uint8

const (
	roleFollower raftRole = iota
	// rolePreCandidate asks for pre-votes without changing its term (thesis §9.6).
	rolePreCandidate
	roleCandidate
	roleLeader
)

func (r raftRole) String() string {
	switch r {
	case roleFollower:
		return "follower"
	case rolePreCandidate:
		return "pre-candidate"
	case roleCandidate:
		return "candidate"
	case roleLeader:
		return "leader"
	}
	return "unknown"
}

// Defaults for raftConfig fields left zero.
const (
	defaultMaxMsgBytes      = 1 << 20
	defaultMaxInflightMsgs  = 256
	defaultMaxInflightBytes = 32 << 20
	defaultMaxUnstableBytes = 64 << 20
	defaultMaxMemLogBytes   = 4 << 20
	defaultMaxApplyBytes    = 16 << 20
)

// raftConfig is what a group needs to start (or restart from what it persisted).
type raftConfig struct {
	id        string
	partition uint32
	// voters and learners are the configuration as of the start of the stored log: the
	// bootstrap one, or the snapshot's the log goes on from. The configuration entries in
	// the stored log take effect over it (raft_config.go). voters may be empty (a replica
	// created to be added later waits for a leader), and need not contain id.
	voters, learners []string
	// maxLearnerLag is how far behind the leader's last index a learner may be and still be
	// promoted to voter (default defaultMaxLearnerLag).
	maxLearnerLag uint64
	// electionTicks is the minimum election timeout E in ticks; a follower's timeout is
	// drawn from [E, 2E). heartbeatTicks must be smaller.
	electionTicks, heartbeatTicks int
	// storage is the durable log as persisted so far; hardState the persisted hard state.
	storage   logStorage
	hardState HardState
	// applied is the last index the state machine has applied (it survives restarts when
	// the state machine is durable); entries after it are handed out again.
	applied uint64
	// rand draws randomized election timeouts. It must be seeded per node and per group so
	// that groups and nodes do not time out together (S7, S9).
	rand *rand.Rand
	// maxMsgBytes bounds the entries of one append (at least one entry is always sent).
	maxMsgBytes uint64
	// maxInflightMsgs and maxInflightBytes bound the appends in flight to one follower.
	maxInflightMsgs  int
	maxInflightBytes uint64
	// maxUnstableBytes bounds the leader's entries waiting to be persisted; past it,
	// proposals are dropped with errProposalDropped.
	maxUnstableBytes uint64
	// maxMemLogBytes is how many bytes of persisted entries the group keeps in memory for
	// appends and apply before it reads them back from storage.
	maxMemLogBytes uint64
	// maxApplyBytes bounds the committed entries handed out in one raftReady.
	maxApplyBytes uint64
	// checkQuorum makes a leader step down when it has not heard from a quorum within an
	// election timeout, and lets followers ignore vote requests while they hear from a live
	// leader. preVote enables the pre-vote phase (thesis §9.6).
	checkQuorum, preVote bool
}

func (c *raftConfig) validate() error {
	if c.id == "" {
		return errors.New("raft: empty node id")
	}
	if err := (membership{Voters: c.voters, Learners: c.learners}).check(); err != nil {
		return fmt.Errorf("raft: configuration: %w", err)
	}
	if c.heartbeatTicks <= 0 || c.electionTicks <= c.heartbeatTicks {
		return fmt.Errorf("raft: need 0 < heartbeatTicks (%d) < electionTicks (%d)", c.heartbeatTicks, c.electionTicks)
	}
	if c.storage == nil {
		return errors.New("raft: no storage")
	}
	if c.rand == nil {
		return errors.New("raft: no random source (seed one per node and group)")
	}
	if c.maxInflightMsgs < 0 {
		return fmt.Errorf("raft: maxInflightMsgs %d is negative", c.maxInflightMsgs)
	}
	return nil
}

// raftStatus is a snapshot of a group's state for the node and for tests.
type raftStatus struct {
	id        string
	role      raftRole
	term      uint64
	vote      string
	leader    string
	commit    uint64
	applied   uint64
	lastIndex uint64
}

// raft is one Raft group on one node.
type raft struct {
	id        string
	partition uint32
	tracker   tracker // the members, their progress and votes
	// confs are the configurations of the log; the last is in effect (raft_config.go).
	confs         confHistory
	maxLearnerLag uint64
	// transfer is the leadership transfer under way (raft_transfer.go).
	transfer transferState

	term uint64
	vote string
	lead string
	role raftRole
	log  raftLog
	// leaderMatch is, on a follower, the highest index an append of lead proved to match
	// its log in this term; a heartbeat's commit is bounded by it (see handleHeartbeat).
	leaderMatch uint64

	electionTicks, heartbeatTicks int
	randomizedElectionTimeout     int
	electionElapsed               int
	heartbeatElapsed              int
	rand                          *rand.Rand
	checkQuorum, preVote          bool

	maxMsgBytes      uint64
	maxInflightMsgs  int
	maxInflightBytes uint64
	maxUnstableBytes uint64
	maxMemLogBytes   uint64
	maxApplyBytes    uint64
	// applyRoom, when positive, bounds the committed entries the next raftReady hands out;
	// 0 means no bound. applyPaused withholds them altogether. The node sets both from its
	// apply queue (limitApply), so that a slow state machine bounds what waits in memory.
	applyRoom   int
	applyPaused bool

	msgs, msgsAfterPersist []Message
	spareMsgs, spareAfter  []Message // buffers of the last advanced raftReady, reused
	prevHardState          HardState // last hard state handed out
	readyOut               bool      // a raftReady was handed out and not yet advanced
	appendPending          bool      // new entries to broadcast at the next ready
	commitPending          bool      // commit index to broadcast at the next ready
	// snapshotSends are the followers the node is to send a snapshot to; pendingInstall
	// a received snapshot the node is to install (raft_snapshot.go). Both go out with the
	// next raftReady.
	snapshotSends  []string
	pendingInstall *snapshotMeta
	reads          readIndexState
	rules          safetyRules
}

// safetyRules are the decisions on which Raft's safety rests, held as function values so
// that a test can plant a wrong one and prove that the simulation catches it. newRaft sets
// correctRules; nothing outside *_test.go replaces them.
type safetyRules struct {
	// commitByCounting reports whether the leader may commit the entry at idx because a
	// quorum has matched it.
	commitByCounting func(r *raft, idx uint64) bool
	// releaseVote queues a vote grant to be sent.
	releaseVote func(r *raft, grant Message)
	// prevTermMatches reports whether an append fits after the follower's entry at its
	// prevIndex: have is that entry's term, want the append's prevTerm.
	prevTermMatches func(have, want uint64) bool
	// selfVoteCounts reports whether a candidate's vote for itself counts toward its
	// election, durable or not yet.
	selfVoteCounts func(durable bool) bool
	// releaseVoteRequest queues a candidate's vote request to be sent.
	releaseVoteRequest func(r *raft, req Message)
	// readConfirmed reports whether a read waiting on heartbeat round may be released now
	// that a quorum acknowledged rounds up to confirmed.
	readConfirmed func(round, confirmed uint64) bool
	// confChangeAllowed reports whether the leader may propose a membership change now.
	confChangeAllowed func(r *raft) bool
	// voteCounts reports whether a (pre-)vote answer from node id counts toward a
	// candidate's election.
	voteCounts func(r *raft, id string) bool
}

var correctRules = safetyRules{
	// Only an entry of the leader's own term commits by counting (Raft §5.4.2, Figure 8, S11).
	commitByCounting: func(r *raft, idx uint64) bool { return r.log.matchTerm(idx, r.term) },
	// A grant leaves only once the vote is durable (S1; see handleVoteRequest).
	releaseVote: (*raft).sendAfterPersist,
	// Figure 2, AppendEntries receiver rule 2.
	prevTermMatches: func(have, want uint64) bool { return have == want },
	// Only once it is durable (see becomeCandidate).
	selfVoteCounts: func(durable bool) bool { return durable },
	// A request leaves only once the term, vote and log it claims are durable (S37; see
	// becomeCandidate).
	releaseVoteRequest: (*raft).sendAfterPersist,
	// Only once a quorum acknowledged a heartbeat sent after the read arrived (thesis §6.4).
	readConfirmed: func(round, confirmed uint64) bool { return round <= confirmed },
	// One change in flight, and none before the leader committed an entry of its term
	// (thesis §4.1, S27; see raft_config.go).
	confChangeAllowed: func(r *raft) bool { return r.pendingConfIndex() == 0 && r.noopCommitted() },
	// Only a voter's, in the candidate's configuration: learners and nodes outside it have
	// no vote (S5, S27).
	voteCounts: func(r *raft, id string) bool {
		pr := r.tracker.progress(id)
		return pr != nil && pr.voter
	},
}

// newRaft starts a group from its configuration and what it persisted.
func newRaft(c raftConfig) (*raft, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	r := &raft{
		id:               c.id,
		partition:        c.partition,
		maxLearnerLag:    c.maxLearnerLag,
		electionTicks:    c.electionTicks,
		heartbeatTicks:   c.heartbeatTicks,
		rand:             c.rand,
		checkQuorum:      c.checkQuorum,
		preVote:          c.preVote,
		maxMsgBytes:      c.maxMsgBytes,
		maxInflightMsgs:  c.maxInflightMsgs,
		maxInflightBytes: c.maxInflightBytes,
		maxUnstableBytes: c.maxUnstableBytes,
		maxMemLogBytes:   c.maxMemLogBytes,
		maxApplyBytes:    c.maxApplyBytes,
		rules:            correctRules,
	}
	setDefault(&r.maxMsgBytes, defaultMaxMsgBytes)
	setDefault(&r.maxInflightMsgs, defaultMaxInflightMsgs)
	setDefault(&r.maxInflightBytes, defaultMaxInflightBytes)
	setDefault(&r.maxUnstableBytes, defaultMaxUnstableBytes)
	setDefault(&r.maxMemLogBytes, defaultMaxMemLogBytes)
	setDefault(&r.maxApplyBytes, defaultMaxApplyBytes)
	setDefault(&r.maxLearnerLag, defaultMaxLearnerLag)

	last := c.storage.lastIndex()
	if first := c.storage.firstIndex(); first > last+1 {
		return nil, fmt.Errorf("raft: partition %d: storage first index %d beyond last %d + 1", c.partition, first, last)
	}
	if _, err := c.storage.term(last); err != nil {
		return nil, fmt.Errorf("raft: partition %d: term of last index %d: %w", c.partition, last, err)
	}
	hs := c.hardState
	if hs.Commit > last {
		return nil, fmt.Errorf("raft: partition %d: persisted commit %d beyond last index %d", c.partition, hs.Commit, last)
	}
	if c.applied > last {
		return nil, fmt.Errorf("raft: partition %d: applied %d beyond last index %d", c.partition, c.applied, last)
	}
	r.log = raftLog{
		storage:   c.storage,
		first:     last + 1,
		stable:    last,
		handedOut: last,
		committed: max(hs.Commit, c.applied), // applied entries are committed
		applying:  c.applied,
		applied:   c.applied,
	}
	r.term, r.vote = hs.Term, hs.Vote
	r.prevHardState = hs
	base := membership{Voters: c.voters, Learners: c.learners}.clone()
	confs, err := loadMembership(c.storage, base)
	if err != nil {
		// Like any read the group cannot do without: the node fails on it (S26).
		r.log.readFailed(fmt.Errorf("raft: partition %d: %w", c.partition, err))
		confs = confHistory{{index: c.storage.firstIndex() - 1, m: base}}
	}
	r.confs = confs
	r.pruneConfs(c.applied) // the node asks for the configuration as of applied (membershipAt)
	r.tracker = newTracker(r.membership(), r.id)
	r.applyMembership()
	r.becomeFollower(r.term, "")
	return r, nil
}

// tick advances the group's clock by one tick.
func (r *raft) tick() {
	if r.role == roleLeader {
		r.tickLeader()
		return
	}
	r.electionElapsed++
	if r.electionElapsed >= r.randomizedElectionTimeout {
		r.campaign()
	}
}

func (r *raft) tickLeader() {
	r.reads.ticks++
	r.heartbeatElapsed++
	r.electionElapsed++
	if r.transfer.target != "" {
		r.tickTransfer()
	}
	if r.electionElapsed >= r.electionTicks {
		r.electionElapsed = 0
		// CheckQuorum (thesis §6.2): a leader cut off from a quorum steps down, so that its
		// callers learn of it and a lease on followers cannot outlive it.
		if r.checkQuorum && !r.tracker.quorumActive() {
			r.becomeFollower(r.term, "")
			return
		}
	}
	if r.heartbeatElapsed >= r.heartbeatTicks {
		r.heartbeatElapsed = 0
		r.bcastHeartbeat()
	}
}

// propose appends entries on the leader; it assigns their Term and Index in place and
// returns the first index and the term. Entries keep their ID. On a node that is not the
// leader it returns a *notLeaderError (errors.Is(err, errNotLeader)) with the leader hint.
func (r *raft) propose(ents []Entry) (firstIndex, term uint64, err error) {
	if r.role != roleLeader {
		return 0, 0, &notLeaderError{Leader: r.lead, Term: r.term}
	}
	if len(ents) == 0 {
		return 0, 0, fmt.Errorf("%w: no entries", errInvalidProposal)
	}
	if r.transfer.target != "" {
		return 0, 0, fmt.Errorf("%w: to %s", errTransferring, r.transfer.target)
	}
	var size uint64
	for i := range ents {
		if ents[i].Kind != EntryNormal {
			return 0, 0, fmt.Errorf("%w: entry kind %d", errInvalidProposal, ents[i].Kind)
		}
		size += ents[i].size()
	}
	if r.log.unstableBytes > 0 && r.log.unstableBytes+size > r.maxUnstableBytes {
		return 0, 0, errProposalDropped
	}
	r.appendLocal(ents)
	return ents[0].Index, r.term, nil
}

// send queues a message that may go out before this raftReady is persisted.
func (r *raft) send(m Message) {
	m.From = r.id
	m.Partition = r.partition
	r.msgs = append(r.msgs, m)
}

// sendAfterPersist queues a message that may go out only after this raftReady is persisted.
func (r *raft) sendAfterPersist(m Message) {
	m.From = r.id
	m.Partition = r.partition
	r.msgsAfterPersist = append(r.msgsAfterPersist, m)
}

// step takes one message received from a peer, or a MsgForward forwarded by a follower's
// node. It returns an error for a message it refuses (a proposal on a non-leader, a
// malformed message); the group's state is then unchanged.
func (r *raft) step(m Message) error {
	if m.Partition != r.partition {
		return fmt.Errorf("%w: message for partition %d stepped into partition %d", errInvalidMessage, m.Partition, r.partition)
	}
	if m.Type == MsgForward {
		_, _, err := r.propose(m.Entries)
		return err
	}
	if err := checkMessage(m); err != nil {
		return err
	}
	pr := r.tracker.progress(m.From)
	if !r.admits(m, pr) {
		return nil
	}

	if m.Type == msgTimeoutNow && m.Term != r.term {
		// Only the leader of our term sends it, once we matched its log: a higher term
		// cannot be a leader's we follow, and must not move ours (S31).
		return nil
	}
	// Rules for all servers (Figure 2): a higher term makes us a follower of that term.
	switch {
	case m.Term > r.term:
		if (m.Type == MsgVote || m.Type == MsgPreVote) && r.inLease() && !transferVote(m) {
			if m.Type == MsgPreVote {
				r.sendAfterPersist(Message{Type: MsgPreVoteResp, To: m.From, Term: r.term, Reject: true})
			}
			return nil
		}
		switch {
		case m.Type == MsgPreVote:
			// A pre-vote carries the term the sender would campaign in; it changes nothing.
		case m.Type == MsgPreVoteResp && !m.Reject:
			// A pre-vote grant carries the term we asked about.
		case m.Type == MsgAppend || m.Type == MsgHeartbeat || m.Type == msgSnapshot:
			r.becomeFollower(m.Term, m.From)
		default:
			r.becomeFollower(m.Term, "")
		}
	case m.Term < r.term:
		switch m.Type {
		case MsgAppend, MsgHeartbeat:
			// A deposed leader: tell it our term so that it steps down at once (S4).
			r.sendAfterPersist(Message{Type: MsgAppendResp, To: m.From, Term: r.term, Index: m.Index, Reject: true})
		case MsgVote:
			// RequestVote rule 1: reply false, with our term so the candidate catches up.
			r.sendAfterPersist(Message{Type: MsgVoteResp, To: m.From, Term: r.term, Reject: true})
		case MsgPreVote:
			r.sendAfterPersist(Message{Type: MsgPreVoteResp, To: m.From, Term: r.term, Reject: true})
		}
		return nil // stale: ignore
	}

	switch m.Type {
	case MsgVote, MsgPreVote:
		r.handleVoteRequest(m)
		return nil
	case MsgReadIndex, MsgReadIndexResp:
		r.stepRead(m)
		return nil
	case msgTimeoutNow:
		r.handleTimeoutNow(m)
		return nil
	}
	switch r.role {
	case roleLeader:
		return r.stepLeader(m, pr)
	case roleCandidate, rolePreCandidate:
		return r.stepCandidate(m)
	}
	return r.stepFollower(m)
}

// checkMessage refuses a message whose fields contradict each other or the protocol, before
// any of it changes the group's state: whatever arrives from the network, a peer's bug or a
// forged packet, must never panic the core nor move its term, log or commit where no correct
// peer could have sent it (S31). What a field may only claim relative to this group's own
// state (indexes against the log, acknowledgements against what was sent) is bounded by the
// handler that reads it.
func checkMessage(m Message) error {
	switch m.Type {
	case MsgNone:
		// Not handled by the core: let it raise no term.
		return fmt.Errorf("%w: type %v not handled", errInvalidMessage, m.Type)
	}
	if m.Type >= msgTypeCount {
		return fmt.Errorf("%w: type %d", errInvalidMessage, m.Type)
	}
	if m.Term == math.MaxUint64 {
		// A candidate of the next term could not count it: refuse the term at the top of the
		// range instead of letting a later campaign overflow to term 0.
		return fmt.Errorf("%w: %v with term %d at the top of the range", errInvalidMessage, m.Type, m.Term)
	}
	switch m.Type {
	case MsgVote, MsgPreVote:
		// A candidate's last entry is of no later term than the one it campaigns in, and an
		// empty log has no last term.
		if m.LogTerm > m.Term || (m.Index == 0) != (m.LogTerm == 0) {
			return fmt.Errorf("%w: %v from %s for term %d claims last entry (%d, %d)", errInvalidMessage, m.Type, m.From, m.Term, m.Index, m.LogTerm)
		}
	case MsgHeartbeat, MsgReadIndex, msgTimeoutNow:
		// Only a leader sends a heartbeat or starts a transfer, and only a follower that
		// knows one asks it for a read: none of them exists in term 0.
		if m.Term == 0 {
			return fmt.Errorf("%w: %v from %s in term 0", errInvalidMessage, m.Type, m.From)
		}
	case MsgReadIndexResp:
		// A leader answers in the term it leads, and grants no read below its term's first
		// entry (its no-op commits first, thesis §6.4): index 0 is no read index.
		if m.Term == 0 || (!m.Reject && m.Index == 0) {
			return fmt.Errorf("%w: %v from %s claims read index %d in term %d", errInvalidMessage, m.Type, m.From, m.Index, m.Term)
		}
	case MsgAppend:
		return checkAppend(m)
	case msgSnapshot:
		// The node hands the core a snapshot only once it is whole and checked; its
		// description must still make sense before it may raise the term.
		if s := m.snapshot; m.Term == 0 || s == nil || !s.Done || s.Index == 0 || s.Term == 0 || s.Term > m.Term {
			return fmt.Errorf("%w: snapshot from %s in term %d without a complete description", errInvalidMessage, m.From, m.Term)
		}
		// A snapshot's configuration had a leader: it has a voter (S27).
		if err := m.snapshot.membership().check(); err != nil || len(m.snapshot.Voters) == 0 {
			return fmt.Errorf("%w: snapshot from %s with configuration %v: %v", errInvalidMessage, m.From, m.snapshot.membership(), err)
		}
	}
	return nil
}

// admits reports whether m is from a sender whose word counts here (S5): answers and read
// requests only from a member; what only a leader sends from anyone, since our
// configuration may be behind the leader's (a replica created empty, a learner not yet
// told of its promotion) and its term decides whether it leads. Our own messages never
// count.
//
// A (pre-)vote request from a node that is not a voter here is dropped, without a reply
// and without moving our term, unless its log is at least as up to date as ours: a removed
// node, whose log stops growing, cannot disrupt the group with its terms. Refusing it
// altogether would not be live (thesis §4.2.3): our configuration may be the one behind,
// and the candidate the only one that can win (a voter just added, whose log holds the
// change we lack, may need our vote while the others refuse theirs to anyone with a
// shorter log). The candidate counts our vote only if we vote in its configuration.
func (r *raft) admits(m Message, pr *progress) bool {
	switch {
	case m.From == r.id:
		return false
	case m.Type == MsgVote || m.Type == MsgPreVote:
		// A replica that knows no configuration (created empty, or wiped) has no vote to
		// give: no candidate can need it, since a learner is promoted only once it holds
		// the configuration that added it (changedMembership).
		return r.tracker.voters > 0 && ((pr != nil && pr.voter) || r.upToDate(m))
	case m.Type == MsgAppend || m.Type == MsgHeartbeat || m.Type == msgSnapshot || m.Type == msgTimeoutNow:
		return true
	case m.Type == MsgReadIndexResp:
		return pr != nil || m.From == r.lead
	}
	return pr != nil
}

// readError returns the first storage read error the group could not do without (the
// committed entries to apply, the term of its last entry), or nil. Once it is set, what
// the group hands out may be wrong: the node must stop driving it.
func (r *raft) readError() error { return r.log.readErr }

// status returns the group's state.
func (r *raft) status() raftStatus {
	return raftStatus{
		id:        r.id,
		role:      r.role,
		term:      r.term,
		vote:      r.vote,
		leader:    r.lead,
		commit:    r.log.committed,
		applied:   r.log.applied,
		lastIndex: r.log.lastIndex(),
	}
}
