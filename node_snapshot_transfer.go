package kommander

import (
	"fmt"
	"hash/crc32"
	"io"
	"sync"
	"sync/atomic"
)

// This file moves snapshots between nodes: a leader's node sends a follower the newest
// snapshot of a partition chunk by chunk, one chunk in flight, each acknowledged by the
// follower's node with the offset it expects next; the follower's node writes chunks to a
// temporary file as they arrive (its memory holds one chunk), checks the whole file's
// CRC-32C and the file's own checks, makes it durable and only then steps its description
// into Raft, which may ask for an install. Chunks and acknowledgements are handled in the
// transport's goroutines as they arrive, never in the loop, and travel on the transport's
// snapshot lane where it has one, so heartbeats never queue behind them.
//
// A chunk is a msgSnapshot carrying a snapshotChunk (Index and Term of the snapshot, the
// voters, Offset and Data; Done and the whole file's Checksum on the last). An
// acknowledgement is a msgSnapshot from the follower whose chunk has no data: Offset is the
// next offset it expects, Done says the snapshot was received and stepped into Raft (and
// installed, if Raft took it), Reject that the follower refuses the transfer.

const (
	// maxSnapshotChunk bounds a chunk's data (and MaxMessageBytes/2 bounds it further).
	maxSnapshotChunk = 1 << 20
	// snapshotAckTicks is how many ticks a sender waits for an acknowledgement before it
	// sends the chunk again, and snapshotRetries how many times it does before it gives up.
	snapshotAckTicks = 30
	snapshotRetries  = 5
	// snapshotIdleTicks is how long a receiver keeps a transfer that stopped.
	snapshotIdleTicks = snapshotAckTicks * (snapshotRetries + 2)
	// snapshotBackoffTicks is the first pause before a new transfer to a peer after one
	// failed; it doubles with each failure, up to snapshotMaxBackoffTicks.
	snapshotBackoffTicks    = 10
	snapshotMaxBackoffTicks = 600
)

// snapshotLane is implemented by transports that carry snapshot chunks on a connection or
// lane of their own, so that heartbeats and appends never wait behind them.
type snapshotLane interface {
	SendSnapshot(to string, msgs []Message)
}

// snapshotAck in Context marks a msgSnapshot that acknowledges chunks.
const snapshotAck = 1

// transferKey names one transfer: a partition and the follower.
type transferKey struct {
	partition uint32
	peer      string
}

// outTransfer is a snapshot being sent.
type outTransfer struct {
	key      transferKey
	term     uint64 // the leader's term when Raft asked
	f        *snapshotFile
	size     int64
	checksum uint32
	off      int64 // offset of the chunk in flight
	n        int   // its length
	sentAt   uint64
	retries  int
}

// inTransfer is a snapshot being received.
type inTransfer struct {
	from         string
	term         uint64
	index, sterm uint64
	sink         *snapshotSink
	off          int64
	crc          uint32
	seenAt       uint64
}

// transferResult is how a transfer to a follower ended, for Raft (reportSnapshot).
type transferResult struct {
	key   transferKey
	index uint64
	ok    bool
}

// snapshotReceived is a snapshot received whole and checked, to be stepped into Raft.
type snapshotReceived struct {
	msg Message
}

// transfers is the node's snapshot traffic in both directions.
type transfers struct {
	n         *Node
	chunkSize int
	max       int

	opening sync.WaitGroup // the goroutines opening snapshots to send
	ready   atomic.Bool    // results or received are waiting for the loop

	mu        sync.Mutex
	now       uint64 // the loop's tick, as of its last pass
	out       map[transferKey]*outTransfer
	queued    []transferKey // asked for, waiting for a free slot
	qterm     map[transferKey]uint64
	fails     map[string]int    // consecutive failures by peer
	notBefore map[string]uint64 // no new transfer to the peer before this tick
	results   []transferResult
	in        map[uint32]*inTransfer
	received  []snapshotReceived
	acks      map[uint32]Message // final acknowledgements held until the install is done
}

func (t *transfers) init(n *Node) {
	t.n = n
	t.chunkSize = min(maxSnapshotChunk, n.cfg.MaxMessageBytes/2)
	t.max = n.cfg.MaxSnapshotTransfers
	t.out, t.qterm = map[transferKey]*outTransfer{}, map[transferKey]uint64{}
	t.fails, t.notBefore = map[string]int{}, map[string]uint64{}
	t.in, t.acks = map[uint32]*inTransfer{}, map[uint32]Message{}
}

// send hands msgs to the transport's snapshot lane, or to its ordinary queue.
func (t *transfers) send(to string, msgs ...Message) {
	tr := t.n.transport
	if tr == nil {
		return
	}
	if l, ok := tr.(snapshotLane); ok {
		l.SendSnapshot(to, msgs)
		return
	}
	// Callers hold the transfers' lock, and a transport may deliver at once.
	go tr.Send(to, msgs)
}

