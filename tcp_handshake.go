package kommander

// The TCP handshake (after TLS, when configured), client first; strings are u16-length-prefixed:
//
//	hello:  "KMDR" u8 version u8 lane u8 flags(bit 0: has secret) cluster from to
//	        u64 instance [32]clientNonce
//	        (lane 0 carries Raft's messages, lane 1 snapshot chunks; a hello for any other
//	        lane is refused, and both lanes of a peer must come from one process, S32)
//	reply:  "KMDR" u8 version u8 status serverID [32]serverNonce [32]serverProof
//	proof:  [32]clientProof                      (zeros when there is no secret)
//	final:  u8 status
//
// The server proves the secret first, so a client never hands traffic to an impostor; the
// proofs are HMAC-SHA256(secret, role, cluster, from, to, clientNonce, serverNonce) and are
// compared in constant time. Any status but tcpOK is followed by a close.

import (
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
)

const (
	tcpMagic            = "KMDR"
	tcpHandshakeVersion = 1
	tcpNonceSize        = 32
	tcpProofSize        = 32
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
	tcpUnknownPeer
)

var tcpStatusText = [...]string{
	tcpOK: "ok", tcpBadVersion: "unsupported handshake version", tcpBadCluster: "different cluster",
	tcpBadTarget: "wrong node", tcpAuthMismatch: "one side has a shared secret and the other not",
	tcpAuthFailed: "shared secret proof failed", tcpDuplicate: "node ID already connected from another process",
	tcpMalformed: "malformed handshake", tcpClosing: "closing",
	tcpUnknownPeer: "node ID is not a member this node knows",
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
	case tcpUnknownPeer:
		base = ErrUnknownPeer
	default:
		base = errors.New("kommander: handshake refused")
	}
	return fmt.Errorf("%w: peer says %s", base, text)
}

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
// one. The returned hello is filled as far as it was read, for logs.
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
	h.version, h.secret = head[4], head[6]&1 != 0
	if h.version != tcpHandshakeVersion {
		return refuse(tcpBadVersion, fmt.Errorf("%w: handshake version %d", ErrVersion, h.version))
	}
	if h.lane = head[5]; h.lane >= tcpLanes || head[6]&^1 != 0 {
		// S32: a lane that nothing sends on is a door past the checks of the used ones.
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
		switch {
		case errors.Is(err, errTransportClosed):
			status = tcpClosing
		case errors.Is(err, ErrUnknownPeer):
			status = tcpUnknownPeer
		}
		return final(status, err)
	}
	if _, err := conn.Write([]byte{tcpOK}); err != nil {
		t.releaseInbound(h, conn) // or the node ID stays taken by a dead connection
		return h, err
	}
	return h, nil
}

// claimInbound registers conn as node h.from's inbound connection on lane h.lane. The same
// process reconnecting replaces its old connection of that lane (which may be dead and not
// yet timed out). Another process with the same node ID while a connection of the first
// one lives, on either lane, is refused and reported (S30): letting two processes act as
// one node could make it vote twice, and the first one keeps the ID until it goes quiet
// for PeerTimeout. The claim is per node ID, not per node ID and lane, so that no second
// process gets past it on the other lane (S32).
//
// Only a member this node knows (given to SetPeer) may claim an ID, so that the inbound
// connections, and the frames they may buffer, are bounded by the membership (S32). With a
// shared secret this is checked after the proofs, so that a stranger learns nothing of the
// membership; no frame is read before it either way.
func (t *TCPTransport) claimInbound(h tcpHello, conn net.Conn) error {
	if !t.peers.known(h.from) {
		return fmt.Errorf("%w: %q", ErrUnknownPeer, h.from)
	}
	key := h.from
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errTransportClosed
	}
	old := t.inbound[key]
	if old != nil && old.instance != h.instance {
		for _, c := range old.conns {
			if c != nil {
				return fmt.Errorf("%w: %q is connected from %s and now also from %s",
					ErrDuplicateNodeID, h.from, c.RemoteAddr(), conn.RemoteAddr())
			}
		}
	}
	if old == nil || old.instance != h.instance {
		old = &tcpInbound{instance: h.instance}
		t.inbound[key] = old
	}
	if c := old.conns[h.lane]; c != nil {
		c.Close()
	}
	old.conns[h.lane] = conn
	return nil
}

// releaseInbound forgets conn as node h.from's inbound connection, if it still is.
func (t *TCPTransport) releaseInbound(h tcpHello, conn net.Conn) {
	key := h.from
	t.mu.Lock()
	defer t.mu.Unlock()
	if in := t.inbound[key]; in != nil && in.conns[h.lane] == conn {
		in.conns[h.lane] = nil
		if in.conns == [tcpLanes]net.Conn{} {
			delete(t.inbound, key)
		}
	}
}
