package kommander

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// This file holds what the TCP and HTTP transports share: their configuration, their
// counters, the bounded per-peer send queue and the shared-secret MAC.

// ErrClusterMismatch is wrapped by errors reporting a peer that belongs to another cluster.
var ErrClusterMismatch = errors.New("kommander: peer belongs to another cluster")

// ErrAuthFailed is wrapped by errors reporting a peer that failed to prove the shared secret
// (or a certificate check), or that replayed a request.
var ErrAuthFailed = errors.New("kommander: peer authentication failed")

// ErrDuplicateNodeID is wrapped by errors reporting that a second process uses a node ID
// that is already connected (S30).
var ErrDuplicateNodeID = errors.New("kommander: node ID already in use by another process")

// errTransportClosed is returned by operations on a closed transport.
var errTransportClosed = errors.New("kommander: transport closed")

// Defaults of TransportConfig.
const (
	DefaultTransportQueueSize     = 8192
	DefaultTransportMaxBatchBytes = 16 << 20
	DefaultTransportDialTimeout   = 2 * time.Second
	DefaultTransportHandshake     = 2 * time.Second
	DefaultTransportKeepAlive     = time.Second
	DefaultTransportPeerTimeout   = 5 * time.Second
	DefaultTransportMaxBackoff    = time.Second
	DefaultTransportMaxClockSkew  = 30 * time.Second
	minTransportBackoff           = 10 * time.Millisecond
	minSecretBytes                = 16
	maxNameBytes                  = 255
	minMaxBatchBytes              = 4 << 10
)

// TransportConfig configures a TCP or HTTP transport. The zero value of every optional
// field takes the default named in its comment.
type TransportConfig struct {
	// NodeID is this node's ID, sent in every handshake and batch header. Required; at most
	// 255 bytes.
	NodeID string
	// Addr is the address to listen on, like "10.0.0.1:7000" or "127.0.0.1:0" (any free
	// port; Addr() then reports the one bound). Required for TCP. For HTTP an empty Addr
	// starts no listener: mount Handler() in your own server instead.
	Addr string
	// ClusterName must be equal on every node of a cluster; a peer with another name is
	// refused, so two clusters on one network never mix. At most 255 bytes; may be empty.
	ClusterName string
	// Secret, when set, is a shared key (at least 16 bytes) that every peer must prove it
	// holds: TCP with an HMAC-SHA256 challenge-response in the handshake, HTTP by signing
	// each request. It never crosses the wire. A peer without it gets nothing in.
	Secret []byte
	// TLS, when set, wraps every connection in TLS. It serves as the server config for
	// inbound connections (set Certificates, and ClientAuth/ClientCAs for mutual TLS) and,
	// cloned, as the client config for outbound ones (RootCAs, and Certificates for mutual
	// TLS); ServerName defaults to the peer address's host.
	TLS *tls.Config
	// Logger receives connection events and refusals. Default: slog.Default().
	Logger *slog.Logger
	// QueueSize is the number of messages queued per peer before Send drops (S29).
	// Default DefaultTransportQueueSize.
	QueueSize int
	// MaxBatchBytes bounds one encoded batch in both directions: larger inbound frames and
	// bodies are refused, and outbound messages are split to fit (a single message that
	// cannot fit is dropped and counted). Default DefaultTransportMaxBatchBytes.
	MaxBatchBytes int
	// DialTimeout bounds a TCP connect. Default DefaultTransportDialTimeout.
	DialTimeout time.Duration
	// HandshakeTimeout bounds the TLS and kommander handshakes. Default
	// DefaultTransportHandshake.
	HandshakeTimeout time.Duration
	// KeepAlive is how often an outbound TCP connection is pinged so that a dead one is
	// noticed (S28). Default DefaultTransportKeepAlive; must be below PeerTimeout.
	KeepAlive time.Duration
	// PeerTimeout is how long a connection, frame or request may stay silent or unfinished
	// before it is treated as dead and replaced (S28). It is also how long a node ID must
	// be quiet before another process may take it over (S30). Default
	// DefaultTransportPeerTimeout.
	PeerTimeout time.Duration
	// MaxBackoff caps the exponential backoff (with jitter) between reconnect attempts to
	// a peer. Default DefaultTransportMaxBackoff.
	MaxBackoff time.Duration
	// MaxClockSkew is how far the timestamp of a signed HTTP request may be from this
	// node's clock. Default DefaultTransportMaxClockSkew.
	MaxClockSkew time.Duration
	// Status, when set, is served as JSON by the HTTP transport at GET
	// /kommander/v1/status (the node's partitions: role, term, leader, commit, applied).
	Status func() any
}

