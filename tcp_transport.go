package kommander

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"
)

// The TCP transport keeps one long-lived outbound connection per peer for Raft's messages,
// and one more, dialed only when there is something to send, for snapshot chunks, so that
// a chunk never delays a heartbeat. A writer goroutine per connection drains its queue
// into as few frames as fit and flushes them in one write; on a plain connection, Send
// writes a batch itself when nothing waits and the socket takes it at once (tcp_direct.go).
// The connection of the other direction is the peer's own outbound one. Every connection
// opens with TLS (when configured) and the handshake in tcp_handshake.go.
//
// Frames after the handshake: u32 length, then that many bytes of one codec batch. A
// zero-length frame is a ping from the client; the server answers each with a
// zero-length pong. Both sides treat PeerTimeout without a frame as a dead connection
// (S28).
//
// Bad input after the handshake (S28): a frame that does not decode is refused and counted
// and the connection carries on, since its length prefix still frames the next one; a
// malformed message inside a batch costs that message only; a frame above MaxBatchBytes
// is skipped without being buffered; a connection that ends inside a frame loses that
// frame and nothing else. A frame is buffered only as its bytes arrive and within
// MaxInboundBytes for all connections together; one beyond that is skipped (S32). Only
// members given to SetPeer get a connection, one each, so a stranger gets no further than
// the handshake, which reads a bounded hello. Refusals are logged through a rate limit.

const (
	tcpReadBuffer    = 64 << 10
	tcpWriteBuffer   = 64 << 10
	tcpMaxHandshakes = 256 // unauthenticated connections at once
)

// TCPTransport is the default Transport: binary batches over long-lived TCP (or TLS)
// connections. Create it with NewTCPTransport.
type TCPTransport struct {
	cfg      TransportConfig
	lim      codecLimits
	log      *slog.Logger
	ln       net.Listener
	instance uint64
	counters transportCounters
	budget   inboundBudget // MaxInboundBytes, shared by the inbound connections
	rl       *rateLog      // every warning a peer or a stranger can provoke goes through it

	done       chan struct{}
	handshakes chan struct{}   // a slot per inbound handshake in progress
	ctx        context.Context // cancelled by Close: aborts dials in progress
	cancel     context.CancelFunc
	wg         sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	started bool
	deliver func([]Message)
	peers   peerSet
	inbound map[string]*tcpInbound // node ID -> its inbound connection
	conns   map[net.Conn]struct{}  // every open connection, closed by Close
}

// tcpInbound is one peer's inbound connections, one per lane, all from one process.
type tcpInbound struct {
	instance uint64
	conns    [tcpLanes]net.Conn
}

// Lanes: Raft's messages, and snapshot chunks apart so that they never delay heartbeats.
const (
	tcpLaneRaft     = 0
	tcpLaneSnapshot = 1
	tcpLanes        = 2
)

// NewTCPTransport validates cfg and listens on cfg.Addr. It accepts connections only
// after Start.
func NewTCPTransport(cfg TransportConfig) (*TCPTransport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Addr == "" {
		return nil, errors.New("kommander: transport config: Addr is required for TCP")
	}
	cfg = cfg.withDefaults()
	if cfg.TLS != nil {
		cfg.TLS = cfg.TLS.Clone() // later changes by the caller do not reach a running transport
	}
	instance, err := newInstanceID()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("kommander: tcp transport: listen on %s: %w", cfg.Addr, err)
	}
	t := &TCPTransport{
		cfg: cfg, lim: cfg.limits(), ln: ln, instance: instance,
		log:        cfg.Logger.With("transport", "tcp", "node", cfg.NodeID),
		done:       make(chan struct{}),
		handshakes: make(chan struct{}, tcpMaxHandshakes),
		inbound:    make(map[string]*tcpInbound),
		conns:      make(map[net.Conn]struct{}),
	}
	t.budget.limit = int64(cfg.MaxInboundBytes)
	t.rl = newRateLog(t.log, RealClock(), transportLogInterval)
	t.ctx, t.cancel = context.WithCancel(context.Background())
	return t, nil
}

