package kommander

// This file is one Raft group as a pure, deterministic state machine: no goroutines, no
// clock, no I/O. Time is tick(); input is step(); every effect (entries and hard state to
// persist, messages to send, entries to apply) is handed out as data by ready() and
// acknowledged by advance(). References are to the Raft paper ("Raft §5.3", "Figure 2") and
// to Ongaro's thesis ("thesis §9.6").

import (
	"errors"
	"fmt"
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
	// voters is the membership configuration; it must contain id.
	voters []string
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
	if len(c.voters) == 0 {
		return errors.New("raft: no voters")
	}
	self := false
	for i, v := range c.voters {
		if v == "" {
			return errors.New("raft: empty voter id")
		}
		for _, w := range c.voters[:i] {
			if v == w {
				return fmt.Errorf("raft: voter %q listed twice", v)
			}
		}
		self = self || v == c.id
	}
	if !self {
		return fmt.Errorf("raft: node %q is not among the voters %v", c.id, c.voters)
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

// membership is the configuration of a group: who votes. It is data in the state, not a
// constant, because membership changes and snapshots will replace it at a log index.
type membership struct {
	voters []string
}

func (m *membership) indexOf(id string) int {
	for i, v := range m.voters {
		if v == id {
			return i
		}
	}
	return -1
}

func (m *membership) quorum() int { return len(m.voters)/2 + 1 }

// progressState is how a leader sends to one follower.
type progressState uint8

const (
	// progressProbe: the leader does not know where the follower's log matches; it sends one
	// append at a time and waits for the answer (or a heartbeat response) before the next.
	progressProbe progressState = iota
	// progressReplicate: the follower's log matches up to match; the leader streams appends
	// optimistically, bounded by the in-flight window.
	progressReplicate
)

// progress is the leader's view of one voter (Figure 2: nextIndex, matchIndex).
type progress struct {
	match, next  uint64
	state        progressState
	probeSent    bool   // probe: an append is out and unanswered
	recentActive bool   // heard from since the last CheckQuorum round
	sentCommit   uint64 // highest commit index the follower can have learned from what it was sent
	inflight     inflights
}

func (pr *progress) becomeProbe(next uint64) {
	pr.state = progressProbe
	pr.next = next
	pr.probeSent = false
	pr.inflight.reset()
}

func (pr *progress) becomeReplicate() {
	pr.state = progressReplicate
	pr.next = pr.match + 1
	pr.probeSent = false
	pr.inflight.reset()
}

type voteState uint8

const (
	voteUnknown voteState = iota
	voteGranted
	voteRejected
)

// raftTestHooks plants bugs for tests that prove the simulation can find them. Every field
// is false in production; nothing outside *_test.go sets them.
type raftTestHooks struct {
	commitOlderTerms  bool // (a) count replicas of entries from older terms toward commit
	voteBeforePersist bool // (b) send vote grants before the vote is persisted
	skipPrevTermCheck bool // (c) accept an append whose prevTerm does not match
	selfVoteAtOnce    bool // (d) count the candidate's self-vote before it is persisted
}

// raftLog is a group's log: the stable prefix in storage and an in-memory tail. Every entry
// not yet persisted is in memory; persisted entries stay in memory until the tail exceeds
// maxMemLogBytes, so that appends and apply rarely read storage.
//
// Slices of ents handed out (in messages and Readies) are never written to again: appends
// write only past len(ents) and a truncation copies into a new array. So a raftReady or a
// message may keep its Entries for as long as it likes, read-only.
type raftLog struct {
	storage logStorage
	first   uint64 // index of ents[0]; ents cover [first, lastIndex]
	ents    []Entry
	bytes   uint64 // sizes of ents
	// stable is the highest index known to be durable with the same entries as ents (an
	// underestimate right after a truncation); first <= stable+1 always.
	stable        uint64
	unstableBytes uint64 // sizes of entries after stable
	handedOut     uint64 // last index handed out for persistence in a raftReady
	committed     uint64
	applying      uint64 // last index handed out for apply
	applied       uint64 // last index acknowledged as applied by advance
	// readErr is the first error reading storage where the log cannot do without it (see
	// readError); the node fails on it (S26).
	readErr error
}

func (l *raftLog) lastIndex() uint64 { return l.first + uint64(len(l.ents)) - 1 }

func (l *raftLog) term(i uint64) (uint64, error) {
	switch {
	case i == 0:
		return 0, nil
	case i > l.lastIndex():
		return 0, ErrUnavailable
	case i >= l.first:
		return l.ents[i-l.first].Term, nil
	}
	return l.storage.term(i)
}

func (l *raftLog) lastTerm() uint64 {
	t, err := l.term(l.lastIndex())
	if err != nil {
		// A disk error is no broken invariant of ours: record it for the node, which
		// fails before it sends or saves anything computed from this 0.
		l.readFailed(fmt.Errorf("raft: term of the last index %d unreadable: %w", l.lastIndex(), err))
		return 0
	}
	return t
}

// readFailed records the first storage read error the log could not do without.
func (l *raftLog) readFailed(err error) {
	if l.readErr == nil {
		l.readErr = err
	}
}

// matchTerm reports whether the entry at i has term t.
func (l *raftLog) matchTerm(i, t uint64) bool {
	lt, err := l.term(i)
	return err == nil && lt == t
}

// entries returns entries of [lo, hi) up to maxBytes (at least one). The result is
// read-only and may be kept.
func (l *raftLog) entries(lo, hi, maxBytes uint64) ([]Entry, error) {
	if lo >= hi {
		return nil, nil
	}
	if lo >= l.first {
		if hi > l.lastIndex()+1 {
			return nil, ErrUnavailable
		}
		ents := l.ents[lo-l.first : hi-l.first]
		n, size := 0, uint64(0)
		for n < len(ents) {
			size += ents[n].size()
			if n > 0 && size > maxBytes {
				break
			}
			n++
		}
		return ents[:n:n], nil
	}
	return l.storage.entries(lo, min(hi, l.first), maxBytes)
}

// append adds entries whose first index is at most lastIndex+1, replacing any suffix from
// that index on. Callers have checked that no committed entry is replaced.
func (l *raftLog) append(es []Entry) {
	if len(es) == 0 {
		return
	}
	k := es[0].Index
	last := l.lastIndex()
	switch {
	case k == last+1:
		if cap(l.ents)-len(l.ents) < len(es) {
			// Grow with headroom: trim keeps reslicing the front away, and a tail that
			// had to reallocate for every small append would cost an allocation per batch.
			grown := make([]Entry, len(l.ents), max(2*len(l.ents)+len(es), 64))
			copy(grown, l.ents)
			l.ents = grown
		}
		l.ents = append(l.ents, es...)
		for i := range es {
			l.bytes += es[i].size()
			l.unstableBytes += es[i].size()
		}
		return
	case k > last+1:
		panic(fmt.Sprintf("raft: append at %d leaves a gap after %d", k, last))
	case k <= l.committed:
		panic(fmt.Sprintf("raft: append at %d would rewrite committed entries (commit %d)", k, l.committed))
	case k >= l.first:
		// A conflicting suffix: copy into a new array so that slices handed out earlier keep
		// their entries.
		keep := k - l.first
		l.ents = append(l.ents[:keep:keep], es...)
	default:
		l.ents = append([]Entry(nil), es...)
		l.first = k
	}
	l.stable = min(l.stable, k-1)
	l.handedOut = min(l.handedOut, k-1)
	l.bytes, l.unstableBytes = 0, 0
	for i := range l.ents {
		s := l.ents[i].size()
		l.bytes += s
		if l.ents[i].Index > l.stable {
			l.unstableBytes += s
		}
	}
}

// pendingEntries returns the entries not yet handed out for persistence and marks them
// handed out.
func (l *raftLog) pendingEntries() []Entry {
	last := l.lastIndex()
	if l.handedOut >= last {
		return nil
	}
	lo := l.handedOut + 1
	l.handedOut = last
	return l.ents[lo-l.first : last-l.first+1 : last-l.first+1]
}

// stableTo records that entries up to index i, whose term is t, are durable. It is ignored
// when the log no longer holds that entry (a truncation came in between).
func (l *raftLog) stableTo(i, t uint64) {
	if i <= l.stable || i < l.first || i > l.lastIndex() || i > l.handedOut || l.ents[i-l.first].Term != t {
		return
	}
	for j := l.stable + 1; j <= i; j++ {
		l.unstableBytes -= l.ents[j-l.first].size()
	}
	l.stable = i
}

// nextCommitted hands out the committed entries that are also durable here and not yet
// handed out, up to maxBytes.
func (l *raftLog) nextCommitted(maxBytes uint64) []Entry {
	hi := min(l.committed, l.stable)
	if l.applying >= hi {
		return nil
	}
	ents, err := l.entries(l.applying+1, hi+1, maxBytes)
	if err != nil {
		l.readFailed(fmt.Errorf("raft: committed entries [%d, %d] unreadable from storage: %w", l.applying+1, hi, err))
		return nil
	}
	if len(ents) > 0 {
		l.applying = ents[len(ents)-1].Index
	}
	return ents
}

// trim drops entries from the front of the in-memory tail: all of them up to upTo (the
// caller passes what is durable and no longer needed), and more persisted ones while the
// tail exceeds maxBytes. Dropped entries are read back from storage when needed. Keeping the
// tail short keeps appends to it cheap and gives the garbage collector little to scan.
func (l *raftLog) trim(upTo, maxBytes uint64) {
	upTo = min(upTo, l.stable)
	n := 0
	for n < len(l.ents) && l.ents[n].Index <= upTo {
		l.bytes -= l.ents[n].size()
		n++
	}
	if l.bytes > maxBytes {
		for n < len(l.ents) && l.ents[n].Index <= l.stable && l.bytes > maxBytes/2 {
			l.bytes -= l.ents[n].size()
			n++
		}
	}
	// The dropped positions are not cleared: slices handed out earlier may still hold them.
	l.ents = l.ents[n:]
	l.first += uint64(n)
}

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
	// heartbeats and a candidate's vote requests.
	Messages []Message
	// MessagesAfterPersist may be sent only once HardState and Entries are durable: vote
	// grants, append responses and every other response.
	MessagesAfterPersist []Message
	// CommittedEntries are to be applied in order. All of them are durable on this node.
	CommittedEntries []Entry
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
	members   membership
	self      int // index of id in members.voters

	term uint64
	vote string
	lead string
	role raftRole
	log  raftLog

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

	prs   []progress  // leader only; indexed like members.voters
	votes []voteState // (pre-)candidate only; indexed like members.voters

	msgs, msgsAfterPersist []Message
	spareMsgs, spareAfter  []Message // buffers of the last advanced raftReady, reused
	prevHardState          HardState // last hard state handed out
	readyOut               bool      // a raftReady was handed out and not yet advanced
	appendPending          bool      // new entries to broadcast at the next ready
	commitPending          bool      // commit index to broadcast at the next ready
	matchScratch           []uint64
	hooks                  raftTestHooks
}

// newRaft starts a group from its configuration and what it persisted.
func newRaft(c raftConfig) (*raft, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	r := &raft{
		id:               c.id,
		partition:        c.partition,
		members:          membership{voters: append([]string(nil), c.voters...)},
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
	}
	setDefault(&r.maxMsgBytes, defaultMaxMsgBytes)
	setDefault(&r.maxInflightMsgs, defaultMaxInflightMsgs)
	setDefault(&r.maxInflightBytes, defaultMaxInflightBytes)
	setDefault(&r.maxUnstableBytes, defaultMaxUnstableBytes)
	setDefault(&r.maxMemLogBytes, defaultMaxMemLogBytes)
	setDefault(&r.maxApplyBytes, defaultMaxApplyBytes)
	r.self = r.members.indexOf(c.id)
	r.prs = make([]progress, len(r.members.voters))
	r.votes = make([]voteState, len(r.members.voters))
	r.matchScratch = make([]uint64, len(r.members.voters))

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
	r.heartbeatElapsed++
	r.electionElapsed++
	if r.electionElapsed >= r.electionTicks {
		r.electionElapsed = 0
		// CheckQuorum (thesis §6.2): a leader cut off from a quorum steps down, so that its
		// callers learn of it and a lease on followers cannot outlive it.
		if r.checkQuorum && !r.quorumActive() {
			r.becomeFollower(r.term, "")
			return
		}
	}
	if r.heartbeatElapsed >= r.heartbeatTicks {
		r.heartbeatElapsed = 0
		r.bcastHeartbeat()
	}
}

// quorumActive reports whether a quorum (this leader included) was heard from since the
// last call, and starts a new round.
func (r *raft) quorumActive() bool {
	n := 0
	for i := range r.prs {
		if i == r.self || r.prs[i].recentActive {
			n++
		}
		r.prs[i].recentActive = false
	}
	return n >= r.members.quorum()
}

func (r *raft) resetElectionTimer() {
	r.electionElapsed = 0
	r.randomizedElectionTimeout = r.electionTicks + r.rand.IntN(r.electionTicks)
}

func (r *raft) becomeFollower(term uint64, lead string) {
	if term != r.term {
		r.term = term
		r.vote = ""
	}
	r.role = roleFollower
	r.lead = lead
	r.heartbeatElapsed = 0
	r.appendPending, r.commitPending = false, false
	r.resetElectionTimer()
}

func (r *raft) campaign() {
	if r.preVote {
		r.becomePreCandidate()
	} else {
		r.becomeCandidate()
	}
}

func (r *raft) resetVotes() {
	for i := range r.votes {
		r.votes[i] = voteUnknown
	}
}

// becomePreCandidate asks whether an election at term+1 could be won, without changing the
// term (thesis §9.6): a node that cannot win, or that is cut off, never raises the term of
// a healthy group.
func (r *raft) becomePreCandidate() {
	r.role = rolePreCandidate
	r.lead = ""
	r.resetElectionTimer()
	r.resetVotes()
	r.votes[r.self] = voteGranted // a pre-vote changes nothing, so no persistence is needed
	if r.countVotes() == voteGranted {
		r.becomeCandidate()
		return
	}
	r.requestVotes(MsgPreVote, r.term+1)
}

// becomeCandidate starts an election (Figure 2, Candidates). The vote requests go out at
// once, before the new term and self-vote are persisted; the self-vote is counted only in
// advance, once they are. Why that is safe: if this node crashes before persisting, it
// restarts in the old term and may vote for someone else in the new term; but it never won
// with its unpersisted self-vote, so that term still gets at most one leader. Counting the
// self-vote before persistence would allow this node to win, crash, forget, and vote for a
// second leader of the same term.
func (r *raft) becomeCandidate() {
	r.term++
	r.vote = r.id
	r.role = roleCandidate
	r.lead = ""
	r.resetElectionTimer()
	r.resetVotes()
	if r.hooks.selfVoteAtOnce {
		r.votes[r.self] = voteGranted // planted bug (d)
	}
	r.requestVotes(MsgVote, r.term)
}

func (r *raft) requestVotes(t MessageType, term uint64) {
	lastIndex := r.log.lastIndex()
	lastTerm := r.log.lastTerm()
	for i, v := range r.members.voters {
		if i == r.self {
			continue
		}
		r.send(Message{Type: t, To: v, Term: term, LogTerm: lastTerm, Index: lastIndex})
	}
}

// countVotes says whether the election is won (voteGranted), lost (voteRejected) or open.
func (r *raft) countVotes() voteState {
	granted, rejected := 0, 0
	for _, v := range r.votes {
		switch v {
		case voteGranted:
			granted++
		case voteRejected:
			rejected++
		}
	}
	q := r.members.quorum()
	switch {
	case granted >= q:
		return voteGranted
	case rejected > len(r.votes)-q:
		return voteRejected
	}
	return voteUnknown
}

func (r *raft) recordVote(from int, granted bool) {
	if r.votes[from] != voteUnknown {
		return // a duplicate response counts once
	}
	if granted {
		r.votes[from] = voteGranted
	} else {
		r.votes[from] = voteRejected
	}
	switch r.countVotes() {
	case voteGranted:
		if r.role == rolePreCandidate {
			r.becomeCandidate()
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
	r.role = roleLeader
	r.lead = r.id
	r.heartbeatElapsed = 0
	r.electionElapsed = 0
	last := r.log.lastIndex()
	for i := range r.prs {
		in := r.prs[i].inflight
		if in.maxCount == 0 {
			in = newInflights(r.maxInflightMsgs, r.maxInflightBytes)
		}
		in.reset()
		r.prs[i] = progress{next: last + 1, recentActive: true, inflight: in}
	}
	r.prs[r.self].match = r.log.stable
	r.prs[r.self].state = progressReplicate
	r.appendLocal([]Entry{{Kind: EntryNoop}})
}

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

// inLease reports whether this node heard from a live leader within the minimum election
// timeout. Vote requests are then ignored: the leader is alive, so an election would only
// disrupt it (thesis §4.2.3 and §9.6).
func (r *raft) inLease() bool {
	return (r.checkQuorum || r.preVote) && r.lead != "" && r.electionElapsed < r.electionTicks
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
	if m.Type == MsgNone || m.Type >= msgTypeCount {
		return fmt.Errorf("%w: type %d", errInvalidMessage, m.Type)
	}
	from := r.members.indexOf(m.From)
	if from < 0 || from == r.self {
		// Not a member of this group (or ourselves): nothing it says counts (S5).
		return nil
	}

	// Rules for all servers (Figure 2): a higher term makes us a follower of that term.
	switch {
	case m.Term > r.term:
		if (m.Type == MsgVote || m.Type == MsgPreVote) && r.inLease() {
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
	}
	switch r.role {
	case roleLeader:
		return r.stepLeader(m, from)
	case roleCandidate, rolePreCandidate:
		return r.stepCandidate(m, from)
	}
	return r.stepFollower(m)
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
	lastIndex, lastTerm := r.log.lastIndex(), r.log.lastTerm()
	upToDate := m.LogTerm > lastTerm || (m.LogTerm == lastTerm && m.Index >= lastIndex)
	if !canVote || !upToDate {
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
	if r.hooks.voteBeforePersist {
		r.send(grant) // planted bug (b)
		return
	}
	// The grant goes out only once the vote is durable (S1): a node that crashes after
	// granting must remember the vote, or it could grant a second one in the same term.
	r.sendAfterPersist(grant)
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

func (r *raft) stepCandidate(m Message, from int) error {
	switch m.Type {
	case MsgAppend:
		r.becomeFollower(m.Term, m.From) // Figure 2, Candidates: a leader of our term exists
		return r.handleAppend(m)
	case MsgHeartbeat:
		r.becomeFollower(m.Term, m.From)
		r.handleHeartbeat(m)
	case MsgVoteResp:
		if r.role == roleCandidate {
			r.recordVote(from, !m.Reject)
		}
	case MsgPreVoteResp:
		// Only responses to our own round count: a grant carries term+1, a rejection ours.
		if r.role == rolePreCandidate && (m.Reject || m.Term == r.term+1) {
			r.recordVote(from, !m.Reject)
		}
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
	if t, err := r.log.term(prevIndex); err != nil || (t != prevTerm && !r.hooks.skipPrevTermCheck) {
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

func (r *raft) stepLeader(m Message, from int) error {
	pr := &r.prs[from]
	switch m.Type {
	case MsgAppendResp:
		pr.recentActive = true
		if m.Reject {
			r.handleAppendReject(m, from)
		} else {
			r.handleAppendSuccess(m, from)
		}
	case MsgHeartbeatResp:
		pr.recentActive = true
		switch {
		case pr.state == progressProbe:
			pr.probeSent = false // the probe or its answer may have been lost: probe again
			r.sendAppends(from)
		case pr.match+1 < pr.next:
			// Appends are outstanding. Ask whether the follower has the last one: an empty
			// append at next-1. If appends were lost it rejects, with a hint, and we probe
			// from there; otherwise it acknowledges. Without this, a lost append would stall
			// a follower whose window is full until the next proposal.
			r.sendEmptyAppend(from, pr.next-1)
		default:
			r.sendAppends(from)
		}
	}
	return nil
}

func (r *raft) handleAppendReject(m Message, from int) {
	pr := &r.prs[from]
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
	r.sendAppends(from)
}

func (r *raft) handleAppendSuccess(m Message, from int) {
	pr := &r.prs[from]
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
	r.sendAppends(from)
}

// maybeCommit advances the commit index to the highest index a quorum has matched, but
// only if that entry is of the current term (Raft §5.4.2, Figure 8, S11).
func (r *raft) maybeCommit() {
	ms := r.matchScratch[:0]
	for i := range r.prs {
		ms = append(ms, r.prs[i].match)
	}
	// Insertion sort, descending: groups are small and this must not allocate.
	for i := 1; i < len(ms); i++ {
		for j := i; j > 0 && ms[j] > ms[j-1]; j-- {
			ms[j], ms[j-1] = ms[j-1], ms[j]
		}
	}
	idx := ms[r.members.quorum()-1]
	if idx <= r.log.committed {
		return
	}
	if !r.hooks.commitOlderTerms && !r.log.matchTerm(idx, r.term) {
		return
	}
	r.log.committed = idx
	r.commitPending = true
}

// sendAppends sends to follower i what its progress allows: one probe, or appends until the
// in-flight window is full. With nothing to send, it sends the commit index if the follower
// has not been told it.
func (r *raft) sendAppends(i int) {
	pr := &r.prs[i]
	sent := false
	for r.sendAppend(i) {
		sent = true
		if pr.state == progressProbe {
			break
		}
	}
	if !sent && pr.state == progressReplicate && min(pr.match, r.log.committed) > pr.sentCommit {
		// prev = match: the follower has it, so this never causes a spurious rejection, and
		// it lets the follower commit up to min(commit, match), which it has not been told.
		r.sendEmptyAppend(i, pr.match)
	}
}

// sendEmptyAppend sends an append without entries at prevIndex, carrying the commit index.
func (r *raft) sendEmptyAppend(i int, prevIndex uint64) {
	prevTerm, err := r.log.term(prevIndex)
	if err != nil {
		return
	}
	r.send(Message{Type: MsgAppend, To: r.members.voters[i], Term: r.term, LogTerm: prevTerm,
		Index: prevIndex, Commit: r.log.committed})
	// A follower commits no further than the last index an append vouches for.
	r.prs[i].sentCommit = min(r.log.committed, prevIndex)
}

// sendAppend sends one append with entries from pr.next, if the progress state allows.
func (r *raft) sendAppend(i int) bool {
	pr := &r.prs[i]
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
	r.send(Message{Type: MsgAppend, To: r.members.voters[i], Term: r.term, LogTerm: prevTerm,
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

func (r *raft) bcastHeartbeat() {
	for i, v := range r.members.voters {
		if i == r.self {
			continue
		}
		r.send(Message{Type: MsgHeartbeat, To: v, Term: r.term, Commit: min(r.log.committed, r.prs[i].match)})
	}
}

// flush sends what proposals and commits left pending since the last raftReady: one pass over
// the followers per raftReady, however many proposals came in.
func (r *raft) flush() {
	if r.role == roleLeader && (r.appendPending || r.commitPending) {
		for i := range r.prs {
			if i != r.self {
				r.sendAppends(i)
			}
		}
	}
	r.appendPending, r.commitPending = false, false
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
	return r.appendPending || r.commitPending ||
		len(r.msgs) > 0 || len(r.msgsAfterPersist) > 0 ||
		r.hardState() != r.prevHardState ||
		r.log.handedOut < r.log.lastIndex() ||
		r.log.applying < min(r.log.committed, r.log.stable)
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
	rd.Messages, rd.MessagesAfterPersist = r.msgs, r.msgsAfterPersist
	r.msgs, r.msgsAfterPersist = r.spareMsgs[:0], r.spareAfter[:0]
	r.spareMsgs, r.spareAfter = nil, nil
	rd.CommittedEntries = r.log.nextCommitted(r.maxApplyBytes)
	r.readyOut = true
	return rd
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
		r.log.applied = rd.CommittedEntries[n-1].Index
	}
	clear(rd.Messages)
	clear(rd.MessagesAfterPersist)
	r.spareMsgs, r.spareAfter = rd.Messages[:0], rd.MessagesAfterPersist[:0]
	switch r.role {
	case roleCandidate:
		if rd.SaveHardState && rd.HardState.Term == r.term && rd.HardState.Vote == r.id {
			r.recordVote(r.self, true) // the self-vote is durable now
		}
	case roleLeader:
		// The leader's own copy counts toward commit only once it is durable.
		if r.log.stable > r.prs[r.self].match {
			r.prs[r.self].match = r.log.stable
			r.maybeCommit()
		}
	}
	// Entries applied here and, on a leader, acknowledged by every follower are no longer
	// needed in memory.
	upTo := min(r.log.stable, r.log.applied)
	if r.role == roleLeader {
		for i := range r.prs {
			upTo = min(upTo, r.prs[i].match)
		}
	}
	r.log.trim(upTo, r.maxMemLogBytes)
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
