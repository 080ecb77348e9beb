package kommander

// The write-ahead log (WAL): one log per node, shared by every partition, so that a single
// write and a single fsync make a whole batch of entries and hard states from many Raft
// groups durable at once.
//
// # Files
//
// The WAL is a directory of segment files named by sequence number, 16 lower-case hex
// digits and ".wal" ("0000000000000001.wal"). Sequence numbers are contiguous: a gap is
// corruption. A segment is created as "<name>.tmp", its header written and fsynced, then
// renamed to its final name and the directory fsynced; leftover ".tmp" files are removed on
// open. All integers are little-endian. CRC means CRC-32C (Castagnoli).
//
// Segment header, 24 bytes:
//
//	0   8  magic "kmdrwal" followed by the format version byte 0x01
//	8   8  sequence number (uint64), equal to the one in the file name
//	16  4  CRC of bytes 0..15
//	20  4  zero (reserved)
//
// The header is followed by frames, back to back, until the end of the file, except that
// the last segment may end in zeroes written ahead of the frames (see walZeroAhead): opening
// cuts them off like a torn tail; Close and the start of a new segment truncate them. A
// frame is the unit of atomicity: the committing caller writes one frame per write and
// fsync, holding every batch (Save call) gathered in that round, so each batch lies wholly
// inside one frame. Frame, 12 bytes of header then the payload:
//
//	0   4  payload length n (uint32), 1 <= n <= maxWALFrame
//	4   4  CRC of the payload
//	8   4  header CRC: CRC of bytes 0..7, then the segment's sequence number (uint64) and
//	       this frame's byte offset in the file (uint64). Binding the frame to its place
//	       means zeroes, stale bytes or a frame-shaped run inside user data never pass as a
//	       frame at another position.
//	12  n  records, back to back; the payload ends exactly at the end of its last record
//
// Records (first byte is the type; lengths are checked against the payload before use):
//
//	1 entry:       partition u32, index u64, term u64, kind u8, id u64, type length u16,
//	               data length u32, type bytes, data bytes            (36 bytes + type + data)
//	2 hard state:  partition u32, term u64, commit u64, vote length u16, vote bytes
//	3 truncation:  partition u32, from index u64: entries at and after it are dropped
//	4 compaction:  partition u32, index u64, term u64: entries up to index are not needed
//	5 membership:  partition u32, body length u32, body: reserved for membership records;
//	               read and bounds-checked, otherwise ignored by this version
//	6 reset:       partition u32, compaction index u64, compaction term u64: the partition's
//	               log restarts after that point; its hard state and its live entries,
//	               carried forward from an old segment, follow in the same frame
//
// The in-memory state is the result of applying the records in order: a partition's entries
// always follow index after index from its compaction point + 1. Save writes a truncation
// record before entries whose first index is at or below the stored last index. Entries
// that follow a gap are expected only when their predecessors lived in deleted segments:
// a later compaction, reset or truncation record must then cover the gap, or opening fails
// with ErrCorrupt (a segment was lost).
//
// # Crash assumptions
//
// What we rely on: after fsync (fdatasync on Linux, F_FULLFSYNC on macOS, FlushFileBuffers
// on Windows) returns success, the bytes written before it are on stable storage; after the
// directory is fsynced, a create, rename or remove in it is. What a crash may do: tear the
// one write in flight, anywhere — any of its bytes may be lost, zeroed or written, in any
// order — and extend the file with zeroes. What it may not do: change bytes that an fsync
// already made durable (a flipped bit there is corruption, reported, never repaired).
//
// Since a write is fsynced before the next one starts (and a failed fsync stops all writes,
// see below), only the last frame of the last segment can be torn. Recovery on open:
// every frame of every segment is checked (length, header CRC, payload CRC, record syntax).
// A bad frame in any segment but the last is ErrCorrupt naming the file and byte offset. In
// the last segment a bad frame at offset X is a torn tail when no valid frame starts
// anywhere after X: the file is truncated at X, fsynced and the loss logged (no caller was
// told that frame was durable). If a valid frame does follow, the damage is not a torn
// tail and opening fails with ErrCorrupt. The one case this cannot tell apart: a bit that
// flips, after the fsync, inside the very last frame looks like a torn write, and that
// frame is dropped.
//
// A failed write or fsync is sticky (fsyncgate: after a failed fsync the kernel may have
// dropped the dirty pages and a retry would report success for lost data): the Save that saw
// it and every later Save fail, and the in-memory state never shows the failed frame.
//
// # Space
//
// Segments are deleted oldest first, each removal followed by a directory fsync, once no
// partition needs them: a partition needs the segments from the one holding its first live
// entry, its latest hard state or its latest compaction mark. When a new segment is started,
// the partitions that pin the oldest segment (typically idle ones) are carried forward if
// their live bytes add up to at most a quarter segment per segment beyond the active one: a
// reset record, the hard state and the live entries of each are rewritten into the active
// segment, a partition never split across frames, after which the old segment can go.
// Disk use thus stays a small multiple of the live data plus a few segments. (A partition
// with more than maxWALFrame/2 live bytes is never carried; its own compaction frees it.)

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
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

// Format limits and sizes; see the file comment.
const (
	walSegmentHeaderSize = 24
	walFrameHeaderSize   = 12
	walEntryHeaderSize   = 36
	// maxWALFrame bounds a frame's payload and so any allocation made while reading one.
	maxWALFrame = 256 << 20
	// walRoundSoftLimit stops a round from gathering more batches into its frame.
	walRoundSoftLimit = 8 << 20
	walMagic          = "kmdrwal\x01"
	// maxWALIndex bounds log indexes, so that index arithmetic can never overflow.
	maxWALIndex = 1 << 62

	walRecEntry      = 1
	walRecHardState  = 2
	walRecTruncate   = 3
	walRecCompact    = 4
	walRecMembership = 5
	walRecReset      = 6

	defaultWALSegmentSize  = 64 << 20
	minWALSegmentSize      = 4 << 10
	maxWALSegmentSize      = 1 << 30
	defaultWALCacheEntries = 128

	// walZeroAhead is how far ahead of its frames the active segment's file is extended
	// with written zeroes. An fdatasync of data written inside the file's length flushes no
	// metadata, which on ext4 costs about half the time and CPU of one that must commit a
	// new file size; the size then changes once per walZeroAhead bytes instead of once per
	// frame. Recovery already treats a zero tail as the end of the log.
	walZeroAhead = 1 << 20
)