// Addr returns the address the transport listens on (with the port bound, when cfg.Addr
// asked for any port).
func (t *TCPTransport) Addr() string { return t.ln.Addr().String() }

// Stats returns the transport's counters.
func (t *TCPTransport) Stats() TransportStats { return t.counters.stats() }

// Start begins accepting connections and hands every batch received to deliver.
func (t *TCPTransport) Start(deliver func(batch []Message)) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errTransportClosed
	}
	if t.started {
		return errors.New("kommander: tcp transport already started")
	}
	t.started, t.deliver = true, deliver
	t.wg.Add(1)
	go t.acceptLoop()
	return nil
}

// SetPeer records the address of peer id. A changed address takes effect at once: the
// current connection is closed at its next keepalive tick and the new address is dialed
// with the next message.
func (t *TCPTransport) SetPeer(id, addr string) {
	if id == t.cfg.NodeID {
		return
	}
	t.peers.set(id, addr, t.cfg.QueueSize, func(p *peer) {
		t.wg.Add(2)
		go t.runSender(p, p.queue, tcpLaneRaft)
		go t.runSender(p, p.snaps, tcpLaneSnapshot)
	})
}

// RemovePeer forgets peer id: its senders end, its inbound connections are closed, and
// a later handshake from it is refused like a stranger's.
func (t *TCPTransport) RemovePeer(id string) {
	if !t.peers.remove(id) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if in := t.inbound[id]; in != nil {
		for _, c := range in.conns {
			if c != nil {
				c.Close()
			}
		}
	}
}

// SendSnapshot queues snapshot chunks for peer to on the snapshot lane, a connection of
// its own; it never blocks.
func (t *TCPTransport) SendSnapshot(to string, msgs []Message) {
	t.peers.sendSnapshot(to, msgs, &t.counters)
}

// Send queues msgs for peer to; it never blocks. Messages to an unknown peer or
// beyond a full queue are dropped and counted.
func (t *TCPTransport) Send(to string, msgs []Message) { t.peers.send(to, msgs, &t.counters) }

// Close stops the listener and every connection and waits for the goroutines to end.
func (t *TCPTransport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.peers.close()
	close(t.done)
	t.cancel()
	err := t.ln.Close()
	for c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
	t.rl.close()
	return err
}

