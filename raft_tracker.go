package kommander

// voteState is one voter's answer in an election, or the election's outcome.
type voteState uint8

const (
	voteUnknown voteState = iota
	voteGranted
	voteRejected
)

// tracker is the configuration of a group in effect, with what the group tracks of each
// member: the leader's progress and a candidate's votes, keyed by node ID. It is data in the
// state, not a constant: a membership change or a snapshot replaces it (raft_config.go).
//
// Go's map iteration order is random: every loop that sends or counts goes over prs, in the
// configured order, and never over a map, so that a seeded run replays identically.
type tracker struct {
	// prs has one progress per member: the voters in the configured order, then the
	// learners. Only prs[:voters] vote and count for a quorum.
	prs    []*progress
	voters int
	byID   map[string]*progress // the same progress, by node ID
	// self is this node's own progress: the leader's match is what is durable here. It is
	// in prs only while this node is a member (a removed leader replicates on, uncounted).
	self *progress

	// votes are the answers of the current (pre-)election, by voter; granted and rejected
	// count them, so that a duplicate answer is found by one lookup and counted once.
	votes             map[string]voteState
	granted, rejected int

	matchScratch []uint64 // reused by quorumMatch so that commit does not allocate
}

func newTracker(m membership, self string) tracker {
	t := tracker{votes: map[string]voteState{}}
	t.reconfigure(m, self, func(id string) *progress { return &progress{id: id} })
	return t
}

// reconfigure makes m the configuration: members keep their progress, newProgress makes
// that of a new one.
func (t *tracker) reconfigure(m membership, self string, newProgress func(id string) *progress) {
	old := t.byID
	n := len(m.Voters) + len(m.Learners)
	t.prs = make([]*progress, 0, n)
	t.byID = make(map[string]*progress, n)
	t.voters = len(m.Voters)
	for i, ids := range [2][]string{m.Voters, m.Learners} {
		for _, id := range ids {
			pr := old[id]
			if pr == nil {
				pr = newProgress(id)
			}
			pr.voter = i == 0
			t.prs = append(t.prs, pr)
			t.byID[id] = pr
		}
	}
	if pr := t.byID[self]; pr != nil {
		t.self = pr
	} else if t.self == nil || t.self.id != self {
		t.self = newProgress(self)
	}
	if t.byID[self] == nil {
		t.self.voter = false
	}
	if cap(t.matchScratch) < n {
		t.matchScratch = make([]uint64, 0, n)
	}
}

// progress returns the progress of member id, or nil when id is not a member.
func (t *tracker) progress(id string) *progress { return t.byID[id] }

// voterPrs returns the voters' progress.
func (t *tracker) voterPrs() []*progress { return t.prs[:t.voters] }

func (t *tracker) quorum() int { return t.voters/2 + 1 }

// quorumMatch returns the highest index that a quorum of voters has matched (0 without
// voters).
func (t *tracker) quorumMatch() uint64 {
	if t.voters == 0 {
		return 0
	}
	ms := t.matchScratch[:0]
	for _, pr := range t.voterPrs() {
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
		if pr.voter && (pr == t.self || pr.recentActive) {
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
// has already answered. The caller checks that id votes (safetyRules.voteCounts).
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
	case t.rejected > t.voters-q:
		return voteRejected
	}
	return voteUnknown
}