var walCRC = crc32.MakeTable(crc32.Castagnoli)

// zeroFrameHeader is the placeholder a frame starts with until writeFrame fills it in.
var zeroFrameHeader [walFrameHeaderSize]byte

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
	if o.SegmentSize == 0 {
		o.SegmentSize = defaultWALSegmentSize
	}
	if o.SegmentSize < minWALSegmentSize || o.SegmentSize > maxWALSegmentSize {
		return o, fmt.Errorf("wal: SegmentSize %d outside [%d, %d]", o.SegmentSize, minWALSegmentSize, maxWALSegmentSize)
	}
	if o.CacheEntries == 0 {
		o.CacheEntries = defaultWALCacheEntries
	}
	if o.CacheEntries < 0 {
		o.CacheEntries = 0
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}

// walFile is the part of a file the WAL uses; tests wrap it to inject failures.
type walFile interface {
	io.ReaderAt
	io.WriterAt
	// Sync makes written data durable (fdatasync where the platform has it).
	Sync() error
	Truncate(size int64) error
	Size() (int64, error)
	Close() error
}

// walFS is the part of the file system the WAL uses; tests wrap it to inject failures.
type walFS interface {
	OpenFile(name string, flag int) (walFile, error)
	Remove(name string) error
	Rename(from, to string) error
	SyncDir(dir string) error
	ReadDir(dir string) ([]string, error)
	MkdirAll(dir string) error
}

// osFS is the real file system.
type osFS struct{}

type osFile struct{ *os.File }

func (f osFile) Sync() error { return dataSync(f.File) }

func (f osFile) Size() (int64, error) {
	st, err := f.File.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

func (osFS) OpenFile(name string, flag int) (walFile, error) {
	f, err := os.OpenFile(name, flag, 0o600)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}
func (osFS) Remove(name string) error     { return os.Remove(name) }
func (osFS) Rename(from, to string) error { return os.Rename(from, to) }
func (osFS) SyncDir(dir string) error     { return syncDir(dir) }
func (osFS) MkdirAll(dir string) error    { return os.MkdirAll(dir, 0o700) }
func (osFS) ReadDir(dir string) ([]string, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(des))
	for _, de := range des {
		if de.Type().IsRegular() {
			names = append(names, de.Name())
		}
	}
	return names, nil
}

// walSegment is one segment file.
type walSegment struct {
	seq  uint64
	path string
	f    walFile
	size int64 // bytes of valid frames; the write offset for the active segment
	// end is the file's length: past size, the active segment holds zeroes written ahead
	// of the frames (see walZeroAhead); other segments end at size.
	end int64
}

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

// walRequest is one Save or Compact waiting to be committed.
type walRequest struct {
	batch   []Update
	payload []byte   // room for a frame header, then the batch's records (no truncations)
	updOff  []uint32 // start of each update's records in payload
	entOff  []uint32 // offset of each entry record relative to its update's start
	compact *walCompact

	updBase []uint32 // set when committed: start of each update's records in the frame payload
	trunc   []bool   // set when committed: whether each update needs a truncation record
	err     error
	done    chan struct{} // closed when err is final
	lead    chan struct{} // closed when this caller is to lead the commits
}

type walCompact struct {
	partition   uint32
	index, term uint64
}

// walView is a partition's log bounds as seen by the batches staged in a round.
type walView struct{ compactIndex, last uint64 }

