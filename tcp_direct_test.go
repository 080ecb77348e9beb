package kommander

import (
	"runtime"
	"testing"
	"time"
)

// TestTCPDirectWritesKeepOrderWhenTheSocketFills sends a stream of large appends, one
// Send each, to a peer that stops reading after the first batch: Send writes directly
// while the socket takes the bytes, leaves what it cannot write to the writer goroutine,
// and queues behind it from then on. Then the peer reads again while as many more are
// sent, so that Send finds room in the socket while the writer still drains the backlog.
// Every message arrives once and in the order sent. The writer-only path (TLS, or a
// platform without non-blocking raw writes) must do the same.
func TestTCPDirectWritesKeepOrderWhenTheSocketFills(t *testing.T) {
	for _, direct := range []bool{true, false} {
		name := "direct"
		if !direct {
			name = "writer only"
		}
		t.Run(name, func(t *testing.T) {
			tcp := transportCases()[0]
			if tcp.name != "tcp" {
				t.Fatalf("transport case 1 is %q, not tcp", tcp.name)
			}
			cfgA, cfgB := transportTestConfig("a"), transportTestConfig("b")
			for _, c := range []*TransportConfig{&cfgA, &cfgB} {
				// The reader stays blocked in deliver for a while: no pong must go
				// missing meanwhile.
				c.KeepAlive, c.PeerTimeout = time.Second, time.Minute
			}
			cfgA.QueueSize = 1 << 16
			cfgA.noDirectWrites = !direct
			a, b := startTransportNode(t, tcp, cfgA), startTransportNode(t, tcp, cfgB)
			connectAll(a, b)
			tr := a.tr.(*TCPTransport)
			unblock := make(chan struct{})
			b.rec.mu.Lock()
			b.rec.block = unblock
			b.rec.mu.Unlock()

			const n = 600 // 600 x 16 KiB: more than loopback's socket buffers hold
			data := make([]byte, 16<<10)
			send := func(i int) {
				d := data
				if i >= n {
					d = data[:1<<10]
				}
				a.tr.Send("b", []Message{{Type: MsgAppend, Partition: 1, Term: 1, Context: uint64(i),
					Entries: []Entry{{Term: 1, Index: uint64(i + 1), Data: d}}}})
			}
			send(0) // it reaches b, whose reader then blocks
			b.rec.waitFor(t, transportWait, "the first batch", func(m []Message) bool { return len(m) > 0 })
			// sendWhile sends from message from on while more() holds, and returns how many
			// messages were sent in all.
			sendWhile := func(from int, more func(i int) bool) int {
				sent := make(chan int)
				go func() {
					i := from
					for ; more(i); i++ {
						send(i)
						runtime.Gosched() // the writer goroutine gets turns: both paths mix
					}
					sent <- i
				}()
				select {
				case total := <-sent:
					return total
				case <-time.After(transportWait):
					t.Fatal("Send blocked behind a peer that stopped reading")
					return 0
				}
			}
			sendWhile(1, func(i int) bool { return i < n })
			writes, partial := tr.counters.directWrites.Load(), tr.counters.directPartial.Load()
			if direct && directWritesSupported && (writes == 0 || partial == 0) {
				t.Fatalf("direct writes %d, partly written %d: the test did not cover a socket that fills", writes, partial)
			}
			if (!direct || !directWritesSupported) && writes != 0 {
				t.Fatalf("%d direct writes with direct writes off", writes)
			}
			close(unblock)
			// Small ones now, until b has read the backlog and for a while after: the
			// writer drains it meanwhile, so Send finds the lock free between its writes.
			drained := -1
			total := sendWhile(n, func(i int) bool {
				if drained < 0 {
					if m, _ := b.rec.snapshot(); len(m) >= n {
						drained = i
					}
				}
				return i < 50*n && (drained < 0 || i < drained+200)
			})
			got := b.rec.waitFor(t, transportWait, "every message", func(m []Message) bool { return len(m) >= total })
			if len(got) != total {
				t.Fatalf("b received %d messages, sent %d", len(got), total)
			}
			for i, m := range got {
				if m.Context != uint64(i) || len(m.Entries) != 1 || m.Entries[0].Index != uint64(i+1) {
					t.Fatalf("message %d is #%d with %d entries: out of order, lost or cut", i, m.Context, len(m.Entries))
				}
			}
			// The writer counts a batch as sent once its write returned, which may be
			// after b read it.
			waitForCondition(t, transportWait, "every batch counted as sent", func() bool { return tr.Stats().Sent >= uint64(total) })
			if s := tr.Stats(); s.Dropped != 0 || s.Sent != uint64(total) {
				t.Fatalf("stats %+v, want %d sent and none dropped", s, total)
			}
		})
	}
}