// withDefaults returns c with every zero optional field set to its default.
func (c TransportConfig) withDefaults() TransportConfig {
	setDefault(&c.Logger, slog.Default())
	setDefault(&c.QueueSize, DefaultTransportQueueSize)
	setDefault(&c.MaxBatchBytes, DefaultTransportMaxBatchBytes)
	setDefault(&c.DialTimeout, DefaultTransportDialTimeout)
	setDefault(&c.HandshakeTimeout, DefaultTransportHandshake)
	setDefault(&c.KeepAlive, DefaultTransportKeepAlive)
	setDefault(&c.PeerTimeout, DefaultTransportPeerTimeout)
	setDefault(&c.MaxBackoff, DefaultTransportMaxBackoff)
	setDefault(&c.MaxClockSkew, DefaultTransportMaxClockSkew)
	return c
}

// Validate reports the first setting that cannot work. Zero optional fields are fine: they
// take their defaults.
func (c TransportConfig) Validate() error {
	d := c.withDefaults()
	switch {
	case c.NodeID == "":
		return errors.New("kommander: transport config: NodeID is required")
	case len(c.NodeID) > maxNameBytes:
		return fmt.Errorf("kommander: transport config: NodeID is %d bytes, at most %d", len(c.NodeID), maxNameBytes)
	case len(c.ClusterName) > maxNameBytes:
		return fmt.Errorf("kommander: transport config: ClusterName is %d bytes, at most %d", len(c.ClusterName), maxNameBytes)
	case c.Secret != nil && len(c.Secret) < minSecretBytes:
		return fmt.Errorf("kommander: transport config: Secret is %d bytes, at least %d", len(c.Secret), minSecretBytes)
	case d.QueueSize < 1:
		return fmt.Errorf("kommander: transport config: QueueSize %d must be positive", c.QueueSize)
	case d.MaxBatchBytes < minMaxBatchBytes:
		return fmt.Errorf("kommander: transport config: MaxBatchBytes %d is below %d", c.MaxBatchBytes, minMaxBatchBytes)
	case d.DialTimeout < 0 || d.HandshakeTimeout < 0 || d.KeepAlive < 0 || d.PeerTimeout < 0 ||
		d.MaxBackoff < 0 || d.MaxClockSkew < 0:
		return errors.New("kommander: transport config: durations must not be negative")
	case d.KeepAlive >= d.PeerTimeout:
		return fmt.Errorf("kommander: transport config: KeepAlive %v must be below PeerTimeout %v, or live connections time out", d.KeepAlive, d.PeerTimeout)
	}
	return nil
}

// limits is what the decoder accepts from peers of this transport.
func (c TransportConfig) limits() codecLimits {
	return codecLimits{maxBatchBytes: c.MaxBatchBytes}.withDefaults()
}

// TransportStats are a transport's counters since it was created, in messages unless
// the name says otherwise.
type TransportStats struct {
	// Sent counts messages written to peers.
	Sent uint64
	// Dropped counts messages given to Send that never left: queue full (S29), unknown
	// peer, too large for one batch, or lost with a failed connection or request.
	Dropped uint64
	// Received counts messages delivered to the node.
	Received uint64
	// Rejected counts inbound messages, batches and connections refused: malformed,
	// oversize, wrong version, wrong cluster, wrong sender, failed authentication.
	Rejected uint64
	// AuthFailures counts peers (connections or requests) that failed authentication.
	AuthFailures uint64
	// DuplicateNodeIDs counts connections or requests refused because another process
	// holds their node ID (S30).
	DuplicateNodeIDs uint64
	// Connects counts outbound connections established (TCP).
	Connects uint64
}