// WAL is the write-ahead log shared by all partitions of a node; it implements Storage.
// See the comment at the top of wal.go for the byte format and the crash assumptions.
type WAL struct {
	dir  string
	opts WALOptions
	log  *slog.Logger
	fs   walFS

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
func OpenWAL(dir string, opts WALOptions) (*WAL, error) {
	return openWAL(dir, opts, osFS{})
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

func walSegmentName(seq uint64) string { return fmt.Sprintf("%016x.wal", seq) }

// recover lists the segments, replays them and prepares the active segment.
func (w *WAL) recover() error {
	names, err := w.fs.ReadDir(w.dir)
	if err != nil {
		return fmt.Errorf("wal: list %s: %w", w.dir, err)
	}
	var seqs []uint64
	for _, n := range names {
		if strings.HasSuffix(n, ".wal.tmp") {
			w.log.Info("wal: removing unfinished segment", "file", n)
			if err := w.fs.Remove(filepath.Join(w.dir, n)); err != nil {
				return fmt.Errorf("wal: remove %s: %w", n, err)
			}
			continue
		}
		base, ok := strings.CutSuffix(n, ".wal")
		if !ok || len(base) != 16 {
			continue
		}
		seq, err := strconv.ParseUint(base, 16, 64)
		if err != nil || walSegmentName(seq) != n {
			continue
		}
		seqs = append(seqs, seq)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	for i, seq := range seqs {
		if seq == 0 || seq > 1<<32-1 {
			return fmt.Errorf("%w: segment %s: sequence number out of range", ErrCorrupt, walSegmentName(seq))
		}
		if i > 0 && seq != seqs[i-1]+1 {
			return fmt.Errorf("%w: segment %s missing before %s", ErrCorrupt, walSegmentName(seqs[i-1]+1), walSegmentName(seq))
		}
	}
	for i, seq := range seqs {
		path := filepath.Join(w.dir, walSegmentName(seq))
		f, err := w.fs.OpenFile(path, os.O_RDWR)
		if err != nil {
			return fmt.Errorf("wal: open segment %s: %w", path, err)
		}
		s := &walSegment{seq: seq, path: path, f: f}
		w.segs = append(w.segs, s)
		if err := w.replaySegment(s, i == len(seqs)-1); err != nil {
			return err
		}
	}
	for p, ps := range w.parts {
		if ps.hole {
			return fmt.Errorf("%w: partition %d: entries missing before index %d (a segment was lost)", ErrCorrupt, p, ps.first())
		}
	}
	if len(w.segs) == 0 {
		return w.createSegment(1)
	}
	return nil
}

// replaySegment checks a segment's frames and applies their records.
func (w *WAL) replaySegment(s *walSegment, last bool) error {
	size, err := s.f.Size()
	if err != nil {
		return fmt.Errorf("wal: stat %s: %w", s.path, err)
	}
	var hdr [walSegmentHeaderSize]byte
	if size < walSegmentHeaderSize {
		return fmt.Errorf("%w: %s: offset 0: file shorter than the segment header", ErrCorrupt, s.path)
	}
	if _, err := s.f.ReadAt(hdr[:], 0); err != nil {
		return fmt.Errorf("wal: read %s: %w", s.path, err)
	}
	if string(hdr[:8]) != walMagic || binary.LittleEndian.Uint64(hdr[8:]) != s.seq ||
		crc32.Checksum(hdr[:16], walCRC) != binary.LittleEndian.Uint32(hdr[16:]) {
		return fmt.Errorf("%w: %s: offset 0: bad segment header", ErrCorrupt, s.path)
	}
	off := int64(walSegmentHeaderSize)
	for off < size {
		payload, reason, err := w.readFrame(s, off, size)
		if err != nil {
			return err
		}
		if reason != "" {
			if !last {
				return fmt.Errorf("%w: %s: offset %d: %s", ErrCorrupt, s.path, off, reason)
			}
			next, err := w.findFrame(s, off+1, size)
			if err != nil {
				return err
			}
			if next >= 0 {
				return fmt.Errorf("%w: %s: offset %d: %s, and a valid frame follows at offset %d", ErrCorrupt, s.path, off, reason, next)
			}
			zeroes, err := w.allZero(s, off, size)
			if err != nil {
				return err
			}
			if zeroes {
				// Written ahead of the frames (walZeroAhead) before an unclean stop.
				w.log.Info("wal: cutting off zeroes after the last frame", "file", s.path, "offset", off, "bytes", size-off)
			} else {
				w.log.Warn("wal: cutting off torn tail (never acknowledged)", "file", s.path, "offset", off, "bytes", size-off, "reason", reason)
			}
			if err := s.f.Truncate(off); err != nil {
				return fmt.Errorf("wal: truncate %s at %d: %w", s.path, off, err)
			}
			if !w.opts.UnsafeNoSync {
				if err := s.f.Sync(); err != nil {
					return fmt.Errorf("wal: sync %s: %w", s.path, err)
				}
			}
			break
		}
		if err := w.replayFrame(s, off, payload); err != nil {
			return err
		}
		off += walFrameHeaderSize + int64(len(payload))
	}
	s.size, s.end = off, off
	return nil
}

// frameHeaderCRC is the header CRC of a frame at off in segment seq.
func frameHeaderCRC(hdr []byte, seq uint64, off int64) uint32 {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:], seq)
	binary.LittleEndian.PutUint64(b[8:], uint64(off))
	return crc32.Update(crc32.Checksum(hdr[:8], walCRC), walCRC, b[:])
}

// checkFrameHeader returns the payload length of a valid frame header at off, or a reason.
func checkFrameHeader(hdr []byte, seq uint64, off, size int64) (int64, string) {
	n := int64(binary.LittleEndian.Uint32(hdr))
	switch {
	case n == 0:
		return 0, "zero frame length"
	case n > maxWALFrame:
		return 0, "frame length beyond limit"
	case n > size-off-walFrameHeaderSize:
		return 0, "frame runs past the end of the file"
	case frameHeaderCRC(hdr, seq, off) != binary.LittleEndian.Uint32(hdr[8:]):
		return 0, "frame header checksum mismatch"
	}
	return n, ""
}

// readFrame reads and checks the frame at off, returning its payload or why it is bad.
// An I/O error is returned as such: it says nothing about the bytes, so it must never be
// mistaken for a torn tail and cut off. The payload buffer is reused by the next call.
func (w *WAL) readFrame(s *walSegment, off, size int64) ([]byte, string, error) {
	var hdr [walFrameHeaderSize]byte
	if size-off < walFrameHeaderSize {
		return nil, "file ends inside a frame header", nil
	}
	if _, err := s.f.ReadAt(hdr[:], off); err != nil {
		return nil, "", fmt.Errorf("wal: read %s at offset %d: %w", s.path, off, err)
	}
	n, reason := checkFrameHeader(hdr[:], s.seq, off, size)
	if reason != "" {
		return nil, reason, nil
	}
	if int64(cap(w.scratch)) < n {
		w.scratch = make([]byte, n) // n <= remaining file size and <= maxWALFrame
	}
	payload := w.scratch[:n]
	if _, err := s.f.ReadAt(payload, off+walFrameHeaderSize); err != nil {
		return nil, "", fmt.Errorf("wal: read %s at offset %d: %w", s.path, off+walFrameHeaderSize, err)
	}
	if crc32.Checksum(payload, walCRC) != binary.LittleEndian.Uint32(hdr[4:]) {
		return nil, "frame payload checksum mismatch", nil
	}
	return payload, "", nil
}

// allZero reports whether the bytes of s in [from, size) are all zero, reading in chunks.
func (w *WAL) allZero(s *walSegment, from, size int64) (bool, error) {
	buf := make([]byte, min(64<<10, max(size-from, 0)))
	for c := from; c < size; c += int64(len(buf)) {
		b := buf[:min(int64(len(buf)), size-c)]
		if _, err := s.f.ReadAt(b, c); err != nil {
			return false, fmt.Errorf("wal: read %s at %d: %w", s.path, c, err)
		}
		for _, x := range b {
			if x != 0 {
				return false, nil
			}
		}
	}
	return true, nil
}

// findFrame returns the offset of the first valid frame starting in [from, size), or -1.
// It reads the file in chunks, so its memory use does not depend on the file size.
func (w *WAL) findFrame(s *walSegment, from, size int64) (int64, error) {
	const chunk = 1 << 20
	buf := make([]byte, min(chunk+walFrameHeaderSize, max(size-from, 0)))
	for c := from; c+walFrameHeaderSize <= size; c += chunk {
		n := min(int64(len(buf)), size-c)
		b := buf[:n]
		if _, err := s.f.ReadAt(b, c); err != nil {
			return 0, fmt.Errorf("wal: read %s at %d: %w", s.path, c, err)
		}
		for i := int64(0); i < chunk && i+walFrameHeaderSize <= n; i++ {
			if b[i] == 0 && b[i+1] == 0 && b[i+2] == 0 && b[i+3] == 0 {
				continue // zero length: the common case in a zero-filled tail
			}
			if _, reason := checkFrameHeader(b[i:], s.seq, c+i, size); reason != "" {
				continue
			}
			_, reason, err := w.readFrame(s, c+i, size)
			if err != nil {
				return 0, err
			}
			if reason == "" {
				return c + i, nil
			}
		}
	}
	return -1, nil
}

// walRecord is a decoded record; byte fields alias the payload.
type walRecord struct {
	typ       byte
	partition uint32
	index     uint64 // entry index, truncation point, compaction or reset index
	term      uint64 // entry, hard state, compaction or reset term
	kind      EntryKind
	id        uint64
	commit    uint64
	typeName  []byte // entry type, or hard state vote
	data      []byte // entry data, or membership body
	size      int    // encoded length
}

var errWALShortRecord = errors.New("record runs past the end of the frame")

// decodeWALRecord decodes the record at the start of b.
func decodeWALRecord(b []byte) (walRecord, error) {
	var r walRecord
	if len(b) < 5 {
		return r, errWALShortRecord
	}
	le := binary.LittleEndian
	r.typ, r.partition = b[0], le.Uint32(b[1:])
	switch r.typ {
	case walRecEntry:
		if len(b) < walEntryHeaderSize {
			return r, errWALShortRecord
		}
		r.index, r.term, r.kind, r.id = le.Uint64(b[5:]), le.Uint64(b[13:]), EntryKind(b[21]), le.Uint64(b[22:])
		tl, dl := int(le.Uint16(b[30:])), int64(le.Uint32(b[32:]))
		if int64(len(b)-walEntryHeaderSize) < int64(tl)+dl {
			return r, errWALShortRecord
		}
		r.typeName = b[walEntryHeaderSize : walEntryHeaderSize+tl]
		r.data = b[walEntryHeaderSize+tl : walEntryHeaderSize+tl+int(dl)]
		r.size = walEntryHeaderSize + tl + int(dl)
		if r.kind > entryConfig {
			return r, fmt.Errorf("unknown entry kind %d", r.kind)
		}
		if r.index == 0 || r.index > maxWALIndex {
			return r, fmt.Errorf("entry index %d out of range", r.index)
		}
	case walRecHardState:
		if len(b) < 23 {
			return r, errWALShortRecord
		}
		r.term, r.commit = le.Uint64(b[5:]), le.Uint64(b[13:])
		vl := int(le.Uint16(b[21:]))
		if len(b)-23 < vl {
			return r, errWALShortRecord
		}
		r.typeName = b[23 : 23+vl]
		r.size = 23 + vl
	case walRecTruncate:
		if len(b) < 13 {
			return r, errWALShortRecord
		}
		r.index, r.size = le.Uint64(b[5:]), 13
	case walRecCompact, walRecReset:
		if len(b) < 21 {
			return r, errWALShortRecord
		}
		r.index, r.term, r.size = le.Uint64(b[5:]), le.Uint64(b[13:]), 21
		if r.index > maxWALIndex {
			return r, fmt.Errorf("index %d out of range", r.index)
		}
	case walRecMembership:
		if len(b) < 9 {
			return r, errWALShortRecord
		}
		bl := int64(le.Uint32(b[5:]))
		if int64(len(b)-9) < bl {
			return r, errWALShortRecord
		}
		r.data, r.size = b[9:9+bl], 9+int(bl)
	default:
		return r, fmt.Errorf("unknown record type %d", r.typ)
	}
	return r, nil
}

func appendWALEntry(b []byte, partition uint32, e *Entry) []byte {
	le := binary.LittleEndian
	b = append(b, walRecEntry)
	b = le.AppendUint32(b, partition)
	b = le.AppendUint64(b, e.Index)
	b = le.AppendUint64(b, e.Term)
	b = append(b, byte(e.Kind))
	b = le.AppendUint64(b, e.ID)
	b = le.AppendUint16(b, uint16(len(e.Type)))
	b = le.AppendUint32(b, uint32(len(e.Data)))
	b = append(b, e.Type...)
	return append(b, e.Data...)
}

func appendWALHardState(b []byte, partition uint32, hs HardState) []byte {
	le := binary.LittleEndian
	b = append(b, walRecHardState)
	b = le.AppendUint32(b, partition)
	b = le.AppendUint64(b, hs.Term)
	b = le.AppendUint64(b, hs.Commit)
	b = le.AppendUint16(b, uint16(len(hs.Vote)))
	return append(b, hs.Vote...)
}

func appendWALTruncate(b []byte, partition uint32, from uint64) []byte {
	b = append(b, walRecTruncate)
	b = binary.LittleEndian.AppendUint32(b, partition)
	return binary.LittleEndian.AppendUint64(b, from)
}

// appendWALMark appends a compaction or reset record.
func appendWALMark(b []byte, typ byte, partition uint32, index, term uint64) []byte {
	b = append(b, typ)
	b = binary.LittleEndian.AppendUint32(b, partition)
	b = binary.LittleEndian.AppendUint64(b, index)
	return binary.LittleEndian.AppendUint64(b, term)
}

func (w *WAL) part(p uint32) *walPartition {
	ps := w.parts[p]
	if ps == nil {
		ps = &walPartition{}
		w.parts[p] = ps
	}
	return ps
}

// replayFrame applies the records of a valid frame found at off during recovery.
func (w *WAL) replayFrame(s *walSegment, off int64, payload []byte) error {
	seg := uint32(s.seq)
	base := off + walFrameHeaderSize
	for pos := 0; pos < len(payload); {
		r, err := decodeWALRecord(payload[pos:])
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%w: %s: offset %d: record at offset %d: %s", ErrCorrupt, s.path, off, base+int64(pos), fmt.Sprintf(format, args...))
		}
		if err != nil {
			return bad("%v", err)
		}
		ps := w.part(r.partition)
		switch r.typ {
		case walRecEntry:
			switch {
			case r.index == ps.last()+1:
			case r.index > ps.last()+1:
				// Its predecessors were in deleted segments: a later compaction or reset
				// record must cover them, which recover checks.
				ps.reset(r.index-1, 0)
				ps.hole = true
			default:
				return bad("entry %d of partition %d does not follow its last index %d", r.index, r.partition, ps.last())
			}
			ps.appendLoc(walLoc{term: r.term, seg: seg, off: uint32(base) + uint32(pos), size: uint32(r.size)})
		case walRecHardState:
			ps.hs = HardState{Term: r.term, Vote: string(r.typeName), Commit: r.commit}
			ps.hasHS, ps.hsSeg = true, seg
		case walRecTruncate:
			if ps.hole && r.index <= ps.first() {
				// Entries before the gap were replaced, not compacted: the log restarts at
				// the truncation point (the entries that follow start there).
				from := max(r.index, 1)
				ps.reset(from-1, 0)
				ps.hole = from > 1
			} else {
				ps.truncateFrom(r.index)
			}
		case walRecCompact:
			if ps.hole && r.index+1 >= ps.first() {
				ps.hole = false
				if r.index == ps.compactIndex {
					ps.compactTerm = r.term // the term the gap left unknown
				}
			}
			ps.compact(r.index, r.term)
			ps.hasCompact, ps.compactSeg = true, seg
		case walRecReset:
			ps.reset(r.index, r.term)
			ps.hole = false
			ps.hasCompact, ps.compactSeg = true, seg
		case walRecMembership:
			// Reserved: nothing to apply in this version.
		}
		pos += r.size
	}
	return nil
}