// track registers an open connection so that Close can close it; it reports false (and
// closes c) when the transport is already closed.
func (t *TCPTransport) track(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		c.Close()
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *TCPTransport) untrack(c net.Conn) {
	c.Close()
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

// ---- outbound ----

// runSender owns one lane's connection to one peer: it dials when there is something to
// send, writes until the connection fails, and redials with capped exponential backoff and
// jitter.
func (t *TCPTransport) runSender(p *peer, q *sendQueue, lane uint8) {
	defer t.wg.Done()
	bo := backoff{max: t.cfg.MaxBackoff}
	buf := make([]byte, 0, tcpWriteBuffer)
	failures := 0
	for {
		select { // dial lazily: an idle peer holds no connection
		case <-t.done:
			return
		case <-p.gone:
			return
		case <-q.wake:
			select { // keep the signal for the write loop
			case q.wake <- struct{}{}:
			default:
			}
		}
		conn, err := t.dial(p, lane)
		if err != nil {
			// A peer that is down would log every backoff step; warn on the first failure
			// in a row and then every 100th.
			level := slog.LevelDebug
			if failures%100 == 0 {
				level = slog.LevelWarn
			}
			failures++
			t.log.Log(t.ctx, level, "connect to peer failed", "peer", p.id, "addr", p.address(), "attempt", failures, "err", err)
			if msgs := q.take(); len(msgs) > 0 { // stale by the time we are back
				t.counters.dropped.Add(uint64(len(msgs)))
				q.giveBack(msgs)
			}
			if waitOrDone(bo.next(), t.done) {
				return
			}
			continue
		}
		failures = 0
		t.counters.connects.Add(1)
		t.log.Debug("connected to peer", "peer", p.id, "addr", conn.RemoteAddr())
		since := time.Now()
		buf, err = t.writeLoop(p, q, conn, buf, lane)
		t.untrack(conn.raw)
		if errors.Is(err, errTransportClosed) || errors.Is(err, errPeerRemoved) {
			return
		}
		t.log.Warn("connection to peer lost", "peer", p.id, "err", err)
		if time.Since(since) > t.cfg.PeerTimeout {
			bo.reset() // it worked for a while: redial at once
			continue
		}
		// A peer that accepts and then drops us at once is not redialed in a tight loop.
		if waitOrDone(bo.next(), t.done) {
			return
		}
	}
}

// dial connects to p, runs TLS and the handshake, and returns the connection ready for
// frames.
func (t *TCPTransport) dial(p *peer, lane uint8) (*trackedConn, error) {
	addr := p.address()
	d := net.Dialer{Timeout: t.cfg.DialTimeout, KeepAlive: t.cfg.PeerTimeout}
	raw, err := d.DialContext(t.ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if !t.track(raw) {
		return nil, errTransportClosed
	}
	conn := raw
	raw.SetDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
	if t.cfg.TLS != nil {
		tc := t.cfg.TLS.Clone()
		if host, _, err := net.SplitHostPort(addr); err == nil {
			setDefault(&tc.ServerName, host)
		}
		tconn := tls.Client(raw, tc)
		if err := tconn.Handshake(); err != nil {
			t.untrack(raw)
			return nil, fmt.Errorf("tls handshake: %w", err)
		}
		conn = tconn
	}
	h := tcpHello{version: tcpHandshakeVersion, lane: lane, cluster: t.cfg.ClusterName,
		from: t.cfg.NodeID, to: p.id, instance: t.instance}
	if err := clientHandshake(conn, h, t.cfg.Secret); err != nil {
		t.untrack(raw)
		if errors.Is(err, ErrAuthFailed) {
			t.counters.authFailures.Add(1)
		}
		return nil, err
	}
	raw.SetDeadline(time.Time{})
	return &trackedConn{Conn: conn, raw: raw, addr: addr}, nil
}

// trackedConn remembers the raw connection under TLS, which is what track registered.
type trackedConn struct {
	net.Conn
	raw  net.Conn
	addr string // as dialed
}

// writeLoop drains q into frames on conn, pings every KeepAlive, and returns when the
// connection fails (the pong reader closes it when pongs stop coming) or on Close. On the
// Raft lane of a plain connection, Send may write batches itself meanwhile (directWriter):
// every write to conn holds d.mu, and what a direct write left goes first.
func (t *TCPTransport) writeLoop(p *peer, q *sendQueue, conn *trackedConn, buf []byte, lane uint8) ([]byte, error) {
	readerDone := make(chan error, 1)
	go func() { readerDone <- t.readPongs(conn) }()
	header := batchHeaderSize(t.cfg.NodeID, p.id)
	d := t.directWriter(p, conn, lane, header)
	defer func() {
		p.direct.CompareAndSwap(d, nil)
		d.close()
		conn.Close()
		<-readerDone
	}()
	bw := bufio.NewWriterSize(conn, tcpWriteBuffer)
	ping := time.NewTicker(t.cfg.KeepAlive)
	defer ping.Stop()
	for {
		select {
		case <-t.done:
			return buf, errTransportClosed
		case <-p.gone:
			return buf, errPeerRemoved
		case err := <-readerDone:
			readerDone <- err // for the deferred wait
			return buf, fmt.Errorf("no pong: %w", err)
		case <-ping.C:
			if p.address() != conn.addr {
				return buf, fmt.Errorf("peer moved from %s to %s", conn.addr, p.address())
			}
			d.mu.Lock()
			pending, err := d.takePending()
			if err == nil {
				conn.SetWriteDeadline(time.Now().Add(t.cfg.PeerTimeout))
				_, err = bw.Write(pending)
				if err == nil {
					_, err = bw.Write([]byte{0, 0, 0, 0})
				}
				if err == nil {
					err = bw.Flush()
				}
			}
			d.mu.Unlock()
			if err != nil {
				return buf, err
			}
			continue
		case <-q.wake:
		}
		d.mu.Lock()
		pending, err := d.takePending()
		if err != nil {
			d.mu.Unlock()
			return buf, fmt.Errorf("direct write: %w", err)
		}
		if len(pending) > 0 {
			conn.SetWriteDeadline(time.Now().Add(t.cfg.PeerTimeout))
			if _, err := bw.Write(pending); err != nil {
				d.mu.Unlock()
				return buf, err
			}
		}
		msgs := q.take()
		var written int
		buf, written, err = t.writeFrames(bw, conn, p, msgs, header, buf)
		d.mu.Unlock()
		if err != nil {
			written = 0 // in the bufio buffer or the kernel's, but not known to be sent
		}
		t.counters.sent.Add(uint64(written))
		t.counters.dropped.Add(uint64(len(msgs) - written))
		q.giveBack(msgs)
		if err != nil {
			return buf, err
		}
	}
}

// directWriter returns the directWriter of a connection's writer goroutine, published on
// p for Send when Send may write to conn itself: the Raft lane of a plain TCP connection.
// Otherwise it is closed, and only orders the writer's own writes.
func (t *TCPTransport) directWriter(p *peer, conn *trackedConn, lane uint8, header int) *directWriter {
	d := &directWriter{closed: true, self: t.cfg.NodeID, peer: p.id, header: header, max: t.cfg.MaxBatchBytes}
	if !directWritesSupported || lane != tcpLaneRaft || t.cfg.TLS != nil || t.cfg.noDirectWrites {
		return d
	}
	sc, ok := conn.raw.(syscall.Conn)
	if !ok {
		return d
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return d
	}
	d.rc, d.closed = rc, false
	p.direct.Store(d)
	return d
}

// appendFrame appends one TCP frame to dst: the u32 length, then the batch of msgs.
func appendFrame(dst []byte, from, to string, msgs []Message) ([]byte, error) {
	start := len(dst)
	dst, err := appendBatch(append(dst, 0, 0, 0, 0), from, to, msgs)
	if err != nil {
		return dst, err
	}
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst, nil
}

// writeFrames encodes msgs into as few frames as MaxBatchBytes allows and writes them with
// one flush. It returns how many messages it wrote: a message too large for any frame is
// dropped (and logged).
func (t *TCPTransport) writeFrames(bw *bufio.Writer, conn net.Conn, p *peer, msgs []Message, header int, buf []byte) ([]byte, int, error) {
	conn.SetWriteDeadline(time.Now().Add(t.cfg.PeerTimeout))
	written := 0
	for batch := range splitBatches(msgs, header, t.cfg.MaxBatchBytes, t.log, p.id) {
		var err error
		if buf, err = appendFrame(buf[:0], t.cfg.NodeID, p.id, batch); err != nil {
			return buf, written, err
		}
		if _, err := bw.Write(buf); err != nil {
			return buf, written, err
		}
		written += len(batch)
	}
	if cap(buf) > 1<<20 {
		buf = make([]byte, 0, tcpWriteBuffer) // do not pin one huge snapshot frame forever
	}
	return buf, written, bw.Flush()
}

// readPongs reads the server's pongs; PeerTimeout without one means the connection is
// dead (S28). It closes conn on return so that the writer notices at once.
func (t *TCPTransport) readPongs(conn net.Conn) error {
	defer conn.Close()
	var hdr [4]byte
	for {
		conn.SetReadDeadline(time.Now().Add(t.cfg.PeerTimeout))
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			return err
		}
		if n := binary.LittleEndian.Uint32(hdr[:]); n != 0 {
			return fmt.Errorf("%w: peer sent a %d-byte frame on an outbound connection", ErrMalformed, n)
		}
	}
}

// ---- inbound ----

func (t *TCPTransport) acceptLoop() {
	defer t.wg.Done()
	bo := backoff{max: t.cfg.MaxBackoff}
	for {
		c, err := t.ln.Accept()
		if err != nil {
			select {
			case <-t.done:
				return
			default:
			}
			t.rl.warn(t.log, "accept failed", "err", err) // e.g. out of file descriptors
			if waitOrDone(bo.next(), t.done) {
				return
			}
			continue
		}
		bo.reset()
		select {
		case t.handshakes <- struct{}{}:
		default:
			// Unauthenticated connections cost a goroutine each until their handshake
			// deadline; beyond a bound, newcomers are turned away at once.
			t.counters.rejected.Add(1)
			t.rl.warn(t.log, "too many handshakes in progress; connection refused", "remote", c.RemoteAddr().String())
			c.Close()
			continue
		}
		if !t.track(c) {
			return
		}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			defer t.untrack(c)
			t.serveInbound(c)
		}()
	}
}

