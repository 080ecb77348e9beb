package kommander

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"
)

// The TCP transport keeps one long-lived outbound connection per peer and lane (Raft
// traffic, and snapshots apart so that they never delay heartbeats). A writer goroutine per
// connection drains the lane's queue into as few frames as fit and flushes them in one
// write; the connection of the other direction is the peer's own outbound one.
//
// Handshake (after TLS, when configured), client first; strings are u16-length-prefixed:
//
//	hello:  "KMDR" u8 version u8 lane u8 flags(bit 0: has secret) cluster from to
//	        u64 instance [32]clientNonce
//	reply:  "KMDR" u8 version u8 status serverID [32]serverNonce [32]serverProof
//	proof:  [32]clientProof                      (zeros when there is no secret)
//	final:  u8 status
//
// The server proves the secret first, so a client never hands traffic to an impostor; the
// proofs are HMAC-SHA256(secret, role, cluster, from, to, clientNonce, serverNonce) and are
// compared in constant time. Any status but tcpOK is followed by a close.
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
// frame and nothing else.

const (
	tcpMagic            = "KMDR"
	tcpHandshakeVersion = 1
	tcpNonceSize        = 32
	tcpProofSize        = 32
	tcpReadBuffer       = 64 << 10
	tcpWriteBuffer      = 64 << 10
	tcpMaxHandshakes    = 256 // unauthenticated connections at once
)

// Handshake statuses.
const (
	tcpOK uint8 = iota
	tcpBadVersion
	tcpBadCluster
	tcpBadTarget
	tcpAuthMismatch // one side has a secret and the other does not
	tcpAuthFailed
	tcpDuplicate
	tcpMalformed
	tcpClosing
)

var tcpStatusText = [...]string{
	tcpOK: "ok", tcpBadVersion: "unsupported handshake version", tcpBadCluster: "different cluster",
	tcpBadTarget: "wrong node", tcpAuthMismatch: "one side has a shared secret and the other not",
	tcpAuthFailed: "shared secret proof failed", tcpDuplicate: "node ID already connected from another process",
	tcpMalformed: "malformed handshake", tcpClosing: "closing",
}

// tcpStatusErr turns a refusal into an error that wraps the sentinel a caller acts on.
func tcpStatusErr(s uint8) error {
	text := "unknown status"
	if int(s) < len(tcpStatusText) {
		text = tcpStatusText[s]
	}
	var base error
	switch s {
	case tcpBadVersion:
		base = ErrVersion
	case tcpBadCluster:
		base = ErrClusterMismatch
	case tcpAuthMismatch, tcpAuthFailed:
		base = ErrAuthFailed
	case tcpDuplicate:
		base = ErrDuplicateNodeID
	default:
		base = errors.New("kommander: handshake refused")
	}
	return fmt.Errorf("%w: peer says %s", base, text)
}

// TCPTransport is the default Transport: binary batches over long-lived TCP (or TLS)
// connections. Create it with NewTCPTransport.
type TCPTransport struct {
	cfg      TransportConfig
	lim      codecLimits
	log      *slog.Logger
	ln       net.Listener
	instance uint64
	counters transportCounters

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
	inbound map[inboundKey]*tcpInbound
	conns   map[net.Conn]struct{} // every open connection, closed by Close
}

type inboundKey struct {
	node string
	lane uint8
}

type tcpInbound struct {
	instance uint64
	conn     net.Conn
}

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
		inbound:    make(map[inboundKey]*tcpInbound),
		conns:      make(map[net.Conn]struct{}),
	}
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
	t.peers.set(id, addr, t.cfg.QueueSize, func(p *peer, lane uint8) {
		t.wg.Add(1)
		go t.runSender(p, lane)
	})
}

// Send queues msgs for peer to; it never blocks (S29). Messages to an unknown peer or
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

