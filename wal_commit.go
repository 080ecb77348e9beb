package kommander

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"syscall"
)

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

// walRoundSoftLimit stops a round from gathering more batches into its frame.
const walRoundSoftLimit = 8 << 20

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
	putFrameHeader(frame, active.seq, off)
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
