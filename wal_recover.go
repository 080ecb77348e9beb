package kommander

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

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
	if !validSegmentHeader(hdr[:], s.seq) {
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