// createSegment creates segment seq (header fsynced, renamed into place, directory
// fsynced) and makes it the active segment.
func (w *WAL) createSegment(seq uint64) error {
	if seq > 1<<32-1 {
		return fmt.Errorf("wal: segment sequence numbers exhausted")
	}
	path := filepath.Join(w.dir, walSegmentName(seq))
	tmp := path + ".tmp"
	f, err := w.fs.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return fmt.Errorf("wal: create segment %s: %w", tmp, err)
	}
	// The header, followed by zeroes written ahead (see walZeroAhead), in one write.
	end := int64(walSegmentHeaderSize)
	if !w.opts.UnsafeNoSync {
		end = max(end, min(walZeroAhead, w.opts.SegmentSize))
	}
	hdr := make([]byte, end)
	copy(hdr, walMagic)
	binary.LittleEndian.PutUint64(hdr[8:], seq)
	binary.LittleEndian.PutUint32(hdr[16:], crc32.Checksum(hdr[:16], walCRC))
	err = writeFull(f, hdr, 0)
	if err == nil && !w.opts.UnsafeNoSync {
		err = f.Sync()
	}
	if err == nil {
		err = w.fs.Rename(tmp, path)
	}
	if err == nil && !w.opts.UnsafeNoSync {
		err = w.fs.SyncDir(w.dir)
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("wal: create segment %s: %w", path, err)
	}
	w.mu.Lock()
	w.segs = append(w.segs, &walSegment{seq: seq, path: path, f: f, size: walSegmentHeaderSize, end: end})
	w.mu.Unlock()
	return nil
}

