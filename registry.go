package kommander

// The registry: where nodes register their addresses with a TTL, renew them and find each
// other. One RegistryServer can serve a whole cluster (the centralized mode, `kommander
// registry`), or every node can serve one and the registries gossip their tables to each
// other (the decentralized mode), so that no single registry is needed. The protocol is in
// registry_protocol.go, the client in registry_client.go.

import (
	"context"
	"crypto/hmac"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Defaults of RegistryOptions.
const (
	DefaultRegistryTTL      = 15 * time.Second
	DefaultRegistryMaxNodes = 1024
	DefaultMaxClockSkew     = 30 * time.Second
)

// RegistryOptions configures a RegistryServer and the RegistryDiscovery client. Fields that
// concern only one side say so.
type RegistryOptions struct {
	// Cluster names the cluster; a registry serves one, and refuses requests for another.
	// Default "kommander".
	Cluster string

	// Secret, when set (at least 16 bytes), must be known by every client and registry of
	// the cluster: requests and answers are signed with it (HMAC) and cannot be replayed.
	// Without it, anyone who reaches a registry can register or remove nodes.
	Secret []byte

	// TTL is how long a registration lives unless renewed. A client asks for it; a server
	// grants at most it, and it when a client asks for none. Default 15s.
	TTL time.Duration

	// Interval is how often a client renews its registration and refreshes its list, and
	// how often a server exchanges its table with its Seeds. Default TTL/3, so that two
	// renewals may be lost before a registration expires.
	Interval time.Duration

	// Seeds (server only) are the base URLs of other registries to exchange tables with,
	// such as "http://10.0.0.2:7001". An exchange goes both ways, so the registries need
	// only be connected through seeds, not each know every other.
	Seeds []string

	// MaxNodes bounds the nodes a registry holds (beyond it new IDs are refused with 503
	// until some expire) and the size of a list a client accepts. Default 1024.
	MaxNodes int

	// MaxClockSkew is how far a signed request's timestamp may be from the registry's
	// clock. Default 30s.
	MaxClockSkew time.Duration

	// Clock is the source of time. Nil means the real clock; tests pass a FakeClock.
	Clock Clock

	// Logger receives the logs. Nil means slog.Default().
	Logger *slog.Logger

	// HTTPClient sends the requests. Nil means a client with a 5s timeout.
	HTTPClient *http.Client
}

func (o RegistryOptions) withDefaults() (RegistryOptions, error) {
	setDefault(&o.Cluster, "kommander")
	setDefault(&o.TTL, DefaultRegistryTTL)
	setDefault(&o.Interval, o.TTL/3)
	setDefault(&o.MaxNodes, DefaultRegistryMaxNodes)
	setDefault(&o.MaxClockSkew, DefaultMaxClockSkew)
	setDefault(&o.Clock, RealClock())
	setDefault(&o.Logger, slog.Default())
	setDefault(&o.HTTPClient, &http.Client{Timeout: 5 * time.Second})
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: registry: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	switch {
	case len(o.Cluster) > maxNameBytes:
		return o, bad("Cluster has more than %d bytes", maxNameBytes)
	case len(o.Secret) > 0 && len(o.Secret) < minSecretBytes:
		return o, bad("Secret has %d bytes; use at least %d", len(o.Secret), minSecretBytes)
	case o.TTL < time.Millisecond || o.Interval <= 0 || o.MaxClockSkew <= 0:
		return o, bad("TTL (%v), Interval (%v) and MaxClockSkew (%v) must be positive", o.TTL, o.Interval, o.MaxClockSkew)
	case o.Interval >= o.TTL:
		return o, bad("Interval (%v) must be shorter than TTL (%v), or registrations expire between renewals", o.Interval, o.TTL)
	case o.MaxNodes < 0:
		return o, bad("MaxNodes must not be negative")
	}
	for _, s := range o.Seeds {
		if err := checkRegistryURL(s); err != nil {
			return o, bad("seed %q: %v", s, err)
		}
	}
	return o, nil
}

func checkRegistryURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("want http://host:port or https://host:port")
	}
	return nil
}

