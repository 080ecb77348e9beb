package kommander

import (
	"errors"
	"sync"
	"syscall"
)

// directWriter lets Send write a batch to a plain TCP connection itself, without waking
// the connection's writer goroutine, whenever that goroutine has nothing queued: the
// socket takes the bytes at once or tells so (a non-blocking write), so the caller, the
// node's loop, never waits. Each hop of a commit thus saves a goroutine hand-off: on two
// processors shared by the loop, the fsync goroutine, the transport and the callers, the
// writer woken by Send waited behind them, a tenth of a millisecond in the median and half
// a millisecond or more one time in ten, twice per commit.
//
// Order on the connection is kept by mu: every write to it, direct or by the writer, holds
// mu, and Send writes directly only when the queue is empty and nothing is left of an
// earlier direct write; otherwise it queues behind. A write the socket takes only in part
// leaves the rest in pending for the writer, which writes it before anything else. Send
// only tries mu: while the writer holds it, Send queues as before.
//
// TLS connections never write directly: a tls.Conn cannot write without blocking. Neither
// does Windows (see rawWrite).
type directWriter struct {
	mu      sync.Mutex
	rc      syscall.RawConn
	closed  bool   // the connection is done: Send queues
	pending []byte // the rest of a direct write the socket did not take
	err     error  // a direct write failed: the writer ends the connection
	buf     []byte // frames being written directly
	self    string
	peer    string
	header  int // batchHeaderSize(self, peer)
	max     int // MaxBatchBytes
}

// directWriteMaxBuf bounds the buffer a directWriter keeps between writes.
const directWriteMaxBuf = 1 << 20

// try writes msgs directly and reports whether it took them (written, or partly written
// with the rest in pending and the writer woken); false means the caller queues them.
func (d *directWriter) try(q *sendQueue, msgs []Message, c *transportCounters) bool {
	if !d.mu.TryLock() {
		return false
	}
	defer d.mu.Unlock()
	if d.closed || d.err != nil || len(d.pending) > 0 || !q.empty() {
		return false
	}
	buf := d.buf[:0]
	for rest := msgs; len(rest) > 0; {
		n := nextBatch(rest, d.header, d.max)
		if n == 0 {
			d.keep(buf)
			return false // too large for a frame: the writer drops, logs and counts it
		}
		var err error
		if buf, err = appendFrame(buf, d.self, d.peer, rest[:n]); err != nil {
			d.keep(buf)
			return false // the writer meets the same error, and logs and counts it
		}
		rest = rest[n:]
	}
	n, err := rawWrite(d.rc, buf)
	switch {
	case n == 0 && err != nil:
		// Nothing written: unsupported, the deadline passed, or the connection is broken;
		// the writer finds out which on its next write.
		d.keep(buf)
		return false
	case n < len(buf):
		c.directPartial.Add(1)
		d.pending = append(d.pending[:0], buf[n:]...)
		if err != nil && !errors.Is(err, syscall.EAGAIN) {
			d.err = err // a frame is cut: the connection must end
		}
		q.signal()
	}
	d.keep(buf)
	c.directWrites.Add(1)
	c.sent.Add(uint64(len(msgs)))
	return true
}

// keep holds on to buf for the next direct write, unless it grew large.
func (d *directWriter) keep(buf []byte) {
	if cap(buf) > directWriteMaxBuf {
		buf = nil
	}
	d.buf = buf[:0]
}

// takePending returns what the writer must write first, and a failed direct write's error.
// Writer only, with mu held.
func (d *directWriter) takePending() ([]byte, error) {
	p := d.pending
	d.pending = d.pending[:0]
	return p, d.err
}

// close stops direct writes: the connection is closing.
func (d *directWriter) close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
}