func writeFull(f walFile, b []byte, off int64) error {
	n, err := f.WriteAt(b, off)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	return err
}

// Save writes every update in the batch as part of one frame and returns once that frame is
// durable. Saves from many goroutines are gathered into one write and one fsync. An invalid
// update (indexes not consecutive, a gap after the last index, entries at or below the
// compaction point) fails only its own Save; a failed write or fsync fails this and every
// later Save. The entries' Data is copied; the caller may reuse it once Save returns.
func (w *WAL) Save(batch []Update) error {
	req, err := encodeWALBatch(batch, &w.bufs)
	if err != nil {
		return err
	}
	if req == nil {
		w.mu.RLock()
		defer w.mu.RUnlock()
		if w.closed {
			return ErrWALClosed
		}
		return w.err
	}
	return w.submit(req)
}

// submit queues a request and waits for its outcome. Group commit needs no goroutine of
// its own: the caller that finds nobody committing becomes the leader and commits rounds
// (everything queued at that moment: one frame, one write, one fsync) until its own request
// is done, then hands the lead to the oldest waiting caller. A lone caller thus writes and
// fsyncs in its own goroutine without any hand-off, and concurrent callers share fsyncs.
func (w *WAL) submit(req *walRequest) error {
	req.done = make(chan struct{})
	req.lead = make(chan struct{})
	w.qmu.Lock()
	if w.qclosed {
		w.qmu.Unlock()
		return ErrWALClosed
	}
	w.queue = append(w.queue, req)
	if !w.leading {
		w.leading = true
		w.qmu.Unlock()
		w.lead(req)
	} else {
		w.qmu.Unlock()
		select {
		case <-req.done:
		case <-req.lead:
			w.lead(req)
		}
	}
	<-req.done
	return req.err
}

// lead commits rounds until self is done, then passes the lead on.
func (w *WAL) lead(self *walRequest) {
	for {
		w.qmu.Lock()
		select {
		case <-self.done:
			if len(w.queue) > 0 {
				close(w.queue[0].lead)
			} else {
				w.leading = false
				w.idle.Broadcast()
			}
			w.qmu.Unlock()
			return
		default:
		}
		if w.lastRound > 1 {
			// Callers are concurrent: let those the previous round woke queue up again
			// first, so that this round carries them too; that is what turns concurrent
			// Saves into one fsync. A lone caller skips this: yielding right after an
			// fsync invites the scheduler to move it to another thread, which costs more
			// than the yield.
			w.qmu.Unlock()
			runtime.Gosched()
			w.qmu.Lock()
		}
		round := w.queue
		w.queue = nil
		w.lastRound = len(round)
		w.qmu.Unlock()
		w.commitQueued(round)
	}
}

// commitQueued commits the requests of a round in order: runs of Saves as one frame each
// (split only to keep frames below walRoundSoftLimit), a Compact on its own.
func (w *WAL) commitQueued(round []*walRequest) {
	for len(round) > 0 {
		if round[0].compact != nil {
			w.commitCompact(round[0])
			round = round[1:]
			continue
		}
		n, size := 0, 0
		for n < len(round) && round[n].compact == nil {
			add := len(round[n].payload) + 13*len(round[n].batch)
			if n > 0 && size+add > walRoundSoftLimit {
				break
			}
			size += add
			n++
		}
		w.commitRound(round[:n])
		w.recycle(round[:n])
		round = round[n:]
	}
}