// RegistryServer is an http.Handler that keeps the nodes of one cluster that registered
// with it, until their registrations expire or they deregister. While an ID's registration
// lives, only the incarnation that made it can renew or remove it. Serve it on its own
// (`kommander registry`) or on every node, with Seeds, for a registry without a single
// point of failure. Start begins the exchanges with Seeds; Close ends them.
type RegistryServer struct {
	opts  RegistryOptions
	log   *slog.Logger
	rlog  *rateLog
	mux   *http.ServeMux
	limit int64 // of an exchange's body

	mu     sync.Mutex
	table  *peerTable
	replay *replayWindow
	gossip *repeater
}

// NewRegistryServer returns a registry with opts.
func NewRegistryServer(opts RegistryOptions) (*RegistryServer, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	log := opts.Logger.With("registry", opts.Cluster)
	s := &RegistryServer{
		opts: opts, log: log, rlog: newRateLog(log, opts.Clock, transportLogInterval),
		mux: http.NewServeMux(), limit: maxExchangeBody(opts.MaxNodes),
		table: newPeerTable(opts.MaxNodes), replay: newReplayWindow(opts.MaxClockSkew),
	}
	s.mux.HandleFunc(registryPathRegister, s.post(maxRegistryBody, s.register))
	s.mux.HandleFunc(registryPathDeregister, s.post(maxRegistryBody, s.deregister))
	s.mux.HandleFunc(registryPathExchange, s.post(s.limit, s.exchange))
	s.mux.HandleFunc(registryPathNodes, s.nodes)
	return s, nil
}

// ServeHTTP serves the registry's protocol.
func (s *RegistryServer) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Start begins exchanging tables with the Seeds every Interval. Without seeds it does
// nothing.
func (s *RegistryServer) Start() {
	if len(s.opts.Seeds) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gossip == nil {
		s.gossip = startRepeater(s.opts.Clock, s.opts.Interval, s.Gossip)
	}
}

// Close ends the exchanges Start began. Requests are still served.
func (s *RegistryServer) Close() error {
	s.mu.Lock()
	g := s.gossip
	s.mu.Unlock()
	if g != nil {
		g.stop()
	}
	s.rlog.close()
	return nil
}

// Peers returns the live nodes the registry holds, sorted by ID.
func (s *RegistryServer) Peers() []Peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.table.peers(s.opts.Clock.Now())
}

// Gossip exchanges tables with every seed once, now; Start does it every Interval.
func (s *RegistryServer) Gossip() {
	for _, seed := range s.opts.Seeds {
		var answer exchange
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.HTTPClient.Timeout+time.Second)
		err := registryCall(ctx, s.opts.HTTPClient, s.opts.Secret, s.opts.Clock.Now(), http.MethodPost,
			seed, registryPathExchange, s.entries(), &answer, s.limit)
		cancel()
		if err == nil && answer.Cluster != s.opts.Cluster {
			err = fmt.Errorf("%w: seed %s serves cluster %q", ErrClusterMismatch, seed, clip(answer.Cluster))
		}
		if err == nil {
			err = s.mergeAll(answer.Entries)
		}
		if err != nil {
			s.rlog.warn(s.log, "registry: exchange with a seed failed", "seed", seed, "err", err)
		}
	}
}

// entries returns the whole table as an exchange.
func (s *RegistryServer) entries() exchange {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Clock.Now()
	s.table.expire(now)
	x := exchange{Cluster: s.opts.Cluster, Entries: make([]exchangeEntry, 0, len(s.table.entries))}
	for id, e := range s.table.entries {
		x.Entries = append(x.Entries, exchangeEntry{ID: id, Addr: e.addr, Incarnation: e.incarnation,
			Stamp: e.stamp, LeftMillis: max(e.expires.Sub(now).Milliseconds(), 1), Leaving: e.left})
	}
	return x
}