// serveInbound runs TLS and the handshake on an accepted connection, then reads frames
// until it fails.
func (t *TCPTransport) serveInbound(raw net.Conn) {
	log := t.log.With("remote", raw.RemoteAddr().String())
	raw.SetDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
	conn := raw
	if t.cfg.TLS != nil {
		tconn := tls.Server(raw, t.cfg.TLS)
		if err := tconn.Handshake(); err != nil {
			<-t.handshakes
			t.counters.rejected.Add(1)
			t.counters.authFailures.Add(1)
			t.rl.warn(log, "inbound tls handshake failed", "err", err)
			return
		}
		conn = tconn
	}
	h, err := t.serverHandshake(conn)
	<-t.handshakes
	if err != nil {
		t.counters.rejected.Add(1)
		if errors.Is(err, ErrAuthFailed) {
			t.counters.authFailures.Add(1)
		}
		if errors.Is(err, ErrDuplicateNodeID) {
			t.counters.duplicates.Add(1)
			t.rl.log(log, slog.LevelError, "node ID connected from two processes; refusing the newcomer", "peer", h.from, "err", err)
		} else {
			t.rl.warn(log, "inbound handshake refused: "+refusalCode(err), "peer", h.from, "err", err)
		}
		return
	}
	defer t.releaseInbound(h, conn)
	raw.SetDeadline(time.Time{})
	err = t.readFrames(conn, h.from, log.With("peer", h.from))
	select {
	case <-t.done:
	default:
		t.rl.log(log, slog.LevelInfo, "inbound connection ended", "peer", h.from, "err", err)
	}
}

