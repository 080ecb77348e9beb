package kommander

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

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

func walSegmentName(seq uint64) string { return fmt.Sprintf("%016x.wal", seq) }

// walZeroAhead is how far ahead of its frames the active segment's file is extended
// with written zeroes. An fdatasync of data written inside the file's length flushes no
// metadata, which on ext4 costs about half the time and CPU of one that must commit a
// new file size; the size then changes once per walZeroAhead bytes instead of once per
// frame. Recovery already treats a zero tail as the end of the log.
const walZeroAhead = 1 << 20

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
	putSegmentHeader(hdr, seq)
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
	if cap(w.frame) > maxKeptFrame {
		w.frame = nil // a carry frame (up to an eighth of a segment) is not kept for commits
	}
	return written, nil
}

// maxKeptFrame bounds the frame buffer the WAL keeps between writes: commits reuse it, and
// a larger one, left by a carry, would stay pinned for nothing.
const maxKeptFrame = 1 << 20

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
