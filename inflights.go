package kommander

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
