package kommander

// The WAL type, its options and its Storage methods. The byte format and the crash
// assumptions are described at the top of wal_format.go; the rest lives beside it by
// concern: wal_recover.go (opening), wal_commit.go (group commit), wal_segments.go (segment
// files and space), wal_index.go (the in-memory index and entry cache), wal_fs.go (files).

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
)

// ErrCorrupt is returned by OpenWAL (and by reads) when the WAL holds bytes that a crash
// cannot explain: a bad frame before the tail, a bad segment header, a missing segment. The
// error wraps it with the file name and byte offset.
var ErrCorrupt = errors.New("kommander: wal corrupt")

// ErrDiskFull is returned (wrapped, together with the system error) by a Save that failed
// because the disk is full. Like every write failure it is sticky.
var ErrDiskFull = errors.New("kommander: wal disk full")

// ErrWALClosed is returned by calls on a WAL after Close.
var ErrWALClosed = errors.New("kommander: wal closed")

// Defaults and bounds of WALOptions.
const (
	defaultWALSegmentSize  = 64 << 20
	minWALSegmentSize      = 4 << 10
	maxWALSegmentSize      = 1 << 30
	defaultWALCacheEntries = 128
)

// WALOptions configures OpenWAL. The zero value is valid and gives the defaults.
type WALOptions struct {
	// SegmentSize is the target size of a segment file in bytes: a new segment is started
	// when the next frame would not fit (a single larger frame gets a segment of its own).
	// Default 64 MiB; allowed 4 KiB to 1 GiB. Larger segments mean fewer files and
	// renames; smaller ones let compaction reclaim space sooner.
	SegmentSize int64
	// UnsafeNoSync skips every fsync. A crash may then lose or tear acknowledged writes.
	// For tests and benchmarks only; never set it where the data matters.
	UnsafeNoSync bool
	// CacheEntries is how many of each partition's most recent entries are kept in memory
	// so that a leader re-reading them for a follower does not touch the disk. Default 128;
	// a negative value disables the cache. Cached entries share memory with the batch that
	// saved them.
	CacheEntries int
	// Logger receives recovery notices (a torn tail cut off, leftover files removed) and
	// segment deletions. Default slog.Default().
	Logger *slog.Logger
}

// validate checks the options and fills in defaults.
func (o WALOptions) validate() (WALOptions, error) {
	setDefault(&o.SegmentSize, defaultWALSegmentSize)
	setDefault(&o.CacheEntries, defaultWALCacheEntries)
	setDefault(&o.Logger, slog.Default())
	if o.SegmentSize < minWALSegmentSize || o.SegmentSize > maxWALSegmentSize {
		return o, fmt.Errorf("wal: SegmentSize %d outside [%d, %d]", o.SegmentSize, minWALSegmentSize, maxWALSegmentSize)
	}
	if o.CacheEntries < 0 {
		o.CacheEntries = 0 // documented: a negative value disables the cache
	}
	return o, nil
}

// WAL is the write-ahead log shared by all partitions of a node; it implements Storage.
// See the comment at the top of wal_format.go for the byte format and the crash assumptions.
type WAL struct {
	dir  string
	opts WALOptions
	log  *slog.Logger
	fs   walFS
	lock *dirLock // held from OpenWAL to Close

	// Group commit (see submit): the Saves and Compacts waiting, and whether a caller is
	// committing them.
	qmu     sync.Mutex
	queue   []*walRequest
	leading bool
	qclosed bool
	// lastRound is how many requests the last round carried.
	lastRound int
	idle      *sync.Cond // on qmu: leading became false

	mu     sync.RWMutex
	parts  map[uint32]*walPartition
	segs   []*walSegment // contiguous sequence numbers; the last is active
	err    error         // sticky write failure
	closed bool

	bufs sync.Pool // large Save buffers for reuse, see walPooledPayload

	// Owned by the caller that leads the commits (see submit).
	frame   []byte
	view    map[uint32]walView
	scratch []byte
	zeroes  []byte // a buffer of zeroes for zeroAhead
}

var _ Storage = (*WAL)(nil)

// OpenWAL opens (creating it if needed) the WAL in dir, recovering its state from the
// segments there. See WALOptions for the options.
//
// The directory is locked for as long as the WAL is open: a second OpenWAL of it, in this
// process or another, fails at once with an error wrapping ErrDirLocked that names the
// holder, and touches nothing.
func OpenWAL(dir string, opts WALOptions) (*WAL, error) {
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	w, err := openWAL(dir, opts, osFS{})
	if err != nil {
		_ = lock.unlock()
		return nil, err
	}
	w.lock = lock
	return w, nil
}

func openWAL(dir string, opts WALOptions, fs walFS) (*WAL, error) {
	opts, err := opts.validate()
	if err != nil {
		return nil, err
	}
	w := &WAL{
		dir: dir, opts: opts, log: opts.Logger, fs: fs,
		parts: make(map[uint32]*walPartition),
		view:  make(map[uint32]walView),
	}
	w.idle = sync.NewCond(&w.qmu)
	if err := fs.MkdirAll(dir); err != nil {
		return nil, fmt.Errorf("wal: create dir %s: %w", dir, err)
	}
	if err := w.recover(); err != nil {
		w.closeFiles()
		return nil, err
	}
	return w, nil
}

