package kommander

// What the TCP and HTTP transports share to know their peers: the errors that report a
// refused peer, the shared-secret MAC under both handshakes, and the instance ID that tells
// a reconnect from a second process with the same node ID (S30).

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ErrClusterMismatch is wrapped by errors reporting a peer that belongs to another cluster.
var ErrClusterMismatch = errors.New("kommander: peer belongs to another cluster")

// ErrAuthFailed is wrapped by errors reporting a peer that failed to prove the shared secret
// (or a certificate check), or that replayed a request.
var ErrAuthFailed = errors.New("kommander: peer authentication failed")

// ErrDuplicateNodeID is wrapped by errors reporting that a second process uses a node ID
// that is already connected.
var ErrDuplicateNodeID = errors.New("kommander: node ID already in use by another process")

// ErrUnknownPeer is wrapped by errors reporting a peer whose node ID is not one of the
// members this node knows: only IDs given to SetPeer may send to a transport.
var ErrUnknownPeer = errors.New("kommander: node ID is not a known member")

// refusalCodes name the sentinel behind a refusal: in HTTP's X-Kommander-Error header, so
// that the sender logs and counts what the receiver decided, and in the log lines of both
// transports, so that each kind of refusal has its own rate limit.
var refusalCodes = []struct {
	code string
	err  error
}{
	{"version", ErrVersion}, {"malformed", ErrMalformed}, {"cluster", ErrClusterMismatch},
	{"auth", ErrAuthFailed}, {"duplicate", ErrDuplicateNodeID}, {"unknown-peer", ErrUnknownPeer},
	{"busy", errInboundFull},
}

// refusalCode returns the code of the sentinel err wraps, or "refused".
func refusalCode(err error) string {
	for _, c := range refusalCodes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return "refused"
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