// encodeWALBatch encodes a batch in the caller's goroutine, so that encoding runs in
// parallel; it returns nil for a batch with nothing to write.
func encodeWALBatch(batch []Update, bufs *sync.Pool) (*walRequest, error) {
	size, nents := 0, 0
	for i := range batch {
		u := &batch[i]
		if u.SaveHardState {
			if len(u.HardState.Vote) > 1<<16-1 {
				return nil, fmt.Errorf("wal: partition %d: vote longer than 65535 bytes", u.Partition)
			}
			size += 23 + len(u.HardState.Vote)
		}
		for j := range u.Entries {
			e := &u.Entries[j]
			if e.Index != u.Entries[0].Index+uint64(j) || e.Index == 0 || e.Index > maxWALIndex {
				return nil, fmt.Errorf("wal: partition %d: entry indexes not consecutive from %d: %d at position %d", u.Partition, u.Entries[0].Index, e.Index, j)
			}
			if len(e.Type) > 1<<16-1 || uint64(len(e.Data)) > maxWALFrame || e.Kind > entryConfig {
				return nil, fmt.Errorf("wal: partition %d: entry %d: type longer than 65535 bytes, data beyond %d bytes or unknown kind", u.Partition, e.Index, maxWALFrame)
			}
			size += walEntryHeaderSize + len(e.Type) + len(e.Data)
		}
		nents += len(u.Entries)
		if size > maxWALFrame-13*len(batch) {
			return nil, fmt.Errorf("wal: batch larger than %d bytes", maxWALFrame)
		}
	}
	if size == 0 {
		return nil, nil
	}
	req := &walRequest{
		batch:   batch,
		payload: payloadBuffer(bufs, walFrameHeaderSize+size),
		updOff:  make([]uint32, len(batch)),
		entOff:  make([]uint32, 0, nents),
	}
	for i := range batch {
		u := &batch[i]
		start := len(req.payload)
		req.updOff[i] = uint32(start)
		for j := range u.Entries {
			req.entOff = append(req.entOff, uint32(len(req.payload)-start))
			req.payload = appendWALEntry(req.payload, u.Partition, &u.Entries[j])
		}
		if u.SaveHardState {
			req.payload = appendWALHardState(req.payload, u.Partition, u.HardState)
		}
	}
	return req, nil
}

// walPooledPayload is the size from which a Save's buffer is recycled after its round
// instead of being left to the garbage collector (and its entries are not cached, since
// cached entries share the buffer). Clearing fresh large buffers costs as much as a copy.
const walPooledPayload = 64 << 10

// payloadBuffer returns a buffer of the given capacity with room for a frame header.
func payloadBuffer(bufs *sync.Pool, size int) []byte {
	if size >= walPooledPayload {
		if b, _ := bufs.Get().(*[]byte); b != nil && cap(*b) >= size {
			return (*b)[:walFrameHeaderSize]
		}
	}
	return make([]byte, walFrameHeaderSize, size)
}

// recycle returns the large Save buffers of a finished round to the pool.
func (w *WAL) recycle(round []*walRequest) {
	for _, r := range round {
		if cap(r.payload) >= walPooledPayload && cap(r.payload) <= walRoundSoftLimit {
			b := r.payload
			r.payload = nil
			w.bufs.Put(&b)
		}
	}
}

func (w *WAL) failure() error {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.err
}

func reply(reqs []*walRequest, err error) {
	for _, r := range reqs {
		if r.err == nil {
			r.err = err
		}
		close(r.done)
	}
}

// viewOf is a partition's bounds including the batches staged so far in this round.
func (w *WAL) viewOf(p uint32) walView {
	if v, ok := w.view[p]; ok {
		return v
	}
	ps := w.parts[p] // read without the lock: only the leading caller writes parts
	if ps == nil {
		return walView{}
	}
	return walView{compactIndex: ps.compactIndex, last: ps.last()}
}

// stage checks a Save against the logs as the earlier Saves of the round leave them, and
// notes which of its updates need a truncation record first.
func (w *WAL) stage(r *walRequest) error {
	type undo struct {
		p   uint32
		v   walView
		had bool
	}
	var undos []undo
	fail := func(err error) error {
		for i := len(undos) - 1; i >= 0; i-- {
			if undos[i].had {
				w.view[undos[i].p] = undos[i].v
			} else {
				delete(w.view, undos[i].p)
			}
		}
		return err
	}
	r.trunc = r.trunc[:0]
	for i := range r.batch {
		u := &r.batch[i]
		trunc := false
		if len(u.Entries) > 0 {
			v := w.viewOf(u.Partition)
			e0 := u.Entries[0].Index
			if e0 <= v.compactIndex {
				return fail(fmt.Errorf("wal: partition %d: entry %d at or below compaction point %d: %w", u.Partition, e0, v.compactIndex, ErrCompacted))
			}
			if e0 > v.last+1 {
				return fail(fmt.Errorf("wal: partition %d: entry %d leaves a gap after last index %d", u.Partition, e0, v.last))
			}
			trunc = e0 <= v.last
			old, had := w.view[u.Partition]
			undos = append(undos, undo{u.Partition, old, had})
			v.last = e0 + uint64(len(u.Entries)) - 1
			w.view[u.Partition] = v
		}
		r.trunc = append(r.trunc, trunc)
	}
	return nil
}

// assemble builds the round's frame from the accepted Saves, with their truncation records,
// and notes where each update's records start in the frame payload. A round of one Save
// without truncations is written straight from that Save's buffer, which keeps room for the
// frame header at its front: no copy.
func (w *WAL) assemble(round []*walRequest, accepted int) []byte {
	if accepted == 1 {
		for _, r := range round {
			if r.err == nil && !slices.Contains(r.trunc, true) {
				r.updBase = r.updBase[:0]
				for _, o := range r.updOff {
					r.updBase = append(r.updBase, o-walFrameHeaderSize)
				}
				return r.payload
			}
		}
	}
	w.frame = append(w.frame[:0], zeroFrameHeader[:]...)
	for _, r := range round {
		if r.err != nil {
			continue
		}
		r.updBase = r.updBase[:0]
		for i := range r.batch {
			end := len(r.payload)
			if i+1 < len(r.batch) {
				end = int(r.updOff[i+1])
			}
			if r.trunc[i] {
				w.frame = appendWALTruncate(w.frame, r.batch[i].Partition, r.batch[i].Entries[0].Index)
			}
			r.updBase = append(r.updBase, uint32(len(w.frame)-walFrameHeaderSize))
			w.frame = append(w.frame, r.payload[r.updOff[i]:end]...)
		}
	}
	return w.frame
}

