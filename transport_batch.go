package kommander

// How the TCP and HTTP transports cut queued messages into codec batches going out, and
// check and deliver the batches coming in.

import (
	"fmt"
	"iter"
	"log/slog"
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
func deliverBatch(frame []byte, peer, self string, lim codecLimits, c *transportCounters, deliver func([]Message), log *slog.Logger) error {
	b, err := decodeBatch(frame, lim)
	if err == nil && (b.from != peer || b.to != self) {
		// S5, transport half: a batch speaks only for the node that authenticated the
		// connection or request, and only to this node.
		err = fmt.Errorf("%w: batch from %q to %q on a link from %q to %q", ErrMalformed, b.from, b.to, peer, self)
	}
	if err != nil {
		c.rejected.Add(1)
		log.Warn("batch refused", "bytes", len(frame), "err", err)
		return err
	}
	if b.skipped > 0 {
		c.rejected.Add(uint64(b.skipped))
		log.Warn("malformed messages skipped; the rest of the batch is delivered", "skipped", b.skipped, "err", b.skipErr)
	}
	if len(b.msgs) > 0 {
		c.received.Add(uint64(len(b.msgs)))
		deliver(b.msgs)
	}
	return nil
}
