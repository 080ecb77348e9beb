package kommander

import (
	"errors"
	"fmt"
)

// TransportKind selects the network transport a node uses.
type TransportKind int

const (
	// TCP is the default transport: a long-lived binary connection per peer.
	TCP TransportKind = iota
	// HTTP carries the same binary batches as POST bodies over keep-alive connections.
	HTTP
)

// String returns "tcp" or "http".
func (k TransportKind) String() string {
	switch k {
	case TCP:
		return "tcp"
	case HTTP:
		return "http"
	}
	return "unknown"
}

// Transport moves batches of Raft messages between nodes. TCP, HTTP and the in-memory
// network implement it; all of them encode batches with the one codec in codec.go (the
// memory network may skip encoding).
type Transport interface {
	// Start begins accepting traffic. deliver is called with every batch received from a
	// peer (all messages in a batch come from one node); it is called from the transport's
	// own goroutines and must not block for long. deliver may keep the slice.
	Start(deliver func(batch []Message)) error
	// SetPeer records the address at which peer id is reached, replacing any earlier one.
	// A transport reaches a peer only at the address given here.
	SetPeer(id, addr string)
	// RemovePeer forgets peer id: messages to it are dropped and its traffic is refused
	// (its open connections are closed), as for a node never given to SetPeer. A node
	// calls it for a member removed from the cluster, so that a removed node cannot
	// disturb the others. SetPeer adds it again.
	RemovePeer(id string)
	// Send queues msgs (all addressed to peer to) and returns at once. It never blocks: a
	// full queue or an unknown peer drops the messages, which Raft tolerates. Send may keep
	// msgs until they are written; the caller must not modify them afterwards.
	Send(to string, msgs []Message)
	// Close stops the transport and waits for its goroutines to end.
	Close() error
}

// errTransportClosed is returned by operations on a closed transport.
var errTransportClosed = errors.New("kommander: transport closed")

// errPeerRemoved ends a sender whose peer was removed (RemovePeer).
var errPeerRemoved = errors.New("kommander: peer removed")

// newTransport builds the network transport kind names.
func newTransport(kind TransportKind, cfg TransportConfig) (Transport, error) {
	switch kind {
	case TCP:
		return NewTCPTransport(cfg)
	case HTTP:
		return NewHTTPTransport(cfg)
	}
	return nil, fmt.Errorf("kommander: unknown transport kind %d", int(kind))
}

// newNetworkTransport builds the TCP or HTTP transport cfg asks for; status feeds the HTTP
// transport's status endpoint. Config.Validate refuses any other Transport value, so a
// node never reaches the error for an unknown kind.
func newNetworkTransport(cfg Config, status func() any) (Transport, error) {
	return newTransport(cfg.Transport, transportConfigFor(cfg, status))
}