func (w *WAL) commitRound(round []*walRequest) {
	if err := w.failure(); err != nil {
		reply(round, err)
		return
	}
	clear(w.view)
	accepted := 0
	for _, r := range round {
		if r.err = w.stage(r); r.err == nil {
			accepted++
		}
	}
	if accepted == 0 {
		reply(round, nil)
		return
	}
	seg, off, rolled, err := w.writeFrame(w.assemble(round, accepted))
	if err != nil {
		reply(round, err)
		return
	}
	w.mu.Lock()
	for _, r := range round {
		if r.err == nil {
			w.applySave(r, seg, off)
		}
	}
	w.mu.Unlock()
	reply(round, nil)
	if rolled {
		w.maintain(true)
	}
}

// applySave applies a durable Save to the in-memory index. Called with w.mu held.
func (w *WAL) applySave(r *walRequest, seg uint32, frameOff int64) {
	payloadOff := uint32(frameOff) + walFrameHeaderSize
	k := 0
	for i := range r.batch {
		u := &r.batch[i]
		ps := w.part(u.Partition)
		base := payloadOff + r.updBase[i]
		if len(u.Entries) > 0 {
			ps.truncateFrom(u.Entries[0].Index)
			for j := range u.Entries {
				e := &u.Entries[j]
				rel := r.entOff[k]
				k++
				size := uint32(walEntryHeaderSize + len(e.Type) + len(e.Data))
				ps.appendLoc(walLoc{term: e.Term, seg: seg, off: base + rel, size: size})
			}
			if w.opts.CacheEntries > 0 && cap(r.payload) < walPooledPayload {
				// Cache only the last CacheEntries entries, with Data aliasing the payload.
				// They are appended to the cache in place, without a slice of their own.
				from := max(0, len(u.Entries)-w.opts.CacheEntries)
				if n := len(ps.recent); n > 0 && ps.recent[n-1].Index+1 != u.Entries[from].Index {
					ps.recent = nil
				}
				for j := from; j < len(u.Entries); j++ {
					e := &u.Entries[j]
					dataAt := r.updOff[i] + r.entOff[k-len(u.Entries)+j] + walEntryHeaderSize + uint32(len(e.Type))
					ps.recent = append(ps.recent, Entry{Term: e.Term, Index: e.Index, Kind: e.Kind, ID: e.ID, Type: e.Type,
						Data: r.payload[dataAt : dataAt+uint32(len(e.Data)) : dataAt+uint32(len(e.Data))]})
				}
				ps.trimCache(w.opts.CacheEntries)
			} else {
				// These entries are not cached, so the cache no longer ends at the log's
				// last entry: drop it rather than let a read take it for the tail.
				ps.recent = nil
			}
		}
		if u.SaveHardState {
			ps.hs, ps.hasHS, ps.hsSeg = u.HardState, true, seg
		}
	}
}

// writeFrame finishes the frame header, writes the frame (starting a new segment first if
// it does not fit) and fsyncs it. Any failure is made sticky.
func (w *WAL) writeFrame(frame []byte) (seg uint32, off int64, rolled bool, err error) {
	active := w.segs[len(w.segs)-1]
	if active.size > walSegmentHeaderSize && active.size+int64(len(frame)) > w.opts.SegmentSize {
		// Only the last segment may end in zeroes: cut them off for good before the next
		// segment exists.
		if err := w.trimZeroes(active); err != nil {
			return 0, 0, false, w.fail(err)
		}
		if err := w.createSegment(active.seq + 1); err != nil {
			return 0, 0, false, w.fail(err)
		}
		active, rolled = w.segs[len(w.segs)-1], true
	}
	off = active.size
	le := binary.LittleEndian
	le.PutUint32(frame[0:], uint32(len(frame)-walFrameHeaderSize))
	le.PutUint32(frame[4:], crc32.Checksum(frame[walFrameHeaderSize:], walCRC))
	le.PutUint32(frame[8:], frameHeaderCRC(frame, active.seq, off))
	err = writeFull(active.f, frame, off)
	if err == nil && !w.opts.UnsafeNoSync && off+int64(len(frame)) > active.end {
		err = w.zeroAhead(active, off+int64(len(frame)))
	}
	if err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			err = fmt.Errorf("%w: %w", ErrDiskFull, err)
		}
		return 0, 0, rolled, w.fail(fmt.Errorf("wal: write %s at offset %d: %w", active.path, off, err))
	}
	if !w.opts.UnsafeNoSync {
		if err := active.f.Sync(); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				err = fmt.Errorf("%w: %w", ErrDiskFull, err)
			}
			return 0, 0, rolled, w.fail(fmt.Errorf("wal: fsync %s: %w", active.path, err))
		}
	}
	w.mu.Lock()
	active.size = off + int64(len(frame))
	w.mu.Unlock()
	return uint32(active.seq), off, rolled, nil
}

// zeroAhead extends the active segment's file with zeroes from the end of the frame just
// written (at frameEnd) to walZeroAhead bytes past its previous length, within the segment
// size, so that the next frames' fdatasyncs need not commit a file size. The frame's own
// fsync makes them durable with it.
func (w *WAL) zeroAhead(s *walSegment, frameEnd int64) error {
	target := min(max(s.end, walSegmentHeaderSize)+walZeroAhead, w.opts.SegmentSize)
	for off := frameEnd; off < target; {
		if w.zeroes == nil {
			w.zeroes = make([]byte, 64<<10)
		}
		n := min(int64(len(w.zeroes)), target-off)
		if err := writeFull(s.f, w.zeroes[:n], off); err != nil {
			return err
		}
		off += n
	}
	s.end = max(frameEnd, target)
	return nil
}

// trimZeroes cuts the zeroes written ahead off a segment and makes that durable.
func (w *WAL) trimZeroes(s *walSegment) error {
	if s.end <= s.size {
		return nil
	}
	if err := s.f.Truncate(s.size); err != nil {
		return fmt.Errorf("wal: truncate %s at %d: %w", s.path, s.size, err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("wal: fsync %s: %w", s.path, err)
	}
	s.end = s.size
	return nil
}

// fail makes err the sticky failure of the WAL and returns it.
func (w *WAL) fail(err error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		if errors.Is(err, syscall.ENOSPC) && !errors.Is(err, ErrDiskFull) {
			err = fmt.Errorf("%w: %w", ErrDiskFull, err) // e.g. while creating a segment
		}
		w.err = fmt.Errorf("wal failed, no further writes: %w", err)
		w.log.Error("wal: write failure; the WAL accepts no further writes", "err", err)
	}
	return w.err
}