// mergeAll merges entries from another registry; a malformed entry rejects them all.
func (s *RegistryServer) mergeAll(entries []exchangeEntry) error {
	for _, e := range entries {
		if err := e.check(); err != nil {
			return fmt.Errorf("%w: entry %q: %v", ErrMalformed, clip(e.ID), err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Clock.Now()
	for _, e := range entries {
		ttl := millisUpTo(e.LeftMillis, s.opts.TTL)
		if _, err := s.table.merge(e.ID, announced{addr: e.Addr, incarnation: e.Incarnation, stamp: e.Stamp,
			expires: now.Add(ttl), left: e.Leaving}, now); err != nil {
			return err
		}
	}
	return nil
}

// millisUpTo returns ms milliseconds, or limit if that is less (compared before the
// conversion, which could overflow).
func millisUpTo(ms int64, limit time.Duration) time.Duration {
	if ms >= limit.Milliseconds() {
		return limit
	}
	return time.Duration(ms) * time.Millisecond
}

// regError is a refusal: its HTTP status and the kind it is logged under.
type regError struct {
	status int
	kind   string
	err    error
}

func (e *regError) Error() string { return e.err.Error() }

func refuse(status int, kind string, format string, args ...any) *regError {
	return &regError{status, kind, fmt.Errorf(format, args...)}
}

// post wraps a handler of POST bodies of at most limit bytes: it checks the method, reads
// the body, checks the signature and decodes the body for the handler.
func (s *RegistryServer) post(limit int64, h func(body []byte) (any, *regError)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			s.fail(w, r, refuse(http.StatusMethodNotAllowed, "method", "method %s not allowed", r.Method))
			return
		}
		body, err := readLimited(r.Body, limit)
		if errors.Is(err, errBodyTooLarge) {
			s.fail(w, r, refuse(http.StatusRequestEntityTooLarge, "too-large", "body over %d bytes", limit))
			return
		} else if err != nil {
			s.fail(w, r, refuse(http.StatusBadRequest, "malformed", "read body: %v", err))
			return
		}
		if rerr := s.authenticate(r, body); rerr != nil {
			s.fail(w, r, rerr)
			return
		}
		v, rerr := h(body)
		if rerr != nil {
			s.fail(w, r, rerr)
			return
		}
		s.answer(w, r, v)
	}
}

// authenticate checks a request's signature and replay headers, with a secret. The
// signature covers the request target as sent (r.RequestURI), so that a registry mounted
// under a prefix (http.StripPrefix) checks what the client signed.
func (s *RegistryServer) authenticate(r *http.Request, body []byte) *regError {
	if s.opts.Secret == nil {
		return nil
	}
	ts, nonce := r.Header.Get(hdrRegTime), r.Header.Get(hdrRegNonce)
	sig, err := hex.DecodeString(r.Header.Get(hdrRegSignature))
	if err != nil || nonce == "" || len(nonce) > maxNonceBytes ||
		!hmac.Equal(sig, registryRequestMAC(s.opts.Secret, r.Method, r.RequestURI, ts, nonce, body)) {
		return refuse(http.StatusUnauthorized, "auth", "%v: missing or bad signature", ErrAuthFailed)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.replay.check(ts, nonce, s.opts.Clock.Now()); err != nil {
		if errors.Is(err, errReplayFull) {
			return refuse(http.StatusServiceUnavailable, "busy", "%v", err)
		}
		return refuse(http.StatusUnauthorized, "auth", "%v", err)
	}
	return nil
}

// decodeRegistration decodes and checks a register or deregister body.
func (s *RegistryServer) decodeRegistration(body []byte, leaving bool) (registration, *regError) {
	var reg registration
	if err := decodeStrict(body, &reg); err != nil {
		return reg, refuse(http.StatusBadRequest, "malformed", "%v: %v", ErrMalformed, err)
	}
	if reg.Cluster != s.opts.Cluster {
		return reg, refuse(http.StatusForbidden, "cluster", "%v: registration for cluster %q, this registry serves %q", ErrClusterMismatch, clip(reg.Cluster), s.opts.Cluster)
	}
	if err := reg.check(leaving); err != nil {
		return reg, refuse(http.StatusBadRequest, "malformed", "%v: %v", ErrMalformed, err)
	}
	return reg, nil
}

func (s *RegistryServer) register(body []byte) (any, *regError) {
	reg, rerr := s.decodeRegistration(body, false)
	if rerr != nil {
		return nil, rerr
	}
	ttl := s.opts.TTL
	if reg.TTLMillis > 0 {
		ttl = millisUpTo(reg.TTLMillis, ttl)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Clock.Now()
	if rerr := s.claimLocked(reg, now.Add(ttl), false, now); rerr != nil {
		return nil, rerr
	}
	return registered{TTLMillis: ttl.Milliseconds(), Nodes: s.table.peers(now)}, nil
}

func (s *RegistryServer) deregister(body []byte) (any, *regError) {
	reg, rerr := s.decodeRegistration(body, true)
	if rerr != nil {
		return nil, rerr
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Clock.Now()
	cur, ok := s.table.live(reg.ID, now)
	if !ok {
		return struct{}{}, nil // nothing to remove
	}
	// The tombstone lives as long as the registration would have, so that no exchange
	// brings the node back.
	if rerr := s.claimLocked(reg, cur.expires, true, now); rerr != nil {
		return nil, rerr
	}
	return struct{}{}, nil
}

func (s *RegistryServer) claimLocked(reg registration, expires time.Time, leaving bool, now time.Time) *regError {
	_, err := s.table.claim(reg.ID, announced{addr: reg.Addr, incarnation: reg.Incarnation, stamp: reg.Stamp,
		expires: expires, left: leaving}, now)
	switch {
	case errors.Is(err, ErrIDInUse):
		return refuse(http.StatusConflict, "conflict", "%v", err)
	case err != nil:
		return refuse(http.StatusServiceUnavailable, "full", "%v", err)
	}
	return nil
}

func (s *RegistryServer) exchange(body []byte) (any, *regError) {
	var x exchange
	if err := decodeStrict(body, &x); err != nil {
		return nil, refuse(http.StatusBadRequest, "malformed", "%v: %v", ErrMalformed, err)
	}
	if x.Cluster != s.opts.Cluster {
		return nil, refuse(http.StatusForbidden, "cluster", "%v: exchange for cluster %q, this registry serves %q", ErrClusterMismatch, clip(x.Cluster), s.opts.Cluster)
	}
	if len(x.Entries) > s.opts.MaxNodes {
		return nil, refuse(http.StatusBadRequest, "malformed", "%v: %d entries, at most %d", ErrMalformed, len(x.Entries), s.opts.MaxNodes)
	}
	if err := s.mergeAll(x.Entries); err != nil {
		if errors.Is(err, errTableFull) {
			return nil, refuse(http.StatusServiceUnavailable, "full", "%v", err)
		}
		return nil, refuse(http.StatusBadRequest, "malformed", "%v", err)
	}
	return s.entries(), nil
}

// nodes answers GET /v1/nodes?cluster=NAME.
func (s *RegistryServer) nodes(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		s.fail(w, r, refuse(http.StatusMethodNotAllowed, "method", "method %s not allowed", r.Method))
		return
	}
	if rerr := s.authenticate(r, nil); rerr != nil {
		s.fail(w, r, rerr)
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil || len(q) != 1 || len(q["cluster"]) != 1 {
		s.fail(w, r, refuse(http.StatusBadRequest, "malformed", "%v: want exactly ?cluster=NAME", ErrMalformed))
		return
	}
	if c := q.Get("cluster"); c != s.opts.Cluster {
		s.fail(w, r, refuse(http.StatusForbidden, "cluster", "%v: list of cluster %q, this registry serves %q", ErrClusterMismatch, clip(c), s.opts.Cluster))
		return
	}
	s.answer(w, r, nodeList{Nodes: s.Peers()})
}

// answer writes v as JSON, signed for the request's nonce.
func (s *RegistryServer) answer(w http.ResponseWriter, r *http.Request, v any) {
	b, err := jsonLine(v)
	if err != nil {
		s.fail(w, r, refuse(http.StatusInternalServerError, "internal", "%v", err))
		return
	}
	if s.opts.Secret != nil {
		w.Header().Set(hdrRegSignature, hex.EncodeToString(registryResponseMAC(s.opts.Secret, r.Header.Get(hdrRegNonce), b)))
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// fail answers a refusal and logs it, at most one line per kind and interval: anyone who
// reaches the registry can cause them.
func (s *RegistryServer) fail(w http.ResponseWriter, r *http.Request, e *regError) {
	s.rlog.warn(s.log, "registry refused a request: "+e.kind, "status", e.status, "path", clip(r.URL.Path), "remote", r.RemoteAddr, "err", e.err)
	http.Error(w, e.err.Error(), e.status)
}