// request is Raft asking, in term, to send follower to the newest snapshot of p. Loop only.
func (t *transfers) request(p uint32, to string, term uint64) {
	k := transferKey{p, to}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, busy := t.out[k]; busy {
		return
	}
	if _, waiting := t.qterm[k]; !waiting {
		t.queued = append(t.queued, k)
	}
	t.qterm[k] = term
	t.startLocked()
}

// startLocked starts queued transfers while slots are free and their peers are not in
// backoff. The caller holds mu.
func (t *transfers) startLocked() {
	kept := t.queued[:0]
	for _, k := range t.queued {
		if len(t.out) >= t.max || t.now < t.notBefore[k.peer] {
			kept = append(kept, k)
			continue
		}
		o := &outTransfer{key: k, term: t.qterm[k]}
		delete(t.qterm, k)
		t.out[k] = o
		t.opening.Add(1)
		go t.open(o)
	}
	clear(t.queued[len(kept):])
	t.queued = kept
}

// open opens the newest snapshot of o's partition, checks it and sends its first chunk.
// It runs in a goroutine of its own: reading a large file must not hold up the loop.
func (t *transfers) open(o *outTransfer) {
	defer t.opening.Done()
	f, sum, err := t.openNewest(o.key.partition)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.out[o.key] != o {
		if f != nil {
			f.Close() // the node stopped meanwhile
		}
		return
	}
	if err == nil {
		o.f, o.size, o.checksum = f, f.size(), sum
		err = t.sendChunkLocked(o, 0)
	}
	if err != nil {
		t.n.log.Warn("cannot send a snapshot", "partition", o.key.partition, "to", o.key.peer, "err", err)
		t.endLocked(o, false)
	}
}

// openNewest opens and checks the newest snapshot of a partition and returns it with the
// CRC-32C of the whole file.
func (t *transfers) openNewest(partition uint32) (*snapshotFile, uint32, error) {
	s := &t.n.snaps
	if !s.enabled() {
		return nil, 0, errNoSnapshots
	}
	ref := s.newestSnapshot(partition)
	if ref.index == 0 {
		return nil, 0, fmt.Errorf("%w: no snapshot of partition %d", errSnapshotTransfer, partition)
	}
	f, err := s.store.open(ref)
	if err != nil {
		return nil, 0, err
	}
	sum, err := crcOf(io.NewSectionReader(f.f, 0, f.size()))
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, sum, nil
}

// sendChunkLocked sends the chunk of o at off.
func (t *transfers) sendChunkLocked(o *outTransfer, off int64) error {
	n := int(min(int64(t.chunkSize), o.size-off))
	data := make([]byte, n)
	if _, err := o.f.f.ReadAt(data, off); err != nil {
		return fmt.Errorf("kommander: read snapshot %s: %w", o.f.ref.name(), err)
	}
	o.off, o.n, o.sentAt = off, n, t.now
	c := &snapshotChunk{Index: o.f.ref.index, Term: o.f.ref.term, Voters: o.f.layout.meta.voters, Learners: o.f.layout.meta.learners, Offset: uint64(off), Data: data}
	if off+int64(n) == o.size {
		c.Done, c.Checksum = true, o.checksum
	}
	t.send(o.key.peer, Message{Type: msgSnapshot, Partition: o.key.partition, From: t.n.cfg.NodeID, To: o.key.peer, Term: o.term, snapshot: c})
	return nil
}

// endLocked closes o and records how it ended for Raft.
func (t *transfers) endLocked(o *outTransfer, ok bool) {
	var index uint64
	if o.f != nil {
		o.f.Close()
		index = o.f.ref.index
	}
	delete(t.out, o.key)
	if ok {
		t.fails[o.key.peer] = 0
		t.n.metrics.snapshotsSent.Add(1)
		t.results = append(t.results, transferResult{key: o.key, index: index, ok: true})
		t.ready.Store(true)
	} else {
		t.failLocked(o.key, index)
	}
	t.startLocked()
	t.n.in.signal()
}

// failLocked records a failed transfer and pauses new ones to the peer (doubling).
func (t *transfers) failLocked(k transferKey, index uint64) {
	f := t.fails[k.peer]
	t.fails[k.peer] = f + 1
	t.notBefore[k.peer] = t.now + min(uint64(snapshotBackoffTicks)<<min(f, 10), snapshotMaxBackoffTicks)
	t.results = append(t.results, transferResult{key: k, index: index})
	t.ready.Store(true)
	t.n.in.signal()
}

