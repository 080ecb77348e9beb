//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package kommander

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// directPair returns a directWriter on one end of a Unix stream socket pair, with its
// queue and counters, and the other end to read what it wrote.
func directPair(t *testing.T) (*directWriter, *sendQueue, *transportCounters, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	w, r := conn(fds[0]), conn(fds[1])
	rc, err := w.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	d := &directWriter{rc: rc, self: "a", peer: "b", header: batchHeaderSize("a", "b"), max: 64 << 10}
	return d, newSendQueue(1 << 16), &transportCounters{}, r
}

// TestDirectWriterYieldsToWhatWaits checks the rules that keep a connection's frames whole
// and in order: a direct write that the socket takes in part leaves the rest for the
// writer, and until the writer has written it, and while anything is queued or the writer
// holds the lock, Send does not write directly even when the socket has room. The stream
// then holds every frame, whole and in order.
func TestDirectWriterYieldsToWhatWaits(t *testing.T) {
	d, q, c, r := directPair(t)
	data := make([]byte, 60<<10) // a frame the socket takes in pieces
	msg := func(i int) []Message {
		return []Message{{Type: MsgAppend, Partition: 1, Term: 1, Context: uint64(i),
			Entries: []Entry{{Term: 1, Index: uint64(i + 1), Data: data}}}}
	}

	// Nobody reads: fill the socket until a write goes in only in part.
	var stream []byte // what the reader read
	next := 0
	for c.directPartial.Load() == 0 {
		if next > 100000 {
			t.Fatal("the socket never took a write in part")
		}
		if d.try(q, msg(next), c) {
			next++
			continue
		}
		// Full at a frame's boundary: make room for part of one.
		part := make([]byte, 1000)
		if _, err := io.ReadFull(r, part); err != nil {
			t.Fatal(err)
		}
		stream = append(stream, part...)
	}
	if len(d.pending) == 0 {
		t.Fatal("a partial write left nothing pending")
	}

	// The reader drains what it can: the socket has room now.
	drain := func() {
		buf := make([]byte, 1<<20)
		for {
			r.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			n, err := r.Read(buf)
			stream = append(stream, buf[:n]...)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	drain()
	if d.try(q, msg(next), c) {
		t.Fatal("Send wrote directly ahead of the rest of a partial write")
	}
	q.push(msg(next)) // as Send does when try refuses
	next++

	// The writer writes the rest, then takes the queue, holding the lock meanwhile.
	d.mu.Lock()
	pending, err := d.takePending()
	if err != nil {
		t.Fatal(err)
	}
	writeAll(t, d, pending)
	if d.try(q, msg(next), c) {
		t.Fatal("Send wrote directly while the writer held the lock")
	}
	d.mu.Unlock()
	if d.try(q, msg(next), c) {
		t.Fatal("Send wrote directly ahead of a queued batch")
	}
	q.push(msg(next))
	next++
	d.mu.Lock()
	for _, m := range q.take() {
		frame := append([]byte{0, 0, 0, 0}, mustBatch(t, m)...)
		binary.LittleEndian.PutUint32(frame, uint32(len(frame)-4))
		writeAll(t, d, frame)
	}
	d.mu.Unlock()

	// Nothing waits now: Send writes directly again.
	if !d.try(q, msg(next), c) {
		t.Fatal("Send did not write directly with nothing waiting")
	}
	next++
	drain()
	for i := 0; i < next; i++ {
		if len(stream) < 4 {
			t.Fatalf("the stream ends before frame %d", i)
		}
		n := int(binary.LittleEndian.Uint32(stream))
		b, err := decodeBatch(stream[4:4+n], codecLimits{}.withDefaults())
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if len(b.msgs) != 1 || b.msgs[0].Context != uint64(i) {
			t.Fatalf("frame %d holds %d messages, the first #%d", i, len(b.msgs), b.msgs[0].Context)
		}
		stream = stream[4+n:]
	}
	if len(stream) != 0 {
		t.Fatalf("%d bytes after the last frame", len(stream))
	}
}

func mustBatch(t *testing.T, m Message) []byte {
	t.Helper()
	b, err := appendBatch(nil, "a", "b", []Message{m})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeAll writes b to d's socket, waiting for room (the writer goroutine's blocking
// write).
func writeAll(t *testing.T, d *directWriter, b []byte) {
	t.Helper()
	for len(b) > 0 {
		n, err := rawWrite(d.rc, b)
		b = b[n:]
		if err != nil && !errors.Is(err, syscall.EAGAIN) {
			t.Fatal(err)
		}
	}
}
