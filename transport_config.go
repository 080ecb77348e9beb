package kommander

// The configuration the TCP and HTTP transports share, its defaults and checks, and the
// counters both report.

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// Defaults of TransportConfig. Each is explained on the TransportConfig field it fills.
const (
	DefaultTransportQueueSize     = 8192
	DefaultTransportMaxBatchBytes = 16 << 20
	DefaultTransportDialTimeout   = 2 * time.Second
	DefaultTransportHandshake     = 2 * time.Second
	DefaultTransportKeepAlive     = time.Second
	DefaultTransportPeerTimeout   = 5 * time.Second
	DefaultTransportMaxBackoff    = time.Second
	DefaultTransportMaxClockSkew  = 30 * time.Second
	// DefaultTransportInboundBatches is how many batches of MaxBatchBytes the default
	// MaxInboundBytes holds.
	DefaultTransportInboundBatches = 4
)

// Bounds that Validate enforces; maxNameBytes also bounds the names a peer may send.
const (
	minSecretBytes   = 16
	maxNameBytes     = 255
	minMaxBatchBytes = 4 << 10
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
	// QueueSize is the number of messages queued per peer before Send drops.
	// Default DefaultTransportQueueSize.
	QueueSize int
	// MaxBatchBytes bounds one encoded batch in both directions: larger inbound frames and
	// bodies are refused, and outbound messages are split to fit (a single message that
	// cannot fit is dropped and counted). Default DefaultTransportMaxBatchBytes.
	MaxBatchBytes int
	// MaxInboundBytes bounds the memory that inbound frames (TCP) and request bodies (HTTP)
	// hold while they are read and decoded, summed over all connections and requests: no
	// number of connections, hostile or not, makes the transport buffer more than this. A
	// buffer starts small and grows only as bytes arrive; a frame or body that would take
	// the total beyond the bound is refused (TCP skips the frame, HTTP answers 503) and its
	// sender retries. Outside this bound are fixed per-connection costs: a 64 KiB read
	// buffer per established TCP connection (at most one per peer), per TCP handshake in
	// progress (at most 256) a few KiB or with TLS up to about 100 KiB, and for HTTP what
	// net/http keeps per connection and request header. Must be at least MaxBatchBytes. Default
	// DefaultTransportInboundBatches times MaxBatchBytes (64 MiB with the default
	// MaxBatchBytes).
	MaxInboundBytes int
	// DialTimeout bounds a TCP connect. Default DefaultTransportDialTimeout.
	DialTimeout time.Duration
	// HandshakeTimeout bounds the TLS and kommander handshakes. Default
	// DefaultTransportHandshake.
	HandshakeTimeout time.Duration
	// KeepAlive is how often an outbound TCP connection is pinged so that a dead one is
	// noticed. Default DefaultTransportKeepAlive; must be below PeerTimeout.
	KeepAlive time.Duration
	// PeerTimeout is how long a connection, frame or request may stay silent or unfinished
	// before it is treated as dead and replaced. It is also how long a node ID must be
	// quiet before another process may take it over. Default
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

	// noDirectWrites makes every TCP batch go through the connection's writer goroutine
	// (tests: the path a full socket or TLS takes).
	noDirectWrites bool
}

// withDefaults returns c with every zero optional field set to its default.
func (c TransportConfig) withDefaults() TransportConfig {
	setDefault(&c.Logger, slog.Default())
	setDefault(&c.QueueSize, DefaultTransportQueueSize)
	setDefault(&c.MaxBatchBytes, DefaultTransportMaxBatchBytes)
	setDefault(&c.MaxInboundBytes, DefaultTransportInboundBatches*c.MaxBatchBytes)
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
	case d.MaxInboundBytes < d.MaxBatchBytes:
		return fmt.Errorf("kommander: transport config: MaxInboundBytes %d is below MaxBatchBytes %d, so a full batch could never be read", d.MaxInboundBytes, d.MaxBatchBytes)
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
	// Dropped counts messages given to Send that never left: queue full, unknown
	// peer, too large for one batch, or lost with a failed connection or request.
	Dropped uint64
	// Received counts messages delivered to the node.
	Received uint64
	// Rejected counts inbound messages, batches and connections refused: malformed,
	// oversize, over the MaxInboundBytes bound, wrong version, wrong cluster, wrong or
	// unknown sender, failed authentication.
	Rejected uint64
	// AuthFailures counts peers (connections or requests) that failed authentication.
	AuthFailures uint64
	// DuplicateNodeIDs counts connections or requests refused because another process
	// holds their node ID.
	DuplicateNodeIDs uint64
	// Connects counts outbound connections established (TCP).
	Connects uint64
}

type transportCounters struct {
	sent, dropped, received, rejected, authFailures, duplicates, connects atomic.Uint64
	// Sends written by Send itself, and those of them the socket took only in part
	// (directWriter); for tests.
	directWrites, directPartial atomic.Uint64
}

func (c *transportCounters) stats() TransportStats {
	return TransportStats{
		Sent: c.sent.Load(), Dropped: c.dropped.Load(), Received: c.received.Load(),
		Rejected: c.rejected.Load(), AuthFailures: c.authFailures.Load(),
		DuplicateNodeIDs: c.duplicates.Load(), Connects: c.connects.Load(),
	}
}

// transportConfigFor translates a node's Config into the configuration of its network
// transport; status feeds the HTTP transport's status endpoint.
func transportConfigFor(cfg Config, status func() any) TransportConfig {
	return TransportConfig{
		NodeID:        cfg.NodeID,
		Addr:          cfg.Addr,
		ClusterName:   cfg.ClusterName,
		Secret:        cfg.Secret,
		TLS:           cfg.TLS,
		Logger:        cfg.Logger,
		MaxBatchBytes: max(DefaultTransportMaxBatchBytes, 2*cfg.MaxMessageBytes),
		Status:        status,
	}
}