// acked handles a follower's acknowledgement of a chunk. Transport goroutines.
func (t *transfers) acked(m *Message) {
	k := transferKey{m.Partition, m.From}
	t.mu.Lock()
	defer t.mu.Unlock()
	o := t.out[k]
	c := m.snapshot
	if o == nil || o.f == nil || c.Index != o.f.ref.index || c.Term != o.f.ref.term {
		return // of a transfer that ended
	}
	switch {
	case m.Reject:
		t.n.log.Info("a follower refused a snapshot", "partition", k.partition, "peer", k.peer)
		t.endLocked(o, false)
	case c.Done:
		t.endLocked(o, true)
	case c.Offset <= uint64(o.size):
		o.retries = 0
		if err := t.sendChunkLocked(o, int64(c.Offset)); err != nil {
			t.n.log.Warn("snapshot transfer failed", "partition", k.partition, "to", k.peer, "err", err)
			t.endLocked(o, false)
		}
	}
}

// tick moves the transfers' time on: a chunk unacknowledged for too long is sent again
// and, after too many tries, the transfer is abandoned; a transfer received from a leader
// that went quiet is removed. Loop only.
func (t *transfers) tick(now uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.now = now
	for _, o := range t.out {
		if o.f == nil || now-o.sentAt < snapshotAckTicks {
			continue
		}
		o.retries++
		if o.retries > snapshotRetries {
			t.n.log.Warn("snapshot transfer abandoned: no acknowledgement", "partition", o.key.partition, "to", o.key.peer)
			t.endLocked(o, false)
			continue
		}
		if err := t.sendChunkLocked(o, o.off); err != nil {
			t.endLocked(o, false)
		}
	}
	for p, in := range t.in {
		if now-in.seenAt > snapshotIdleTicks {
			t.n.log.Info("removed an abandoned incoming snapshot", "partition", p, "from", in.from)
			in.sink.abort()
			delete(t.in, p)
		}
	}
	t.startLocked()
}