type transportCounters struct {
	sent, dropped, received, rejected, authFailures, duplicates, connects atomic.Uint64
}

func (c *transportCounters) stats() TransportStats {
	return TransportStats{
		Sent: c.sent.Load(), Dropped: c.dropped.Load(), Received: c.received.Load(),
		Rejected: c.rejected.Load(), AuthFailures: c.authFailures.Load(),
		DuplicateNodeIDs: c.duplicates.Load(), Connects: c.connects.Load(),
	}
}

// Lanes: snapshot chunks travel apart from the rest so they never delay heartbeats.
const (
	laneRaft     = 0
	laneSnapshot = 1
	laneCount    = 2
)

// laneOf picks the lane a message travels on.
func laneOf(m *Message) int {
	if m.Type == msgSnapshot {
		return laneSnapshot
	}
	return laneRaft
}

// sendQueue is a bounded queue of messages to one peer on one lane. push never blocks;
// the lane's sender takes everything queued at once and writes it as few batches.
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
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return true
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

// peer is one peer's address and send queues; the TCP and HTTP transports share it.
type peer struct {
	id     string
	mu     sync.Mutex
	addr   string // TCP: host:port; HTTP: the URL of the peer's raft endpoint
	queues [laneCount]*sendQueue
}

func (p *peer) address() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr
}

// peerSet is the peers a transport sends to.
type peerSet struct {
	mu     sync.Mutex
	closed bool
	peers  map[string]*peer
}

// set records addr for peer id. For a new peer it makes the lanes' queues and calls start
// for each lane, under the lock, so that close cannot miss a sender that is starting.
func (s *peerSet) set(id, addr string, queueSize int, start func(p *peer, lane uint8)) {
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
	p := &peer{id: id, addr: addr}
	for lane := range p.queues {
		p.queues[lane] = newSendQueue(queueSize)
		start(p, uint8(lane))
	}
	s.peers[id] = p
}

// send queues msgs for peer to without blocking; an unknown peer or a full queue drops
// them, counted.
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
	pushSplit(&p.queues, msgs, c)
}

// close makes later calls to set do nothing.
func (s *peerSet) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

// pushSplit queues msgs on the lanes of one peer, counting drops.
func pushSplit(queues *[laneCount]*sendQueue, msgs []Message, c *transportCounters) {
	snap := false
	for i := range msgs {
		if laneOf(&msgs[i]) != laneRaft {
			snap = true
			break
		}
	}
	if !snap {
		if !queues[laneRaft].push(msgs) {
			c.dropped.Add(uint64(len(msgs)))
		}
		return
	}
	for i := range msgs {
		if !queues[laneOf(&msgs[i])].push(msgs[i : i+1]) {
			c.dropped.Add(1)
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

// mac is HMAC-SHA256 under secret of a label and fields, each length-prefixed so that no
// two different field lists hash alike.
func mac(secret []byte, label string, fields ...[]byte) []byte {
	h := hmac.New(sha256.New, secret)
	var n [4]byte
	binary.LittleEndian.PutUint32(n[:], uint32(len(label)))
	h.Write(n[:])
	io.WriteString(h, label)
	for _, f := range fields {
		binary.LittleEndian.PutUint32(n[:], uint32(len(f)))
		h.Write(n[:])
		h.Write(f)
	}
	return h.Sum(nil)
}

// newInstanceID returns a random ID for one transport's lifetime: it tells a reconnect of
// the same process from a second process that uses the same node ID (S30).
func newInstanceID() (uint64, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return 0, fmt.Errorf("kommander: instance ID: %w", err)
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// newTransport builds the network transport kind names; the node calls it with its Config
// translated into a TransportConfig.
func newTransport(kind TransportKind, cfg TransportConfig) (Transport, error) {
	switch kind {
	case TCP:
		return NewTCPTransport(cfg)
	case HTTP:
		return NewHTTPTransport(cfg)
	}
	return nil, fmt.Errorf("kommander: unknown transport kind %d", int(kind))
}
