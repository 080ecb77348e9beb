package kommander

import (
	"slices"
)

// walLoc is where an entry of a partition is stored.
type walLoc struct {
	term uint64
	seg  uint32 // segment sequence number
	off  uint32 // byte offset of the entry record in the segment
	size uint32 // length of the entry record
}

// walPartition is the in-memory index of one partition.
type walPartition struct {
	compactIndex, compactTerm uint64
	// locs[i] is the entry at index compactIndex+1+i.
	locs      []walLoc
	liveBytes int64

	hs         HardState
	hasHS      bool
	hsSeg      uint32
	hasCompact bool
	compactSeg uint32

	// recent is a suffix of the log kept in memory (its last element is the last entry).
	recent []Entry
	// hole is set during recovery when entries follow a gap (their predecessors lived in
	// deleted segments); a later compaction or reset record must cover the gap.
	hole bool
}

func (p *walPartition) first() uint64 { return p.compactIndex + 1 }
func (p *walPartition) last() uint64  { return p.compactIndex + uint64(len(p.locs)) }

// pin returns the oldest segment this partition needs, if any.
func (p *walPartition) pin() (uint32, bool) {
	var s uint32
	ok := false
	take := func(x uint32) {
		if !ok || x < s {
			s, ok = x, true
		}
	}
	if len(p.locs) > 0 {
		take(p.locs[0].seg) // segments never decrease along the log
	}
	if p.hasHS {
		take(p.hsSeg)
	}
	if p.hasCompact {
		take(p.compactSeg)
	}
	return s, ok
}

// truncateFrom drops the entries at and after index.
func (p *walPartition) truncateFrom(index uint64) {
	if index <= p.compactIndex {
		index = p.compactIndex + 1
	}
	if index > p.last() {
		return
	}
	keep := int(index - p.first())
	for _, l := range p.locs[keep:] {
		p.liveBytes -= int64(l.size)
	}
	p.locs = p.locs[:keep]
	n := len(p.recent)
	for n > 0 && p.recent[n-1].Index >= index {
		n--
	}
	clear(p.recent[n:])
	p.recent = p.recent[:n]
}

// compact records a compaction point. Entries up to index are dropped when the stored
// entry at index has the given term; otherwise (the point is beyond the log, or the log
// conflicts with the snapshot) every entry is dropped.
func (p *walPartition) compact(index, term uint64) {
	if index <= p.compactIndex {
		return
	}
	if index <= p.last() && p.locs[index-p.first()].term == term {
		drop := int(index - p.compactIndex)
		for _, l := range p.locs[:drop] {
			p.liveBytes -= int64(l.size)
		}
		p.locs = p.locs[drop:]
		if cap(p.locs) > 64 && cap(p.locs) > 4*len(p.locs) {
			p.locs = slices.Clone(p.locs)
		}
	} else {
		p.locs = nil
		p.liveBytes = 0
	}
	p.compactIndex, p.compactTerm = index, term
	i := 0
	for i < len(p.recent) && p.recent[i].Index <= index {
		i++
	}
	p.recent = slices.Delete(p.recent, 0, i)
}

// reset restarts the log after a compaction point (a carried-forward partition).
func (p *walPartition) reset(index, term uint64) {
	p.locs = p.locs[:0]
	p.liveBytes = 0
	p.compactIndex, p.compactTerm = index, term
	p.recent = nil
}

func (p *walPartition) appendLoc(l walLoc) {
	p.locs = append(p.locs, l)
	p.liveBytes += int64(l.size)
}

// trimCache keeps the last limit cached entries once more than twice as many are cached:
// moved to the front of the same array (Entries hands out copies), so that caching costs
// no allocation in the steady state.
func (p *walPartition) trimCache(limit int) {
	if len(p.recent) > 2*limit {
		n := copy(p.recent, p.recent[len(p.recent)-limit:])
		clear(p.recent[n:])
		p.recent = p.recent[:n]
	}
}

func (w *WAL) part(p uint32) *walPartition {
	ps := w.parts[p]
	if ps == nil {
		ps = &walPartition{}
		w.parts[p] = ps
	}
	return ps
}
