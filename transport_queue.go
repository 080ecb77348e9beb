package kommander

// The sending side the TCP and HTTP transports share: per peer a bounded queue that Send
// fills without ever blocking (S29), drained by that peer's sender goroutine, which waits a
// capped, jittered backoff after a failure.
//
// There is one connection (TCP) or request stream (HTTP) per peer for Raft's messages; the
// TCP transport has a second lane, with a queue of its own, for snapshot chunks, so that a
// large chunk never delays heartbeats. Its connection passes the same handshake and the
// same claim on the peer's node ID as the first (S32).

import (
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// sendQueue is a bounded queue of messages to one peer. push never blocks; the peer's
// sender takes everything queued at once and writes it as few batches.
type sendQueue struct {
	mu    sync.Mutex
	msgs  []Message
	spare []Message
	limit int
	wake  chan struct{} // capacity 1: "there is something to take"
}

func newSendQueue(limit int) *sendQueue {
	return &sendQueue{limit: limit, wake: make(chan struct{}, 1)}
}

// push queues msgs whole, or none of them when they do not fit, and reports which.
func (q *sendQueue) push(msgs []Message) bool {
	q.mu.Lock()
	if len(q.msgs)+len(msgs) > q.limit {
		q.mu.Unlock()
		return false
	}
	q.msgs = append(q.msgs, msgs...)
	q.mu.Unlock()
	q.signal()
	return true
}

// empty reports whether nothing is queued.
func (q *sendQueue) empty() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.msgs) == 0
}

// signal wakes the queue's writer.
func (q *sendQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take returns everything queued. The caller hands the slice back with giveBack once it
// is done with it, so that steady traffic reuses two buffers instead of allocating.
func (q *sendQueue) take() []Message {
	q.mu.Lock()
	out := q.msgs
	q.msgs, q.spare = q.spare[:0], nil
	q.mu.Unlock()
	return out
}

func (q *sendQueue) giveBack(buf []Message) {
	clear(buf) // drop references to entries already sent
	q.mu.Lock()
	if q.spare == nil {
		q.spare = buf[:0]
	}
	q.mu.Unlock()
}

// peer is one peer's address and send queue; the TCP and HTTP transports share it.
type peer struct {
	id    string
	mu    sync.Mutex
	addr  string // TCP: host:port; HTTP: the URL of the peer's raft endpoint
	queue *sendQueue
	snaps *sendQueue // snapshot chunks (TCP's second lane)
	// direct is set while TCP's Raft lane has a plain connection that Send may write to
	// itself (directWriter).
	direct atomic.Pointer[directWriter]
	gone   chan struct{} // closed when the peer is removed: its senders end
}

func (p *peer) address() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr
}

// peerSet is the peers a transport sends to, and the only node IDs it accepts traffic from.
type peerSet struct {
	mu     sync.Mutex
	closed bool
	peers  map[string]*peer
}

// set records addr for peer id. For a new peer it makes the queue and calls start under
// the lock, so that close cannot miss a sender that is starting.
func (s *peerSet) set(id, addr string, queueSize int, start func(p *peer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if p, ok := s.peers[id]; ok {
		p.mu.Lock()
		p.addr = addr
		p.mu.Unlock()
		return
	}
	if s.peers == nil {
		s.peers = make(map[string]*peer)
	}
	p := &peer{id: id, addr: addr, queue: newSendQueue(queueSize), snaps: newSendQueue(queueSize), gone: make(chan struct{})}
	start(p)
	s.peers[id] = p
}

// send queues msgs for peer to without blocking (S29); an unknown peer or a full queue
// drops them, counted.
func (s *peerSet) send(to string, msgs []Message, c *transportCounters) {
	if len(msgs) == 0 {
		return
	}
	s.mu.Lock()
	p := s.peers[to]
	s.mu.Unlock()
	if p == nil {
		c.dropped.Add(uint64(len(msgs)))
		return
	}
	if d := p.direct.Load(); d != nil && d.try(p.queue, msgs, c) {
		return
	}
	if !p.queue.push(msgs) {
		c.dropped.Add(uint64(len(msgs)))
	}
}

// sendSnapshot is send on the snapshot lane.
func (s *peerSet) sendSnapshot(to string, msgs []Message, c *transportCounters) {
	s.mu.Lock()
	p := s.peers[to]
	s.mu.Unlock()
	if p == nil || !p.snaps.push(msgs) {
		c.dropped.Add(uint64(len(msgs)))
	}
}

// known reports whether id is a peer: the members a transport accepts traffic from (S32).
func (s *peerSet) known(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.peers[id]
	return ok
}

// remove forgets peer id: messages to it are dropped, its traffic is refused and its
// senders end. A later set adds it again as a new peer. It reports whether id was a peer.
func (s *peerSet) remove(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.peers[id]
	if ok {
		delete(s.peers, id)
		close(p.gone)
	}
	return ok
}

// close makes later calls to set do nothing.
func (s *peerSet) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

// minTransportBackoff is the first step of the backoff, and its floor.
const minTransportBackoff = 10 * time.Millisecond

// backoff is the capped exponential backoff with jitter between reconnect attempts.
type backoff struct {
	cur, max time.Duration
}

// next returns the wait before the next attempt: the current step with ±50% jitter, so
// that peers that lost each other at once do not redial in lockstep.
func (b *backoff) next() time.Duration {
	if b.cur < minTransportBackoff {
		b.cur = minTransportBackoff
	}
	d := b.cur/2 + time.Duration(mrand.Int64N(int64(b.cur)))
	b.cur = min(2*b.cur, b.max)
	return d
}

func (b *backoff) reset() { b.cur = 0 }

// waitOrDone waits d, or less when done closes; it reports whether done closed.
func waitOrDone(d time.Duration, done <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return false
	case <-done:
		return true
	}
}
