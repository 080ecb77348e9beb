package kommander

import (
	"sync"
	"sync/atomic"
)

// maxInbox bounds the received messages waiting for the loop; beyond it messages are
// dropped (Raft tolerates loss) rather than buffered without bound.
const maxInbox = 1 << 16

// inbox is what arrives for the loop between two passes: messages from the transport,
// ticks, and word that proposals were queued. Any goroutine adds and wakes the loop; the
// loop takes everything at the start of a pass.
type inbox struct {
	mu       sync.Mutex
	msgs     []Message
	spare    []Message // the msgs of the previous take, emptied, for reuse; loop only
	ticks    int
	proposed bool // some partition has queued proposals
	wake     chan struct{}
	// arrivals counts the batches and proposal signals added, for the loop to see whether
	// work arrived while it yielded (batchYield).
	arrivals atomic.Uint64
	// A tick the ticker goroutine received and the loop has not taken yet; tickAck lets
	// the ticker goroutine receive the next one.
	tickPending atomic.Bool
	tickAck     chan struct{}

	// signaled are the partitions proposals or reads were queued for, to be activated
	// (node_active.go); spareSignaled is the emptied slice of the previous pass.
	signaled, spareSignaled []*partition
}

func (in *inbox) init() {
	in.wake = make(chan struct{}, 1)
	in.tickAck = make(chan struct{}, 1)
}

// signal wakes the loop.
func (in *inbox) signal() {
	select {
	case in.wake <- struct{}{}:
	default:
	}
}

// add queues a received batch for the loop; it reports false, and takes nothing, when the
// inbox is full.
func (in *inbox) add(batch []Message) bool {
	in.mu.Lock()
	if len(in.msgs)+len(batch) > maxInbox {
		in.mu.Unlock()
		return false
	}
	in.msgs = append(in.msgs, batch...)
	in.mu.Unlock()
	in.arrivals.Add(1)
	in.signal()
	return true
}

// addTick records that one tick of time passed; the next pass ticks every partition.
func (in *inbox) addTick() {
	in.mu.Lock()
	in.ticks++
	in.mu.Unlock()
}

// tickArrived hands the loop a tick of the ticker goroutine and wakes it.
func (in *inbox) tickArrived() {
	in.tickPending.Store(true)
	in.signal()
}

// takeTick reports whether a tick of the ticker goroutine waited, and takes it.
func (in *inbox) takeTick() bool { return in.tickPending.CompareAndSwap(true, false) }

// ackTick lets the ticker goroutine receive the next tick.
func (in *inbox) ackTick() {
	select {
	case in.tickAck <- struct{}{}:
	default:
	}
}

// markProposed tells the loop that a partition has queued proposals.
func (in *inbox) markProposed() {
	in.mu.Lock()
	in.proposed = true
	in.mu.Unlock()
	in.arrivals.Add(1)
	in.signal()
}

// markPartition tells the loop that p has queued proposals or reads: the loop visits it
// even if it is quiesced.
func (in *inbox) markPartition(p *partition) {
	in.mu.Lock()
	if p.mark.signaled.CompareAndSwap(false, true) {
		in.signaled = append(in.signaled, p)
	}
	in.proposed = true
	in.mu.Unlock()
	in.signal()
}

// take returns everything that arrived since the last take. The loop hands msgs back with
// recycle once it is done with them.
func (in *inbox) take() (msgs []Message, ticks int, proposed bool) {
	in.mu.Lock()
	msgs = in.msgs
	in.msgs = in.spare[:0]
	ticks = in.ticks
	in.ticks = 0
	proposed = in.proposed
	in.proposed = false
	in.mu.Unlock()
	return msgs, ticks, proposed
}

// recycle keeps the slice of a take for the next one.
func (in *inbox) recycle(msgs []Message) {
	clear(msgs)
	in.spare = msgs[:0]
}
