package kommander

// How the TCP and HTTP transports cut queued messages into codec batches going out, and
// read (within a memory bound), check and deliver the batches coming in.

import (
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"sync/atomic"
)

// splitBatches yields msgs in order as runs that each fit one batch of at most max bytes
// with the given header size. A message too large for any batch is logged and skipped;
// the caller counts it among the messages it did not send.
func splitBatches(msgs []Message, header, max int, log *slog.Logger, peer string) iter.Seq[[]Message] {
	return func(yield func([]Message) bool) {
		for len(msgs) > 0 {
			n := nextBatch(msgs, header, max)
			if n == 0 {
				log.Warn("message too large for one batch, dropped", "peer", peer,
					"type", msgs[0].Type, "partition", msgs[0].Partition, "bytes", encodedMessageSize(&msgs[0]))
				msgs = msgs[1:]
				continue
			}
			if !yield(msgs[:n]) {
				return
			}
			msgs = msgs[n:]
		}
	}
}

// nextBatch returns how many messages from the front of msgs fit in one batch of at most
// max bytes with the given header size. It returns 0 when the first message alone is too
// large; the caller drops it.
func nextBatch(msgs []Message, header, max int) int {
	size := header
	for i := range msgs {
		size += encodedMessageSize(&msgs[i])
		if size > max {
			return i
		}
	}
	return len(msgs)
}

// deliverBatch decodes one batch from an authenticated peer and delivers it; TCP and HTTP
// share it. It returns an error when the whole batch was refused.
func deliverBatch(frame []byte, peer, self string, lim codecLimits, c *transportCounters, deliver func([]Message), rl *rateLog, log *slog.Logger) error {
	b, err := decodeBatch(frame, lim)
	if err == nil && (b.from != peer || b.to != self) {
		// S5, transport half: a batch speaks only for the node that authenticated the
		// connection or request, and only to this node.
		err = fmt.Errorf("%w: batch from %q to %q on a link from %q to %q", ErrMalformed, b.from, b.to, peer, self)
	}
	if err != nil {
		c.rejected.Add(1)
		rl.warn(log, "batch refused", "bytes", len(frame), "err", err)
		return err
	}
	if b.skipped > 0 {
		c.rejected.Add(uint64(b.skipped))
		rl.warn(log, "malformed messages skipped; the rest of the batch is delivered", "skipped", b.skipped, "err", b.skipErr)
	}
	if len(b.msgs) > 0 {
		c.received.Add(uint64(len(b.msgs)))
		deliver(b.msgs)
	}
	return nil
}

// inboundFirstChunk is the buffer an inbound frame or body starts with; it doubles as
// bytes arrive.
const inboundFirstChunk = 4 << 10

// errInboundFull reports a frame or body refused because the inbound buffers of all
// connections together hold MaxInboundBytes.
var errInboundFull = errors.New("kommander: inbound buffers full (MaxInboundBytes)")

// errInboundTooLarge reports a body of unknown length that went on beyond the limit.
var errInboundTooLarge = errors.New("kommander: inbound body beyond MaxBatchBytes")

// inboundBudget is the MaxInboundBytes that the buffers of all inbound frames and bodies
// share. A length announced by a peer is only an upper limit: bytes are taken from the
// budget as they arrive, never ahead of them (S32).
type inboundBudget struct {
	limit int64
	used  atomic.Int64
	peak  atomic.Int64 // the most ever used, for tests
}

// take reserves n bytes, or reports false when that would go beyond the limit.
func (b *inboundBudget) take(n int) bool {
	for {
		used := b.used.Load()
		if used+int64(n) > b.limit {
			return false
		}
		if b.used.CompareAndSwap(used, used+int64(n)) {
			for peak := b.peak.Load(); used+int64(n) > peak && !b.peak.CompareAndSwap(peak, used+int64(n)); {
				peak = b.peak.Load()
			}
			return true
		}
	}
}

// give returns n bytes taken earlier.
func (b *inboundBudget) give(n int) {
	if b.used.Add(-int64(n)) < 0 {
		panic("kommander: inboundBudget: more bytes given back than taken")
	}
}

// read reads one frame or body from r: exactly n bytes, or when n < 0 everything up to
// EOF but at most limit bytes. The buffer starts at inboundFirstChunk and doubles only when
// it is full, each size taken from the budget before it is allocated. On success the
// caller gives back cap(frame) once it is done with the frame. On failure nothing is held;
// read also returns how many bytes it consumed from r, so that a framed reader can skip the
// rest. The errors are errInboundFull, errInboundTooLarge and those of r.
func (b *inboundBudget) read(r io.Reader, n, limit int) (frame []byte, consumed int, err error) {
	want := n
	if n < 0 {
		want = limit
	}
	size := min(want, inboundFirstChunk)
	if !b.take(size) {
		return nil, 0, errInboundFull
	}
	buf := make([]byte, size)
	got := 0
	for {
		m, err := io.ReadFull(r, buf[got:])
		got += m
		if err != nil {
			if n < 0 && (err == io.EOF || err == io.ErrUnexpectedEOF) {
				return buf[:got], got, nil
			}
			b.give(len(buf))
			return nil, got, err
		}
		if got == want {
			if n < 0 { // the limit is reached: one byte more is too much
				var one [1]byte
				if k, _ := io.ReadFull(r, one[:]); k > 0 {
					b.give(len(buf))
					return nil, got + k, errInboundTooLarge
				}
			}
			return buf, got, nil
		}
		next := min(want, 2*len(buf))
		if !b.take(next) {
			b.give(len(buf))
			return nil, got, errInboundFull
		}
		grown := make([]byte, next)
		copy(grown, buf[:got])
		b.give(len(buf))
		buf = grown
	}
}