// runSender owns one lane to one peer: it dials when there is something to send, writes
// until the connection fails, and redials with capped exponential backoff and jitter.
func (t *TCPTransport) runSender(p *peer, lane uint8) {
	defer t.wg.Done()
	q := p.queues[lane]
	bo := backoff{max: t.cfg.MaxBackoff}
	buf := make([]byte, 0, tcpWriteBuffer)
	failures := 0
	for {
		select { // dial lazily: an idle lane holds no connection
		case <-t.done:
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
			t.log.Log(t.ctx, level, "connect to peer failed", "peer", p.id, "addr", p.address(), "lane", lane, "attempt", failures, "err", err)
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
		t.log.Debug("connected to peer", "peer", p.id, "addr", conn.RemoteAddr(), "lane", lane)
		since := time.Now()
		buf, err = t.writeLoop(p, q, conn, buf)
		t.untrack(conn.raw)
		if errors.Is(err, errTransportClosed) {
			return
		}
		t.log.Warn("connection to peer lost", "peer", p.id, "lane", lane, "err", err)
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
		if tc.ServerName == "" {
			if host, _, err := net.SplitHostPort(addr); err == nil {
				tc.ServerName = host
			}
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
// connection fails (the pong reader closes it when pongs stop coming) or on Close.
func (t *TCPTransport) writeLoop(p *peer, q *sendQueue, conn *trackedConn, buf []byte) ([]byte, error) {
	readerDone := make(chan error, 1)
	go func() { readerDone <- t.readPongs(conn) }()
	defer func() {
		conn.Close()
		<-readerDone
	}()
	bw := bufio.NewWriterSize(conn, tcpWriteBuffer)
	ping := time.NewTicker(t.cfg.KeepAlive)
	defer ping.Stop()
	header := batchHeaderSize(t.cfg.NodeID, p.id)
	for {
		select {
		case <-t.done:
			return buf, errTransportClosed
		case err := <-readerDone:
			readerDone <- err // for the deferred wait
			return buf, fmt.Errorf("no pong: %w", err)
		case <-ping.C:
			if p.address() != conn.addr {
				return buf, fmt.Errorf("peer moved from %s to %s", conn.addr, p.address())
			}
			conn.SetWriteDeadline(time.Now().Add(t.cfg.PeerTimeout))
			if _, err := bw.Write([]byte{0, 0, 0, 0}); err != nil {
				return buf, err
			}
			if err := bw.Flush(); err != nil {
				return buf, err
			}
			continue
		case <-q.wake:
		}
		msgs := q.take()
		var err error
		var written int
		buf, written, err = t.writeFrames(bw, conn, p, msgs, header, buf)
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

// writeFrames encodes msgs into as few frames as MaxBatchBytes allows and writes them with
// one flush. It returns how many messages it wrote: a message too large for any frame is
// dropped (and logged).
func (t *TCPTransport) writeFrames(bw *bufio.Writer, conn net.Conn, p *peer, msgs []Message, header int, buf []byte) ([]byte, int, error) {
	conn.SetWriteDeadline(time.Now().Add(t.cfg.PeerTimeout))
	written := 0
	for len(msgs) > 0 {
		n := nextBatch(msgs, header, t.cfg.MaxBatchBytes)
		if n == 0 {
			t.log.Warn("message too large for one batch, dropped", "peer", p.id,
				"type", msgs[0].Type, "partition", msgs[0].Partition, "bytes", encodedMessageSize(&msgs[0]))
			msgs = msgs[1:]
			continue
		}
		var err error
		buf = append(buf[:0], 0, 0, 0, 0)
		if buf, err = appendBatch(buf, t.cfg.NodeID, p.id, msgs[:n]); err != nil {
			return buf, written, err
		}
		binary.LittleEndian.PutUint32(buf, uint32(len(buf)-4))
		if _, err := bw.Write(buf); err != nil {
			return buf, written, err
		}
		written += n
		msgs = msgs[n:]
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
			t.log.Warn("accept failed", "err", err) // e.g. out of file descriptors
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
			t.log.Warn("too many handshakes in progress; connection refused", "remote", c.RemoteAddr().String())
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
			log.Warn("inbound tls handshake failed", "err", err)
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
			log.Error("node ID connected from two processes; refusing the newcomer (S30)", "peer", h.from, "err", err)
		} else {
			log.Warn("inbound handshake refused", "peer", h.from, "err", err)
		}
		return
	}
	defer t.releaseInbound(h, conn)
	raw.SetDeadline(time.Time{})
	err = t.readFrames(conn, h.from, log.With("peer", h.from))
	select {
	case <-t.done:
	default:
		log.Info("inbound connection ended", "peer", h.from, "err", err)
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
			log.Warn("oversize frame skipped", "bytes", n, "limit", t.lim.maxBatchBytes)
			if _, err := io.CopyN(io.Discard, br, n); err != nil {
				return fmt.Errorf("skipping an oversize frame: %w", err)
			}
			continue
		}
		frame, err := readFrame(br, int(n))
		if err != nil {
			return fmt.Errorf("truncated frame: %w", err)
		}
		t.receive(frame, peer, log)
	}
}

// readFrame reads n bytes, growing its buffer as bytes arrive, so that a peer that
// announces a large frame and sends little costs little.
func readFrame(r io.Reader, n int) ([]byte, error) {
	buf := make([]byte, min(n, tcpReadBuffer))
	got := 0
	for {
		m, err := io.ReadFull(r, buf[got:])
		got += m
		if err != nil {
			return nil, err
		}
		if got == n {
			return buf, nil
		}
		k := min(n-got, len(buf))
		buf = slices.Grow(buf, k)[:len(buf)+k]
	}
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

func (t *TCPTransport) receive(frame []byte, peer string, log *slog.Logger) {
	_ = deliverBatch(frame, peer, t.cfg.NodeID, t.lim, &t.counters, t.deliver, log)
}

// ---- handshake ----

type tcpHello struct {
	version  uint8
	lane     uint8
	secret   bool
	cluster  string
	from, to string
	instance uint64
	nonce    [tcpNonceSize]byte
}

func (h *tcpHello) append(b []byte) []byte {
	b = append(b, tcpMagic...)
	b = append(b, h.version, h.lane)
	var flags byte
	if h.secret {
		flags = 1
	}
	b = append(b, flags)
	b = appendString16(b, h.cluster)
	b = appendString16(b, h.from)
	b = appendString16(b, h.to)
	b = binary.LittleEndian.AppendUint64(b, h.instance)
	return append(b, h.nonce[:]...)
}

// readString16 reads a u16-length-prefixed string of at most maxNameBytes.
func readString16(r io.Reader) (string, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return "", err
	}
	l := binary.LittleEndian.Uint16(n[:])
	if l > maxNameBytes {
		return "", fmt.Errorf("%w: name of %d bytes", ErrMalformed, l)
	}
	b := make([]byte, l)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return string(b), nil
}

func proof(secret []byte, role string, h *tcpHello, serverNonce []byte) []byte {
	return mac(secret, role, []byte(h.cluster), []byte(h.from), []byte(h.to), h.nonce[:], serverNonce)
}

// clientHandshake runs the client side; h.nonce is filled in here. The secret (nil for
// none) is proved but never sent.
func clientHandshake(conn net.Conn, h tcpHello, secret []byte) error {
	h.secret = secret != nil
	if _, err := rand.Read(h.nonce[:]); err != nil {
		return err
	}
	if _, err := conn.Write(h.append(nil)); err != nil {
		return fmt.Errorf("send hello: %w", err)
	}
	var head [len(tcpMagic) + 2]byte
	if _, err := io.ReadFull(conn, head[:]); err != nil {
		return fmt.Errorf("read reply: %w", err)
	}
	if string(head[:4]) != tcpMagic {
		return fmt.Errorf("%w: peer is not a kommander node", ErrMalformed)
	}
	if status := head[5]; status != tcpOK {
		return tcpStatusErr(status)
	}
	if head[4] != tcpHandshakeVersion {
		return fmt.Errorf("%w: peer speaks handshake version %d", ErrVersion, head[4])
	}
	serverID, err := readString16(conn)
	if err != nil {
		return fmt.Errorf("read reply: %w", err)
	}
	var rest [tcpNonceSize + tcpProofSize]byte
	if _, err := io.ReadFull(conn, rest[:]); err != nil {
		return fmt.Errorf("read reply: %w", err)
	}
	if serverID != h.to {
		return fmt.Errorf("kommander: dialed %q but %q answered", h.to, serverID)
	}
	serverNonce, serverProof := rest[:tcpNonceSize], rest[tcpNonceSize:]
	answer := make([]byte, tcpProofSize)
	if secret != nil {
		if !hmac.Equal(serverProof, proof(secret, "server", &h, serverNonce)) {
			return fmt.Errorf("%w: peer %q could not prove the shared secret", ErrAuthFailed, serverID)
		}
		answer = proof(secret, "client", &h, serverNonce)
	}
	if _, err := conn.Write(answer); err != nil {
		return fmt.Errorf("send proof: %w", err)
	}
	var final [1]byte
	if _, err := io.ReadFull(conn, final[:]); err != nil {
		return fmt.Errorf("read final status: %w", err)
	}
	if final[0] != tcpOK {
		return tcpStatusErr(final[0])
	}
	return nil
}

// serverHandshake runs the server side and registers the connection as the peer's inbound
// one for its lane. The returned hello is filled as far as it was read, for logs.
func (t *TCPTransport) serverHandshake(conn net.Conn) (tcpHello, error) {
	var h tcpHello
	refuse := func(status uint8, err error) (tcpHello, error) {
		reply := append([]byte(tcpMagic), tcpHandshakeVersion, status)
		conn.Write(reply) // best effort: the peer learns why, then we close
		return h, err
	}
	var head [len(tcpMagic) + 3]byte
	if _, err := io.ReadFull(conn, head[:]); err != nil {
		return h, fmt.Errorf("%w: read hello: %v", ErrMalformed, err)
	}
	if string(head[:4]) != tcpMagic {
		return h, fmt.Errorf("%w: not a kommander hello", ErrMalformed)
	}
	h.version, h.lane, h.secret = head[4], head[5], head[6]&1 != 0
	if h.version != tcpHandshakeVersion {
		return refuse(tcpBadVersion, fmt.Errorf("%w: handshake version %d", ErrVersion, h.version))
	}
	if h.lane >= laneCount || head[6]&^1 != 0 {
		return refuse(tcpMalformed, fmt.Errorf("%w: lane %d flags %#x", ErrMalformed, h.lane, head[6]))
	}
	var err error
	if h.cluster, err = readString16(conn); err == nil {
		if h.from, err = readString16(conn); err == nil {
			h.to, err = readString16(conn)
		}
	}
	var tail [8 + tcpNonceSize]byte
	if err == nil {
		_, err = io.ReadFull(conn, tail[:])
	}
	if err != nil {
		return refuse(tcpMalformed, fmt.Errorf("%w: read hello: %v", ErrMalformed, err))
	}
	h.instance = binary.LittleEndian.Uint64(tail[:8])
	copy(h.nonce[:], tail[8:])
	switch {
	case h.cluster != t.cfg.ClusterName:
		return refuse(tcpBadCluster, fmt.Errorf("%w: peer is in cluster %q, this node in %q", ErrClusterMismatch, h.cluster, t.cfg.ClusterName))
	case h.to != t.cfg.NodeID:
		return refuse(tcpBadTarget, fmt.Errorf("kommander: peer dialed node %q, this is %q", h.to, t.cfg.NodeID))
	case h.from == "" || h.from == t.cfg.NodeID:
		return refuse(tcpDuplicate, fmt.Errorf("%w: peer claims this node's own ID %q", ErrDuplicateNodeID, h.from))
	case h.secret != (t.cfg.Secret != nil):
		return refuse(tcpAuthMismatch, fmt.Errorf("%w: shared secret configured on one side only", ErrAuthFailed))
	}
	reply := append([]byte(tcpMagic), tcpHandshakeVersion, tcpOK)
	reply = appendString16(reply, t.cfg.NodeID)
	var serverNonce [tcpNonceSize]byte
	if _, err := rand.Read(serverNonce[:]); err != nil {
		return h, err
	}
	reply = append(reply, serverNonce[:]...)
	if t.cfg.Secret != nil {
		reply = append(reply, proof(t.cfg.Secret, "server", &h, serverNonce[:])...)
	} else {
		reply = append(reply, make([]byte, tcpProofSize)...)
	}
	if _, err := conn.Write(reply); err != nil {
		return h, err
	}
	var answer [tcpProofSize]byte
	if _, err := io.ReadFull(conn, answer[:]); err != nil {
		return h, fmt.Errorf("%w: read proof: %v", ErrMalformed, err)
	}
	final := func(status uint8, err error) (tcpHello, error) {
		conn.Write([]byte{status})
		return h, err
	}
	if t.cfg.Secret != nil && !hmac.Equal(answer[:], proof(t.cfg.Secret, "client", &h, serverNonce[:])) {
		return final(tcpAuthFailed, fmt.Errorf("%w: peer %q could not prove the shared secret", ErrAuthFailed, h.from))
	}
	if err := t.claimInbound(h, conn); err != nil {
		status := tcpDuplicate
		if errors.Is(err, errTransportClosed) {
			status = tcpClosing
		}
		return final(status, err)
	}
	if _, err := conn.Write([]byte{tcpOK}); err != nil {
		t.releaseInbound(h, conn) // or the node ID stays taken by a dead connection
		return h, err
	}
	return h, nil
}

// claimInbound registers conn as node h.from's inbound connection on its lane. The same
// process reconnecting replaces its old connection (which may be dead and not yet timed
// out). Another process with the same node ID while the first one's connection lives is
// refused and reported (S30): letting two processes act as one node could make it vote
// twice, and the first one keeps the ID until it goes quiet for PeerTimeout.
func (t *TCPTransport) claimInbound(h tcpHello, conn net.Conn) error {
	key := inboundKey{h.from, h.lane}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errTransportClosed
	}
	if old := t.inbound[key]; old != nil {
		if old.instance != h.instance {
			return fmt.Errorf("%w: %q is connected from %s and now also from %s",
				ErrDuplicateNodeID, h.from, old.conn.RemoteAddr(), conn.RemoteAddr())
		}
		old.conn.Close()
	}
	t.inbound[key] = &tcpInbound{instance: h.instance, conn: conn}
	return nil
}

// releaseInbound forgets conn as node h.from's inbound connection, if it still is.
func (t *TCPTransport) releaseInbound(h tcpHello, conn net.Conn) {
	key := inboundKey{h.from, h.lane}
	t.mu.Lock()
	defer t.mu.Unlock()
	if in := t.inbound[key]; in != nil && in.conn == conn {
		delete(t.inbound, key)
	}
}
