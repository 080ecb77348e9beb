package kommander

// voteState is one voter's answer in an election, or the election's outcome.
type voteState uint8

const (
	voteUnknown voteState = iota
	voteGranted
	voteRejected
)

// tracker is the configuration of a group, who votes, with what the group tracks of each
// voter: the leader's progress and a candidate's votes, keyed by node ID. It is data in the
// state, not a constant, because membership changes and snapshots will replace it at a log
// index; adding or removing a voter then changes the tracker alone.
//
// Go's map iteration order is random: every loop that sends or counts goes over prs, in the
// configured voters order, and never over a map, so that a seeded run replays identically.
type tracker struct {
	prs  []*progress          // one per voter, in the configured voters order
	byID map[string]*progress // the same progress, by node ID
	self *progress            // this node's own: the leader's match is what is durable here

	// votes are the answers of the current (pre-)election, by voter; granted and rejected
	// count them, so that a duplicate answer is found by one lookup and counted once.
	votes             map[string]voteState
	granted, rejected int

	matchScratch []uint64 // reused by quorumMatch so that commit does not allocate
}

func newTracker(voters []string, self string) tracker {
	t := tracker{
		prs:          make([]*progress, len(voters)),
		byID:         make(map[string]*progress, len(voters)),
		votes:        make(map[string]voteState, len(voters)),
		matchScratch: make([]uint64, 0, len(voters)),
	}
	for i, id := range voters {
		pr := &progress{id: id}
		t.prs[i] = pr
		t.byID[id] = pr
	}
	t.self = t.byID[self]
	return t
}

// progress returns the progress of voter id, or nil when id is not a voter.
func (t *tracker) progress(id string) *progress { return t.byID[id] }

func (t *tracker) quorum() int { return len(t.prs)/2 + 1 }

// quorumMatch returns the highest index that a quorum of voters has matched.
func (t *tracker) quorumMatch() uint64 {
	ms := t.matchScratch[:0]
	for _, pr := range t.prs {
		ms = append(ms, pr.match)
	}
	return kthHighest(ms, t.quorum())
}

// kthHighest returns the k-th highest of ms (1-based), sorting ms in place, descending, by
// insertion: groups are small and this must not allocate.
func kthHighest(ms []uint64, k int) uint64 {
	for i := 1; i < len(ms); i++ {
		for j := i; j > 0 && ms[j] > ms[j-1]; j-- {
			ms[j], ms[j-1] = ms[j-1], ms[j]
		}
	}
	return ms[k-1]
}

// quorumActive reports whether a quorum (this leader included) was heard from since the
// last call, and starts a new round.
func (t *tracker) quorumActive() bool {
	n := 0
	for _, pr := range t.prs {
		if pr == t.self || pr.recentActive {
			n++
		}
		pr.recentActive = false
	}
	return n >= t.quorum()
}

// resetVotes forgets the answers of the previous election.
func (t *tracker) resetVotes() {
	clear(t.votes)
	t.granted, t.rejected = 0, 0
}

// recordVote records voter id's answer; it reports false, changing nothing, for a voter who
// has already answered.
func (t *tracker) recordVote(id string, granted bool) bool {
	if t.votes[id] != voteUnknown {
		return false
	}
	if granted {
		t.votes[id] = voteGranted
		t.granted++
	} else {
		t.votes[id] = voteRejected
		t.rejected++
	}
	return true
}

// voteResult says whether the election is won (voteGranted), lost (voteRejected) or open.
func (t *tracker) voteResult() voteState {
	q := t.quorum()
	switch {
	case t.granted >= q:
		return voteGranted
	case t.rejected > len(t.prs)-q:
		return voteRejected
	}
	return voteUnknown
}
