package kommander

import "fmt"

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
	// snapIndex and snapTerm are those of the snapshot installed last (raft_snapshot.go):
	// the log holds nothing at or below snapIndex, whatever storage still has until the
	// node compacts it.
	snapIndex, snapTerm uint64
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
	case i == l.snapIndex:
		return l.snapTerm, nil
	case i < l.snapIndex:
		return 0, ErrCompacted
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
	if lo <= l.snapIndex {
		return nil, ErrCompacted
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
// handed out, up to maxBytes and, when maxEntries is positive, maxEntries of them.
func (l *raftLog) nextCommitted(maxBytes uint64, maxEntries int) []Entry {
	hi := min(l.committed, l.stable)
	if l.applying >= hi {
		return nil
	}
	if maxEntries > 0 {
		hi = min(hi, l.applying+uint64(maxEntries))
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