// Compact records that a partition no longer needs the entries up to and including index,
// whose term is term. If the entry stored at index has another term, or index is beyond the
// last entry, the whole stored log of the partition is dropped (a snapshot replaces it).
// The mark is durable when Compact returns; segments nobody needs are deleted then.
func (w *WAL) Compact(partition uint32, index, term uint64) error {
	if index > maxWALIndex {
		return fmt.Errorf("wal: partition %d: compaction index %d out of range", partition, index)
	}
	return w.submit(&walRequest{compact: &walCompact{partition: partition, index: index, term: term}})
}

// HardState returns the last saved hard state of a partition (zero if none).
func (w *WAL) HardState(partition uint32) (HardState, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return HardState{}, ErrWALClosed
	}
	if ps := w.parts[partition]; ps != nil {
		return ps.hs, nil
	}
	return HardState{}, nil
}

// FirstIndex returns the index of the first stored entry of a partition: its compaction
// point + 1.
func (w *WAL) FirstIndex(partition uint32) uint64 {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if ps := w.parts[partition]; ps != nil {
		return ps.first()
	}
	return 1
}

// LastIndex returns the index of the last stored entry of a partition, or FirstIndex-1.
func (w *WAL) LastIndex(partition uint32) uint64 {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if ps := w.parts[partition]; ps != nil {
		return ps.last()
	}
	return 0
}

// Term returns the term of the entry at index from memory, without reading the disk.
func (w *WAL) Term(partition uint32, index uint64) (uint64, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	ps := w.parts[partition]
	if ps == nil {
		ps = &walPartition{}
	}
	switch {
	case index < ps.compactIndex:
		return 0, ErrCompacted
	case index == ps.compactIndex:
		return ps.compactTerm, nil
	case index > ps.last():
		return 0, ErrUnavailable
	}
	return ps.locs[index-ps.first()].term, nil
}

// Entries returns the entries of a partition in [lo, hi), as many as fit in maxBytes
// (counting Entry sizes; at least one). Recent entries come from memory, older ones from
// the segment files. The returned entries may share memory with the WAL's cache: callers
// must not modify their Data.
func (w *WAL) Entries(partition uint32, lo, hi, maxBytes uint64) ([]Entry, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return nil, ErrWALClosed
	}
	ps := w.parts[partition]
	if ps == nil {
		ps = &walPartition{}
	}
	if lo < ps.first() {
		return nil, ErrCompacted
	}
	if hi > ps.last()+1 {
		return nil, ErrUnavailable
	}
	if lo >= hi {
		return nil, nil
	}
	// How many entries fit the budget; the record size is the entry size + 5.
	n, total := 0, uint64(0)
	for idx := lo; idx < hi; idx++ {
		total += uint64(ps.locs[idx-ps.first()].size) - 5
		if n > 0 && total > maxBytes {
			break
		}
		n++
	}
	if r := ps.recent; len(r) > 0 && r[0].Index <= lo {
		i := lo - r[0].Index
		return slices.Clone(r[i : i+uint64(n)]), nil
	}
	out := make([]Entry, 0, n)
	locs := ps.locs[lo-ps.first() : lo-ps.first()+uint64(n)]
	for len(locs) > 0 {
		// One read for a run of records that lie back to back in one segment.
		run, size := 1, locs[0].size
		for run < len(locs) && locs[run].seg == locs[0].seg && locs[run].off == locs[run-1].off+locs[run-1].size {
			size += locs[run].size
			run++
		}
		buf := make([]byte, size)
		if err := w.readRecord(locs[0], buf); err != nil {
			return nil, err
		}
		for pos := 0; pos < len(buf); {
			r, err := decodeWALRecord(buf[pos:])
			want := lo + uint64(len(out))
			if err != nil || r.typ != walRecEntry || r.partition != partition || r.index != want {
				return nil, fmt.Errorf("%w: %s: offset %d: expected entry %d of partition %d",
					ErrCorrupt, walSegmentName(uint64(locs[0].seg)), locs[0].off+uint32(pos), want, partition)
			}
			out = append(out, Entry{Term: r.term, Index: r.index, Kind: r.kind, ID: r.id,
				Type: string(r.typeName), Data: r.data[:len(r.data):len(r.data)]})
			pos += r.size
		}
		locs = locs[run:]
	}
	return out, nil
}

// Close waits for the Saves and Compacts already queued to finish, then closes the files.
// Calls after Close fail with ErrWALClosed.
func (w *WAL) Close() error {
	w.qmu.Lock()
	if w.qclosed {
		w.qmu.Unlock()
		return nil
	}
	w.qclosed = true
	for w.leading {
		w.idle.Wait()
	}
	w.qmu.Unlock()
	w.mu.Lock()
	w.closed = true
	failed := w.err != nil
	w.mu.Unlock()
	var err error
	if !failed && len(w.segs) > 0 {
		// Leave the files as long as their frames; a WAL that failed writes nothing more
		// (its zeroes are a tail that recovery cuts off).
		err = w.trimZeroes(w.segs[len(w.segs)-1])
	}
	w.closeFiles()
	return errors.Join(err, w.lock.unlock())
}

func (w *WAL) closeFiles() {
	for _, s := range w.segs {
		s.f.Close()
	}
}