// readFrames reads frames from an authenticated peer and delivers their messages. A
// frame that does not decode is refused and counted, and the connection carries on: its
// length prefix still frames the next one (S28).
func (t *TCPTransport) readFrames(conn net.Conn, peer string, log *slog.Logger) error {
	br := bufio.NewReaderSize(conn, tcpReadBuffer)
	var hdr [4]byte
	for {
		conn.SetReadDeadline(time.Now().Add(t.cfg.PeerTimeout))
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return err
		}
		n := int64(binary.LittleEndian.Uint32(hdr[:]))
		if n == 0 { // ping
			conn.SetWriteDeadline(time.Now().Add(t.cfg.PeerTimeout))
			if _, err := conn.Write(hdr[:]); err != nil {
				return err
			}
			continue
		}
		if n > int64(t.lim.maxBatchBytes) {
			t.counters.rejected.Add(1)
			t.rl.warn(log, "oversize frame skipped", "bytes", n, "limit", t.lim.maxBatchBytes)
			if _, err := io.CopyN(io.Discard, br, n); err != nil {
				return fmt.Errorf("skipping an oversize frame: %w", err)
			}
			continue
		}
		frame, consumed, err := t.budget.read(br, int(n), int(n))
		if errors.Is(err, errInboundFull) {
			// S32: the length prefix still frames the next one, so only this frame is lost.
			t.counters.rejected.Add(1)
			t.rl.warn(log, "frame skipped: inbound buffers full", "bytes", n, "MaxInboundBytes", t.budget.limit)
			if _, err := io.CopyN(io.Discard, br, n-int64(consumed)); err != nil {
				return fmt.Errorf("skipping a frame: %w", err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("truncated frame: %w", err)
		}
		_ = deliverBatch(frame, peer, t.cfg.NodeID, t.lim, &t.counters, t.deliver, t.rl, log)
		t.budget.give(cap(frame))
	}
}