// commitCompact writes a compaction mark in a frame of its own, applies it and reclaims
// the segments nobody needs any more.
func (w *WAL) commitCompact(r *walRequest) {
	if err := w.failure(); err != nil {
		reply([]*walRequest{r}, err)
		return
	}
	c := r.compact
	ps := w.parts[c.partition]
	if ps != nil && c.index <= ps.compactIndex {
		reply([]*walRequest{r}, nil)
		return
	}
	w.frame = append(w.frame[:0], zeroFrameHeader[:]...)
	w.frame = appendWALMark(w.frame, walRecCompact, c.partition, c.index, c.term)
	seg, _, _, err := w.writeFrame(w.frame)
	if err != nil {
		reply([]*walRequest{r}, err)
		return
	}
	w.mu.Lock()
	ps = w.part(c.partition)
	ps.compact(c.index, c.term)
	ps.hasCompact, ps.compactSeg = true, seg
	w.mu.Unlock()
	reply([]*walRequest{r}, nil)
	w.maintain(false)
}

// maintain deletes the oldest segments while no partition needs them. With carry set (after
// a new segment was started) it first carries forward the partitions that pin the oldest
// segment, when their live bytes add up to at most a quarter segment for every segment
// beyond the active one. Freeing the oldest segment thus costs little while few segments
// exist, and a partition with more live data (one that stopped compacting) is still carried
// once enough segments pile up behind it, so disk use stays bounded by a small multiple of
// the live data. It runs in the caller leading the commits.
func (w *WAL) maintain(carry bool) {
	carried := int64(0)
	for w.failure() == nil {
		if len(w.segs) <= 1 {
			return
		}
		oldest := uint32(w.segs[0].seq)
		var pinners []uint32
		live := int64(0)
		tooBig := false
		for p, ps := range w.parts {
			if s, ok := ps.pin(); ok && s <= oldest {
				pinners = append(pinners, p)
				live += ps.liveBytes
				// A carried partition must fit in one frame.
				tooBig = tooBig || ps.liveBytes > maxWALFrame/2
			}
		}
		if len(pinners) == 0 {
			if err := w.removeOldest(); err != nil {
				w.fail(err)
			}
			continue
		}
		budget := int64(len(w.segs)-1) * w.opts.SegmentSize / 4
		if !carry || tooBig || live > budget || carried > budget {
			return
		}
		sort.Slice(pinners, func(i, j int) bool { return pinners[i] < pinners[j] })
		n, err := w.carry(pinners)
		if err != nil {
			w.log.Error("wal: carrying partitions forward failed", "err", err)
			return
		}
		carried += n
	}
}

// removeOldest deletes the oldest segment and fsyncs the directory, so that segments
// always disappear oldest first even across a crash.
func (w *WAL) removeOldest() error {
	s := w.segs[0]
	w.mu.Lock()
	w.segs = w.segs[1:]
	w.mu.Unlock()
	s.f.Close()
	if err := w.fs.Remove(s.path); err != nil {
		return fmt.Errorf("wal: remove segment %s: %w", s.path, err)
	}
	if !w.opts.UnsafeNoSync {
		if err := w.fs.SyncDir(w.dir); err != nil {
			return fmt.Errorf("wal: sync dir after removing %s: %w", s.path, err)
		}
	}
	w.log.Debug("wal: removed segment", "file", s.path)
	return nil
}

// carry rewrites the given partitions (reset record, hard state, live entries) into the
// active segment. A partition is never split across frames, so a crash leaves it either
// wholly in its old place or wholly in the new one.
func (w *WAL) carry(parts []uint32) (int64, error) {
	written := int64(0)
	for len(parts) > 0 {
		w.frame = append(w.frame[:0], zeroFrameHeader[:]...)
		var batch []uint32
		var rels [][]uint32
		for len(parts) > 0 && (len(batch) == 0 || int64(len(w.frame)) < w.opts.SegmentSize/8) {
			p := parts[0]
			ps := w.parts[p]
			w.frame = appendWALMark(w.frame, walRecReset, p, ps.compactIndex, ps.compactTerm)
			if ps.hasHS {
				w.frame = appendWALHardState(w.frame, p, ps.hs)
			}
			rel := make([]uint32, len(ps.locs))
			for i, l := range ps.locs {
				rel[i] = uint32(len(w.frame) - walFrameHeaderSize)
				start := len(w.frame)
				w.frame = append(w.frame, make([]byte, l.size)...)
				if err := w.readRecord(l, w.frame[start:]); err != nil {
					return written, w.fail(err)
				}
			}
			batch, rels, parts = append(batch, p), append(rels, rel), parts[1:]
		}
		seg, off, _, err := w.writeFrame(w.frame)
		if err != nil {
			return written, err
		}
		written += int64(len(w.frame))
		w.mu.Lock()
		for i, p := range batch {
			ps := w.parts[p]
			for j := range ps.locs {
				ps.locs[j].seg, ps.locs[j].off = seg, uint32(off)+walFrameHeaderSize+rels[i][j]
			}
			ps.hasCompact, ps.compactSeg = true, seg
			if ps.hasHS {
				ps.hsSeg = seg
			}
		}
		w.mu.Unlock()
	}
	return written, nil
}

// segment returns the segment with sequence number seq. Called with w.mu held (or from
// the leading caller).
func (w *WAL) segment(seq uint32) *walSegment {
	if len(w.segs) == 0 {
		return nil
	}
	i := int64(seq) - int64(w.segs[0].seq)
	if i < 0 || i >= int64(len(w.segs)) {
		return nil
	}
	return w.segs[i]
}

// readRecord reads the raw record at l into b (len(b) == l.size).
func (w *WAL) readRecord(l walLoc, b []byte) error {
	s := w.segment(l.seg)
	if s == nil {
		return fmt.Errorf("wal: segment %s is gone: %w", walSegmentName(uint64(l.seg)), ErrCorrupt)
	}
	if _, err := s.f.ReadAt(b, int64(l.off)); err != nil {
		return fmt.Errorf("wal: read %s at offset %d: %w", s.path, l.off, err)
	}
	return nil
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
	return err
}

func (w *WAL) closeFiles() {
	for _, s := range w.segs {
		s.f.Close()
	}
}