// receive handles a chunk from a leader's node (S21): it refuses chunks of a term older
// than the partition's, writes the chunk where the transfer stands, and once the whole
// snapshot is in checks it and hands its description to the loop. Transport goroutines.
func (t *transfers) receive(m *Message) {
	c := m.snapshot
	ack := func(off int64, done, reject bool) {
		t.send(m.From, Message{Type: msgSnapshot, Partition: m.Partition, From: t.n.cfg.NodeID, To: m.From,
			Term: m.Term, Reject: reject, Context: snapshotAck, snapshot: &snapshotChunk{Index: c.Index, Term: c.Term, Offset: uint64(off), Done: done}})
	}
	p := t.n.parts[m.Partition]
	if !t.n.snaps.enabled() || m.Term < p.publishedTerm() || c.Index == 0 {
		ack(0, false, true) // a deposed leader, or no way to keep it
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	in := t.in[m.Partition]
	if in != nil && (in.from != m.From || in.term != m.Term || in.index != c.Index || in.sterm != c.Term) {
		if m.Term < in.term {
			ack(0, false, true)
			return
		}
		in.sink.abort() // a newer leader, or a newer snapshot
		delete(t.in, m.Partition)
		in = nil
	}
	if in == nil {
		if c.Offset != 0 {
			ack(0, false, false)
			return
		}
		if len(t.in) >= t.max {
			ack(0, false, true) // too many at once: the leader backs off
			return
		}
		sink, err := t.n.snaps.store.create(snapshotRef{partition: m.Partition, index: c.Index, term: c.Term})
		if err != nil {
			t.n.log.Warn("cannot receive a snapshot", "partition", m.Partition, "err", err)
			ack(0, false, true)
			return
		}
		in = &inTransfer{from: m.From, term: m.Term, index: c.Index, sterm: c.Term, sink: sink}
		t.in[m.Partition] = in
	}
	in.seenAt = t.now
	if c.Offset != uint64(in.off) {
		ack(in.off, false, false) // a duplicate or a gap: say where we stand
		return
	}
	if _, err := in.sink.Write(c.Data); err != nil {
		t.n.log.Warn("cannot write a received snapshot", "partition", m.Partition, "err", err)
		in.sink.abort()
		delete(t.in, m.Partition)
		ack(0, false, true)
		return
	}
	in.off += int64(len(c.Data))
	in.crc = crc32.Update(in.crc, snapCRC, c.Data)
	if !c.Done {
		ack(in.off, false, false)
		return
	}
	delete(t.in, m.Partition)
	if err := t.check(in, c); err != nil {
		t.n.log.Warn("received snapshot refused", "partition", m.Partition, "from", m.From, "err", err)
		in.sink.abort()
		ack(0, false, true)
		return
	}
	if err := in.sink.commit(); err != nil {
		t.n.log.Warn("cannot store a received snapshot", "partition", m.Partition, "err", err)
		ack(0, false, true)
		return
	}
	t.received = append(t.received, snapshotReceived{msg: Message{Type: msgSnapshot, Partition: m.Partition,
		From: m.From, To: m.To, Term: m.Term, snapshot: &snapshotChunk{Index: c.Index, Term: c.Term, Voters: c.Voters, Learners: c.Learners, Done: true}}})
	t.ready.Store(true)
	t.n.in.signal()
}

// check verifies a received snapshot before it is kept: the CRC of the bytes that came
// against the sender's, then the file's own checks, and that it is what the chunks said.
func (t *transfers) check(in *inTransfer, c *snapshotChunk) error {
	if in.crc != c.Checksum {
		return fmt.Errorf("%w: checksum %08x, the sender's %08x", ErrSnapshotCorrupt, in.crc, c.Checksum)
	}
	l, err := decodeSnapshot(in.sink.f, in.off)
	if err != nil {
		return err
	}
	if m := l.meta; m.index != in.index || m.term != in.sterm || m.partition != in.sink.ref.partition {
		return fmt.Errorf("%w: the file holds partition %d index %d term %d", ErrSnapshotCorrupt, m.partition, m.index, m.term)
	}
	return nil
}

// take returns the transfers to followers that ended and the snapshots received whole
// since the last call. Loop only.
func (t *transfers) take() ([]transferResult, []snapshotReceived) {
	if !t.ready.Swap(false) {
		return nil, nil // the common case: no lock taken in a pass
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	res, rec := t.results, t.received
	t.results, t.received = nil, nil
	return res, rec
}

// deliverSnapshot takes a msgSnapshot off the network: a chunk to receive or an
// acknowledgement for a transfer of ours. It reports false for one that makes no sense.
func (n *Node) deliverSnapshot(m *Message) bool {
	if int(m.Partition) >= len(n.parts) || m.To != n.cfg.NodeID || m.snapshot == nil {
		return false
	}
	if m.Context == snapshotAck {
		n.transfers.acked(m)
	} else {
		n.transfers.receive(m)
	}
	return true
}

// takeSnapshotMessages takes the msgSnapshot messages out of a received batch, in place,
// and handles them; the rest is for the loop.
func (n *Node) takeSnapshotMessages(batch []Message) []Message {
	kept := batch[:0]
	for i := range batch {
		if batch[i].Type != msgSnapshot {
			kept = append(kept, batch[i])
		} else if !n.deliverSnapshot(&batch[i]) {
			n.metrics.dropped.Add(1)
		}
	}
	return kept
}

// publishedTerm is the partition's term as the loop last published it.
func (p *partition) publishedTerm() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status.Term
}

// stepSnapshots tells Raft how transfers to followers ended and steps in the snapshots
// received whole. The acknowledgement of one Raft takes for an install waits for it
// (installReady); the others are acknowledged now. Loop only.
func (n *Node) stepSnapshots() {
	results, received := n.transfers.take()
	for _, r := range results {
		n.parts[r.key.partition].raft.reportSnapshot(r.key.peer, r.index, r.ok)
	}
	for _, rc := range received {
		m := rc.msg
		p := n.parts[m.Partition]
		if err := p.raft.step(m); err != nil {
			n.log.Debug("raft rejected a snapshot", "partition", m.Partition, "from", m.From, "err", err)
		}
		ack := Message{Type: msgSnapshot, Partition: m.Partition, From: n.cfg.NodeID, To: m.From, Term: m.Term, Context: snapshotAck,
			snapshot: &snapshotChunk{Index: m.snapshot.Index, Term: m.snapshot.Term, Done: true}}
		if in := p.raft.pendingInstall; in != nil && in.index == m.snapshot.Index && in.term == m.snapshot.Term {
			n.transfers.mu.Lock()
			n.transfers.acks[m.Partition] = ack
			n.transfers.mu.Unlock()
			continue
		}
		n.transfers.send(m.From, ack)
	}
}

// installReady installs the snapshot rd asks for, acknowledges it to the leader's node
// and starts the transfers rd asks for. It reports false when the node failed. Loop only.
func (n *Node) installReady(p *partition, rd *raftReady) bool {
	if s := rd.InstallSnapshot; s != nil {
		if err := n.install(p, s); err != nil {
			n.failStop(err, err)
			return false
		}
		n.transfers.mu.Lock()
		ack, ok := n.transfers.acks[p.id]
		delete(n.transfers.acks, p.id)
		n.transfers.mu.Unlock()
		if ok {
			n.transfers.send(ack.To, ack)
		}
	}
	for _, to := range rd.SendSnapshots {
		n.transfers.request(p.id, to, p.raft.term)
	}
	return true
}

// close ends every transfer: the node stops.
func (t *transfers) close() {
	t.opening.Wait()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, o := range t.out {
		if o.f != nil {
			o.f.Close()
		}
	}
	for _, in := range t.in {
		in.sink.abort()
	}
	clear(t.out)
	clear(t.in)
}
