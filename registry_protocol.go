package kommander

// The registry's HTTP protocol, shared by RegistryServer and the RegistryDiscovery
// client:
//
//	POST /v1/register    registration (JSON)   -> registered: the granted TTL and the live nodes
//	POST /v1/deregister  registration          -> {}
//	GET  /v1/nodes?cluster=NAME                -> nodeList: the live nodes
//	POST /v1/exchange    exchange: entries     -> exchange: the registry's own entries
//
// Bodies are JSON objects with no unknown fields, at most maxRegistryBody bytes (an
// exchange at most maxExchangeBody). With a cluster secret every request carries a
// timestamp, a random nonce and an HMAC over the method, the path and query, both of them
// and the SHA-256 of the body; a request outside the timestamp window or with a nonce seen
// before is refused, so a captured request cannot be played again. The answer carries an
// HMAC over the request's nonce and its own body, so that a client knows the list comes
// from a registry that holds the secret and answers this very request.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	registryPathRegister   = "/v1/register"
	registryPathDeregister = "/v1/deregister"
	registryPathNodes      = "/v1/nodes"
	registryPathExchange   = "/v1/exchange"

	hdrRegTime      = "X-Kommander-Registry-Time"
	hdrRegNonce     = "X-Kommander-Registry-Nonce"
	hdrRegSignature = "X-Kommander-Registry-Signature"

	registryRequestLabel  = "kommander-registry-request-v1"
	registryResponseLabel = "kommander-registry-response-v1"

	maxRegistryBody = 4 << 10
	maxNonceBytes   = 64
)

// maxExchangeBody bounds an exchange: maxNodes entries of at most this many bytes each.
func maxExchangeBody(maxNodes int) int64 { return int64(maxNodes)*1024 + 1024 }

// registration is the body of register and deregister.
type registration struct {
	Cluster     string `json:"cluster"`
	ID          string `json:"id"`
	Addr        string `json:"addr,omitempty"`
	Incarnation string `json:"incarnation"`
	Stamp       int64  `json:"stamp"`
	TTLMillis   int64  `json:"ttl_ms,omitempty"`
}

// registered answers a registration.
type registered struct {
	TTLMillis int64  `json:"ttl_ms"`
	Nodes     []Peer `json:"nodes"`
}

// nodeList answers GET /v1/nodes.
type nodeList struct {
	Nodes []Peer `json:"nodes"`
}

// exchange is both the request and the answer of the gossip between registries.
type exchange struct {
	Cluster string          `json:"cluster"`
	Entries []exchangeEntry `json:"entries"`
}

// exchangeEntry is one entry of a registry's table. Its lifetime travels as the time left,
// not as a deadline, so that the registries' clocks need not agree.
type exchangeEntry struct {
	ID          string `json:"id"`
	Addr        string `json:"addr,omitempty"`
	Incarnation string `json:"incarnation"`
	Stamp       int64  `json:"stamp"`
	LeftMillis  int64  `json:"left_ms"`
	Leaving     bool   `json:"leaving,omitempty"`
}

// check reports what is wrong with a registration; leaving ones carry no address.
func (r registration) check(leaving bool) error {
	a := Announcement{ID: r.ID, Addr: r.Addr, Incarnation: r.Incarnation}
	if leaving {
		a.Addr = "-"
	}
	if err := a.check(); err != nil {
		return err
	}
	if r.Stamp <= 0 || r.TTLMillis < 0 {
		return errors.New("stamp must be positive and ttl_ms not negative")
	}
	return nil
}

func (e exchangeEntry) check() error {
	a := Announcement{ID: e.ID, Addr: e.Addr, Incarnation: e.Incarnation}
	if e.Leaving {
		a.Addr = "-"
	}
	if err := a.check(); err != nil {
		return err
	}
	if e.Stamp <= 0 || e.LeftMillis <= 0 {
		return errors.New("stamp and left_ms must be positive")
	}
	return nil
}

// decodeStrict decodes one JSON value from b into v: unknown fields and trailing data are
// errors.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.InputOffset() != int64(len(bytes.TrimRight(b, " \t\r\n"))) {
		return errors.New("data after the JSON value")
	}
	return nil
}

// readLimited reads at most limit bytes of r; a longer body is errTooLarge.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, errBodyTooLarge
	}
	return b, nil
}

var errBodyTooLarge = errors.New("body too large")

// registryRequestMAC is the signature of a request.
func registryRequestMAC(secret []byte, method, pathQuery, ts, nonce string, body []byte) []byte {
	digest := sha256.Sum256(body)
	return mac(secret, registryRequestLabel, []byte(method), []byte(pathQuery), []byte(ts), []byte(nonce), digest[:])
}

