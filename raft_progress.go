package kommander

// This file is the leader's view of one follower: where their logs match, how it sends
// (probe or replicate), and the in-flight window that bounds what is unacknowledged.

// progressState is how a leader sends to one follower.
type progressState uint8

const (
	// progressProbe: the leader does not know where the follower's log matches; it sends one
	// append at a time and waits for the answer (or a heartbeat response) before the next.
	progressProbe progressState = iota
	// progressReplicate: the follower's log matches up to match; the leader streams appends
	// optimistically, bounded by the in-flight window.
	progressReplicate
	// progressSnapshot: the entries the follower needs are compacted away; the node sends
	// it a snapshot, and the leader sends no appends until the follower acknowledges the
	// install or the node reports the transfer abandoned (raft_snapshot.go).
	progressSnapshot
)

// progress is the leader's view of one member (Figure 2: nextIndex, matchIndex).
type progress struct {
	id           string // the member's node ID
	voter        bool   // a voter, not a learner (raft_config.go)
	match, next  uint64
	state        progressState
	probeSent    bool   // probe: an append is out and unanswered
	recentActive bool   // heard from since the last CheckQuorum round
	sentCommit   uint64 // highest commit index the follower can have learned from what it was sent
	// sentIndex is the highest index sent to the follower in this leadership: no honest
	// acknowledgement claims more (S31).
	sentIndex uint64
	// seq numbers the appends and heartbeats sent to the follower (carried in Context and
	// echoed in the answers); matchSeq is seq when match last advanced. An answer carrying
	// more than matchSeq answers a message sent after the follower proved it had match, so
	// what it reports of the follower's log is at least as recent as that proof (S36).
	seq, matchSeq uint64
	// lostSeq is seq when the follower last proved it lost entries (0: never): an
	// acknowledgement answering an earlier message tells of the log it lost.
	lostSeq  uint64
	inflight inflights
	// reads is which read rounds the follower acknowledged (raft_read.go).
	reads followerReads
}

// stamp numbers the next message to the follower; it returns the Context to send.
func (pr *progress) stamp() uint64 {
	pr.seq++
	return pr.seq
}

// answersAfterMatch reports whether an answer carrying ctx answers a message sent after the
// follower proved it had match (see seq).
func (pr *progress) answersAfterMatch(ctx uint64) bool {
	return ctx > pr.matchSeq && ctx <= pr.seq
}

// lostEntries is the leader's reaction to proof that the follower's log no longer holds
// what it acknowledged (its data directory was wiped or its disk lost writes, S36): its
// match is forgotten, and so is the commit it was told, and it is probed from next.
func (pr *progress) lostEntries(next uint64) {
	pr.match, pr.matchSeq, pr.lostSeq, pr.sentCommit = 0, pr.seq, pr.seq, 0
	pr.becomeProbe(next)
}

func (pr *progress) becomeProbe(next uint64) {
	pr.state = progressProbe
	pr.next = next
	pr.probeSent = false
	pr.inflight.reset()
}

func (pr *progress) becomeSnapshot() {
	pr.state = progressSnapshot
	pr.probeSent = false
	pr.inflight.reset()
}

func (pr *progress) becomeReplicate() {
	pr.state = progressReplicate
	pr.next = pr.match + 1
	pr.probeSent = false
	pr.inflight.reset()
}

// inflights bounds the appends a leader has sent to one follower in the replicate state and
// not yet seen acknowledged, by count and by bytes. It is a ring buffer of the last index and
// the size of each append in flight, oldest first; an acknowledgement of index i frees every
// append whose last index is at or below i.
type inflights struct {
	buf      []inflight
	start    int // position of the oldest append in buf
	count    int
	bytes    uint64
	maxCount int
	maxBytes uint64 // 0 means no byte limit
}

type inflight struct {
	index uint64 // last entry index the append carried
	bytes uint64
}

func newInflights(maxCount int, maxBytes uint64) inflights {
	return inflights{maxCount: maxCount, maxBytes: maxBytes}
}

// full reports whether no further append may be sent until some are acknowledged.
func (in *inflights) full() bool {
	return in.count >= in.maxCount || (in.maxBytes > 0 && in.bytes >= in.maxBytes)
}

// add records an append whose last entry is index. Indexes must increase; callers check
// full first.
func (in *inflights) add(index, bytes uint64) {
	if in.count >= in.maxCount {
		panic("raft: inflights: add on a full window")
	}
	if in.buf == nil {
		// Allocated on first use: most followers of most partitions are idle.
		in.buf = make([]inflight, in.maxCount)
	}
	pos := (in.start + in.count) % len(in.buf)
	in.buf[pos] = inflight{index: index, bytes: bytes}
	in.count++
	in.bytes += bytes
}

// freeLE frees every append whose last index is at or below index.
func (in *inflights) freeLE(index uint64) {
	for in.count > 0 {
		f := in.buf[in.start]
		if f.index > index {
			return
		}
		in.bytes -= f.bytes
		in.start = (in.start + 1) % len(in.buf)
		in.count--
	}
}

// reset forgets every append in flight, keeping the buffer.
func (in *inflights) reset() {
	in.start, in.count, in.bytes = 0, 0, 0
}
