package kommander

// The HTTP transport's side of the headers described in http_transport.go: signing a
// request, and checking one before anything of it reaches the node (version, cluster,
// timestamp window, signature, replay, known member, node ID claim), all from the headers,
// before the body is read; the body is then checked against the digest the signature
// covers.

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	httpMACLabel  = "kommander-http-v1"
	maxReplayKeys = 4096
)

// replayKey names one sequence of signed requests: a node's process, and which of its two
// senders (Raft traffic, or snapshot chunks) numbered it.
type replayKey struct {
	node, instance string
	snapshot       bool
}

type replayState struct {
	seq      uint64
	lastSeen time.Time
}

type holder struct {
	instance string
	lastSeen time.Time
}

// httpSignature is the MAC of a request; digest is the SHA-256 of its body.
func httpSignature(secret []byte, method, path, cluster, node, instance, ts, nonce string, digest []byte) []byte {
	return bytes.Clone(newHTTPSigner(secret).sign(method, path, cluster, node, instance, ts, nonce, digest))
}

// httpSigner computes request MACs with one HMAC and one buffer, reused from request to
// request: a fresh HMAC and the fields' conversions cost about twenty allocations per
// request. Not safe for concurrent use.
type httpSigner struct {
	h   hash.Hash
	buf []byte // the MAC's input, then its output
}

func newHTTPSigner(secret []byte) *httpSigner {
	return &httpSigner{h: hmac.New(sha256.New, secret)}
}

// sign returns the MAC of a request, the same bytes as mac over the label and the fields;
// the result is valid until the next call.
func (s *httpSigner) sign(method, path, cluster, node, instance, ts, nonce string, digest []byte) []byte {
	b := appendMACField(s.buf[:0], httpMACLabel)
	for _, f := range [...]string{method, path, cluster, node, instance, ts, nonce} {
		b = appendMACField(b, f)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(digest)))
	b = append(b, digest...)
	s.h.Reset()
	s.h.Write(b)
	s.buf = s.h.Sum(b[:0])
	return s.buf
}

// appendMACField appends f as mac writes each field: its length, then its bytes.
func appendMACField(dst []byte, f string) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(f)))
	return append(dst, f...)
}

// emptyDigest is the SHA-256 of an empty body, which a GET has.
var emptyDigest = sha256.Sum256(nil)

// reqIdentity is what a request's headers claim.
type reqIdentity struct {
	node, instance, ts, nonce string
	sig, digest               []byte
	replay                    replayKey
	seq                       uint64
}

// checkHeaders checks the headers' form and what needs no state: version, cluster, and
// with a shared secret the timestamp window. A request that fails here costs no body
// buffer.
func (t *HTTPTransport) checkHeaders(r *http.Request) (reqIdentity, *httpError) {
	h := r.Header
	id := reqIdentity{node: h.Get(hdrNode), instance: h.Get(hdrInstance)}
	if v := h.Get(hdrVersion); v != strconv.Itoa(codecVersion) {
		return id, &httpError{http.StatusBadRequest, fmt.Errorf("%w: version %q, this node speaks %d", ErrVersion, clip(v), codecVersion)}
	}
	if c := h.Get(hdrCluster); c != t.cfg.ClusterName {
		return id, &httpError{http.StatusForbidden, fmt.Errorf("%w: peer is in cluster %q, this node in %q", ErrClusterMismatch, clip(c), t.cfg.ClusterName)}
	}
	if id.node == "" || len(id.node) > maxNameBytes || id.instance == "" || len(id.instance) > 64 {
		return id, &httpError{http.StatusBadRequest, fmt.Errorf("%w: missing or oversize node or instance header", ErrMalformed)}
	}
	if t.cfg.Secret == nil {
		return id, nil
	}
	id.ts, id.nonce = h.Get(hdrTimestamp), h.Get(hdrNonce)
	sig, err := hex.DecodeString(h.Get(hdrSignature))
	if err != nil || len(sig) != sha256.Size {
		return id, &httpError{http.StatusUnauthorized, fmt.Errorf("%w: missing or malformed signature", ErrAuthFailed)}
	}
	id.sig = sig
	if r.Method == http.MethodGet {
		id.digest = emptyDigest[:] // a GET has no body, whatever the headers say
	} else if id.digest, err = hex.DecodeString(h.Get(hdrDigest)); err != nil || len(id.digest) != sha256.Size {
		return id, &httpError{http.StatusUnauthorized, fmt.Errorf("%w: missing or malformed body digest", ErrAuthFailed)}
	}
	nanos, err := strconv.ParseInt(id.ts, 10, 64)
	if err != nil {
		return id, &httpError{http.StatusUnauthorized, fmt.Errorf("%w: bad timestamp", ErrAuthFailed)}
	}
	if skew := time.Since(time.Unix(0, nanos)); skew > t.cfg.MaxClockSkew || skew < -t.cfg.MaxClockSkew {
		return id, &httpError{http.StatusUnauthorized, fmt.Errorf("%w: timestamp %v away from this node's clock", ErrAuthFailed, skew)}
	}
	digits, snapshot := strings.CutPrefix(id.nonce, httpSnapshotNonce)
	seq, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return id, &httpError{http.StatusUnauthorized, fmt.Errorf("%w: bad nonce", ErrAuthFailed)}
	}
	id.replay, id.seq = replayKey{id.node, id.instance, snapshot}, seq
	return id, nil
}