// registryResponseMAC is the signature of an answer to the request with nonce.
func registryResponseMAC(secret []byte, nonce string, body []byte) []byte {
	digest := sha256.Sum256(body)
	return mac(secret, registryResponseLabel, []byte(nonce), digest[:])
}

// signRegistryRequest sets the signature headers of req, whose body is body.
func signRegistryRequest(req *http.Request, secret []byte, now time.Time, body []byte) (nonce string, err error) {
	if secret == nil {
		return "", nil
	}
	if nonce, err = NewIncarnation(); err != nil { // 16 random bytes, hex
		return "", err
	}
	ts := strconv.FormatInt(now.UnixNano(), 10)
	req.Header.Set(hdrRegTime, ts)
	req.Header.Set(hdrRegNonce, nonce)
	req.Header.Set(hdrRegSignature, hex.EncodeToString(registryRequestMAC(secret, req.Method, req.URL.RequestURI(), ts, nonce, body)))
	return nonce, nil
}

// checkRegistryResponse checks the signature of an answer to the request with nonce.
func checkRegistryResponse(h http.Header, secret []byte, nonce string, body []byte) error {
	if secret == nil {
		return nil
	}
	sig, err := hex.DecodeString(h.Get(hdrRegSignature))
	if err != nil || !hmac.Equal(sig, registryResponseMAC(secret, nonce, body)) {
		return fmt.Errorf("%w: the registry's answer is not signed with the cluster secret", ErrAuthFailed)
	}
	return nil
}

// replayWindow remembers the nonces of signed requests for as long as their timestamps
// are acceptable, at most maxReplayKeys of them: when full of live nonces it refuses new
// requests rather than forget one (failing closed).
type replayWindow struct {
	skew   time.Duration
	nonces map[string]time.Time // nonce -> when it may be forgotten
}

func newReplayWindow(skew time.Duration) *replayWindow {
	return &replayWindow{skew: skew, nonces: make(map[string]time.Time)}
}

// check accepts a request's timestamp and nonce once.
func (w *replayWindow) check(ts, nonce string, now time.Time) error {
	nanos, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: bad timestamp", ErrAuthFailed)
	}
	if skew := now.Sub(time.Unix(0, nanos)); skew > w.skew || skew < -w.skew {
		return fmt.Errorf("%w: timestamp %v away from the registry's clock", ErrAuthFailed, skew)
	}
	if _, seen := w.nonces[nonce]; seen {
		return fmt.Errorf("%w: replayed request", ErrAuthFailed)
	}
	if len(w.nonces) >= maxReplayKeys {
		for n, until := range w.nonces {
			if now.After(until) {
				delete(w.nonces, n)
			}
		}
		if len(w.nonces) >= maxReplayKeys {
			return errReplayFull
		}
	}
	w.nonces[nonce] = now.Add(2 * w.skew)
	return nil
}

var errReplayFull = errors.New("kommander: registry replay cache full")

// registryCall sends a request to the registry at base and decodes its answer into out.
// A refusal comes back as an error that wraps the sentinel behind it, when there is one.
func registryCall(ctx context.Context, client *http.Client, secret []byte, now time.Time, method, base, pathQuery string, in, out any, limit int64) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(base, "/")+pathQuery, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	nonce, err := signRegistryRequest(req, secret, now, body)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := readLimited(resp.Body, limit)
	if err != nil {
		return fmt.Errorf("registry %s: read answer: %w", base, err)
	}
	if resp.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(string(b[:min(len(b), 200)]))
		var sentinel error
		switch resp.StatusCode {
		case http.StatusConflict:
			sentinel = ErrIDInUse
		case http.StatusUnauthorized:
			sentinel = ErrAuthFailed
		case http.StatusForbidden:
			sentinel = ErrClusterMismatch
		}
		if sentinel != nil {
			return fmt.Errorf("registry %s: %w: %s", base, sentinel, msg)
		}
		return fmt.Errorf("registry %s: %s: %s", base, resp.Status, msg)
	}
	if err := checkRegistryResponse(resp.Header, secret, nonce, b); err != nil {
		return fmt.Errorf("registry %s: %w", base, err)
	}
	if err := decodeStrict(b, out); err != nil {
		return fmt.Errorf("registry %s: malformed answer: %w", base, err)
	}
	return nil
}

// jsonLine is v as JSON and a newline.
func jsonLine(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	return append(b, '\n'), err
}