// authenticate finishes what checkHeaders began, still from the headers alone: with a
// shared secret, the signature (compared in constant time) over the body's digest, and the
// replay check; then, when claim is set (Raft traffic), that the node ID is a known member
// and that no other process holds it (S30). Only a request that passes has its body read,
// so a stranger costs no body buffer (S32); with a secret, readBody then checks the body
// against the signed digest. Nothing of a request that fails reaches the node.
func (t *HTTPTransport) authenticate(r *http.Request, id reqIdentity, claim bool) *httpError {
	if t.cfg.Secret != nil {
		signer, _ := t.signers.Get().(*httpSigner)
		if signer == nil {
			signer = newHTTPSigner(t.cfg.Secret)
		}
		ok := hmac.Equal(id.sig, signer.sign(r.Method, r.URL.Path, t.cfg.ClusterName, id.node, id.instance, id.ts, id.nonce, id.digest))
		t.signers.Put(signer)
		if !ok {
			return &httpError{http.StatusUnauthorized, fmt.Errorf("%w: bad signature", ErrAuthFailed)}
		}
	}
	if claim && !t.peers.known(id.node) {
		return &httpError{http.StatusForbidden, fmt.Errorf("%w: %q", ErrUnknownPeer, id.node)}
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cfg.Secret != nil {
		if herr := t.checkReplayLocked(id.replay, id.seq, now); herr != nil {
			return herr
		}
	}
	if claim {
		if herr := t.claimLocked(id.node, id.instance, now); herr != nil {
			return herr
		}
	}
	if t.cfg.Secret != nil {
		t.replay[id.replay] = replayState{id.seq, now}
	}
	return nil
}

// claimLocked records that instance holds node ID node. A second process with the same
// node ID is refused with 409 and reported while the first one has been heard from within
// PeerTimeout (S30); the first keeps the ID, as with TCP.
func (t *HTTPTransport) claimLocked(node, instance string, now time.Time) *httpError {
	hd, ok := t.holders[node]
	if ok && hd.instance != instance && now.Sub(hd.lastSeen) < t.cfg.PeerTimeout {
		return &httpError{http.StatusConflict, fmt.Errorf("%w: %q is in use by instance %s, request from instance %s",
			ErrDuplicateNodeID, node, hd.instance, instance)}
	}
	if !ok && len(t.holders) >= maxReplayKeys {
		t.expireLocked(now)
		if len(t.holders) >= maxReplayKeys {
			return &httpError{http.StatusServiceUnavailable, errors.New("kommander: too many node IDs")}
		}
	}
	t.holders[node] = holder{instance, now}
	return nil
}

// checkReplayLocked refuses a sequence at or below the last one seen for its key, and a new
// key when the cache is full of live ones (failing closed rather than forgetting).
func (t *HTTPTransport) checkReplayLocked(k replayKey, seq uint64, now time.Time) *httpError {
	st, ok := t.replay[k]
	if ok && seq <= st.seq {
		return &httpError{http.StatusUnauthorized, fmt.Errorf("%w: replayed request (sequence %d, last %d)", ErrAuthFailed, seq, st.seq)}
	}
	if !ok && len(t.replay) >= maxReplayKeys {
		t.expireLocked(now)
		if len(t.replay) >= maxReplayKeys {
			return &httpError{http.StatusServiceUnavailable, errors.New("kommander: replay cache full")}
		}
	}
	return nil
}

// expireLocked forgets replay entries whose requests would now fail the timestamp check
// anyway, and holders quiet for longer than PeerTimeout.
func (t *HTTPTransport) expireLocked(now time.Time) {
	for k, st := range t.replay {
		if now.Sub(st.lastSeen) > 2*t.cfg.MaxClockSkew {
			delete(t.replay, k)
		}
	}
	for k, hd := range t.holders {
		if now.Sub(hd.lastSeen) > t.cfg.PeerTimeout {
			delete(t.holders, k)
		}
	}
}
