package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kommander-go/kommander"
)

// The `node` subcommand: one node of a replicated key-value store, served over HTTP.

// Limits of the key-value API.
const (
	defaultMaxValue = 1 << 20  // bytes of a value or list element (413 beyond)
	maxMaxValue     = 64 << 20 // the largest -max-value
	maxKeyBytes     = 4 << 10  // bytes of a key (400 beyond)
	// entryOverhead is room in a log entry beyond its values (a compare-and-set holds two,
	// counted apart): the key, the field lengths and the command type.
	entryOverhead = maxKeyBytes + 64
)

// runNode runs `kommander node` until ctx ends or SIGTERM/SIGINT arrives.
func runNode(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	fs.SetOutput(stderr)
	id := fs.String("id", "", "this node's ID, unique and stable across restarts (required)")
	raftAddr := fs.String("raft", "", "address the Raft transport listens on, host:port (required)")
	httpAddr := fs.String("http", "", "address the key-value HTTP API listens on, host:port (required)")
	dataDir := fs.String("data", "", "directory of this node's WAL (required)")
	peersFlag := fs.String("peers", "", "with -discovery static (the default): every member, this node included, id=host:port,...; with -join, this node and the members it may reach first; members added later are learned from the cluster")
	disc := addDiscoveryFlags(fs)
	join := fs.Bool("join", false, "with -discovery static: this node is new to a running cluster: it waits to be added (POST /admin/members on a member) instead of forming a cluster with -peers")
	adminTimeout := fs.Duration("admin-timeout", 2*time.Minute, "how long an /admin request waits (adding a node waits for it to catch up)")
	parts := fs.Int("partitions", 8, "number of partitions (equal on every node)")
	transport := fs.String("transport", "tcp", "Raft transport: tcp or http")
	cluster := fs.String("cluster", "kommander", "cluster name; nodes of another cluster are refused")
	secretFile := fs.String("secret-file", "", "file holding the shared secret (at least 16 bytes) every node must prove")
	tlsCert := fs.String("tls-cert", "", "PEM certificate of this node, for TLS between nodes")
	tlsKey := fs.String("tls-key", "", "PEM private key of -tls-cert")
	tlsCA := fs.String("tls-ca", "", "PEM CA that signs every node's certificate (mutual TLS)")
	timeout := fs.Duration("timeout", 5*time.Second, "how long a request waits to be committed and applied")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	election := fs.Duration("election-timeout", kommander.DefaultElectionTimeout, "election timeout (randomized up to twice this)")
	heartbeat := fs.Duration("heartbeat", 0, "heartbeat interval (default: a tenth of -election-timeout)")
	maxValue := fs.Int("max-value", defaultMaxValue, "largest value or list element, in bytes")
	nosync := fs.Bool("nosync", false, "UNSAFE: skip fsync; a crash loses acknowledged writes")
	snapEvery := fs.Int("snapshot-entries", kommander.DefaultSnapshotEntries, "entries between two snapshots of a partition, which bound its log and restart time")
	leaseReads := fs.Bool("lease-reads", false, "allow GET ?lease: reads the leader serves from its lease, without a heartbeat round; assumes clocks drift apart by less than 10% and restarts take longer than -election-timeout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("node: unexpected argument %q", fs.Arg(0))
	}
	for _, f := range []struct{ name, value string }{{"-id", *id}, {"-raft", *raftAddr}, {"-http", *httpAddr}, {"-data", *dataDir}} {
		if f.value == "" {
			return fmt.Errorf("node: %s is required", f.name)
		}
	}
	if err := disc.check(*peersFlag, *join); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("node: -log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	peers, err := kommander.ParsePeers(*peersFlag)
	if err != nil {
		return fmt.Errorf("node: -peers: %w", err)
	}
	if disc.mode == "static" && len(peers) == 0 {
		return fmt.Errorf("node: -peers lists no member")
	}
	kind, err := parseTransport(*transport)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if *parts < 1 {
		return fmt.Errorf("node: -partitions must be at least 1")
	}
	if *maxValue < 1 || *maxValue > maxMaxValue {
		return fmt.Errorf("node: -max-value must be in [1, %d]", maxMaxValue)
	}
	if *snapEvery < 5 {
		return fmt.Errorf("node: -snapshot-entries must be at least 5")
	}
	if *heartbeat == 0 {
		*heartbeat = *election / 10
	}
	var secret []byte
	if *secretFile != "" {
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			return fmt.Errorf("node: -secret-file: %w", err)
		}
		secret = bytes.TrimSpace(b)
	}
	tlsConf, err := loadTLS(*tlsCert, *tlsKey, *tlsCA)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if err := os.MkdirAll(*dataDir, 0o755); err != nil {
		return fmt.Errorf("node: -data: %w", err)
	}

	store := newKVStore(*parts)
	ln, err := listenNode(nodeSpec{
		id: *id, listener: *raftAddr, dataDir: *dataDir, parts: *parts, transport: kind,
		cluster: *cluster, secret: secret, tls: tlsConf, noSync: *nosync, sm: store,
		election: *election, heartbeat: *heartbeat,
		maxEntry: 2*(*maxValue) + entryOverhead, lease: *leaseReads, logger: log, snapEvery: *snapEvery,
		join: *join,
	})
	if err != nil {
		return err
	}
	httpLn, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		ln.close()
		return fmt.Errorf("node: -http: %w", err)
	}
	nd, err := disc.build(*cluster, secret, httpLn.Addr().String(), ln.addr, log)
	if err != nil {
		httpLn.Close()
		ln.close()
		return fmt.Errorf("node: %w", err)
	}
	// The HTTP server runs before the node starts, so that this node's own registry
	// (-seeds) answers the registration the start makes; the key-value API answers 503
	// until the node runs.
	var api lateHandler
	srv := newHTTPServer(nd.withRegistry(&api), *timeout, log)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(httpLn) }()
	if nd.registry != nil {
		nd.registry.Start()
		defer nd.registry.Close()
	}
	ln.spec.discovery, ln.spec.bootstrapExpect = nd.discovery, disc.expect
	if err := ln.start(ctx, peers); err != nil {
		if nd.discovery != nil {
			_ = nd.discovery.Close()
		}
		_ = srv.Close()
		ln.close()
		return fmt.Errorf("node: %w", err)
	}
	kv := newKVServer(ln.node, store, *timeout, int64(*maxValue))
	kv.leaseReads = *leaseReads
	kv.adminTimeout = *adminTimeout
	api.set(kv)
	if *nosync {
		log.Warn("UNSAFE: -nosync is set; a crash loses acknowledged writes")
	}
	log.Info("node running", "id", *id, "raft", ln.addr, "http", httpLn.Addr().String(), "transport", kind, "partitions", *parts, "data", *dataDir, "discovery", disc.mode)

	sigs, stopSignals := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stopSignals()
	var serveErr, nodeErr error
	select {
	case <-sigs.Done():
		log.Info("stopping", "cause", context.Cause(sigs))
	case serveErr = <-served:
	case <-ln.node.Done():
		// A failed node never recovers by itself: exit non-zero so that a supervisor
		// restarts it (the WAL is replayed, nothing acknowledged is lost). A node removed
		// from the cluster has nothing left to do: it exits cleanly.
		if err := ln.node.Err(); errors.Is(err, kommander.ErrRemoved) {
			log.Info("removed from the cluster; exiting", "err", err)
		} else {
			nodeErr = err
			log.Error("the node failed; exiting", "err", nodeErr)
		}
	}
	// Stop taking requests, let those in flight finish (bounded), then stop Raft.
	shutCtx, cancel := context.WithTimeout(context.Background(), *timeout+2*time.Second)
	defer cancel()
	return finish(log, "node", serveErr, nodeErr, srv.Shutdown(shutCtx), ln.stop(shutCtx))
}

// finish returns the errors of a command's shutdown, and the error its HTTP server ended
// with unless it was merely closed; without any, it logs that the command stopped.
func finish(log *slog.Logger, cmd string, serveErr error, errs ...error) error {
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		errs = append(errs, fmt.Errorf("%s: http: %w", cmd, serveErr))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// Timeouts of the key-value HTTP server, so that a client that sends slowly, or not at
// all, cannot hold a connection (and its goroutine and buffers) for ever.
const (
	httpHeaderTimeout = 10 * time.Second // the request line and headers
	httpBodyTimeout   = 30 * time.Second // the whole request, body included
	httpIdleTimeout   = 2 * time.Minute  // a keep-alive connection between requests
)

// newHTTPServer returns the key-value API's server: read, header and idle timeouts bound
// what a slow or silent client holds, and a response may take the request timeout plus
// some room to be written.
func newHTTPServer(h http.Handler, timeout time.Duration, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: httpHeaderTimeout,
		ReadTimeout:       httpBodyTimeout,
		WriteTimeout:      httpBodyTimeout + timeout,
		IdleTimeout:       httpIdleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// parseTransport parses the -transport flag.
func parseTransport(s string) (kommander.TransportKind, error) {
	switch strings.ToLower(s) {
	case "tcp":
		return kommander.TCP, nil
	case "http":
		return kommander.HTTP, nil
	}
	return 0, fmt.Errorf("-transport %q: want tcp or http", s)
}

// loadTLS builds the mutual-TLS config of the Raft transport from PEM files, or returns nil
// when none is given.
func loadTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	if certFile == "" && keyFile == "" && caFile == "" {
		return nil, nil
	}
	if certFile == "" || keyFile == "" || caFile == "" {
		return nil, errors.New("-tls-cert, -tls-key and -tls-ca go together")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("-tls-cert/-tls-key: %w", err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("-tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("-tls-ca: no certificate in %s", caFile)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// kvServer serves the key-value HTTP API of one node.
type kvServer struct {
	node     *kommander.Node
	store    *kvStore
	timeout  time.Duration
	maxValue int64
	// leaseReads allows ?lease (the node's Config.LeaseReads is set).
	leaseReads bool
	// adminTimeout bounds an /admin request (kv_admin.go).
	adminTimeout time.Duration
	mux          *http.ServeMux
}

// newKVServer returns the handler of the key-value API.
func newKVServer(n *kommander.Node, store *kvStore, timeout time.Duration, maxValue int64) *kvServer {
	s := &kvServer{node: n, store: store, timeout: timeout, adminTimeout: 2 * time.Minute, maxValue: maxValue, mux: http.NewServeMux()}
	s.mux.HandleFunc("PUT /kv/{key...}", s.serve(s.putValue))
	s.mux.HandleFunc("GET /kv/{key...}", s.serve(s.getValue))
	s.mux.HandleFunc("DELETE /kv/{key...}", s.serve(s.deleteValue))
	s.mux.HandleFunc("POST /list/{key...}", s.serve(s.appendList))
	s.mux.HandleFunc("GET /list/{key...}", s.serve(s.getList))
	s.mux.HandleFunc("GET /status", s.serve(s.status))
	s.adminRoutes()
	s.mux.HandleFunc("/kv/{key...}", methodNotAllowed("GET, PUT, DELETE"))
	s.mux.HandleFunc("/list/{key...}", methodNotAllowed("GET, POST"))
	// Without these, the mux would answer /kv with an HTML redirect to /kv/.
	for _, p := range []string{"/kv", "/list"} {
		s.mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusBadRequest, "no key: use "+r.URL.Path+"/{key}")
		})
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.URL.Path)
	})
	return s
}

// ServeHTTP implements http.Handler.
func (s *kvServer) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed here; use "+allow)
	}
}

// httpError is an error with the HTTP status it maps to.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

// key returns the request's key, or a 400 for a bad one.
func (s *kvServer) key(r *http.Request) (string, error) {
	k := r.PathValue("key")
	switch {
	case k == "":
		return "", &httpError{http.StatusBadRequest, "empty key"}
	case len(k) > maxKeyBytes:
		return "", &httpError{http.StatusBadRequest, fmt.Sprintf("key of %d bytes is longer than %d", len(k), maxKeyBytes)}
	}
	return k, nil
}

// query parses the request's query string and refuses, with a 400, what it cannot parse
// and any parameter the endpoint does not take (r.URL.Query() would silently drop a pair
// it cannot parse, so that "?if=%G0" would act as no condition at all). Each allowed
// parameter may appear at most once.
func query(r *http.Request, allowed ...string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, &httpError{http.StatusBadRequest, "malformed query string: " + err.Error()}
	}
	for name, vals := range q {
		known := false
		for _, a := range allowed {
			known = known || name == a
		}
		switch {
		case !known && len(allowed) == 0:
			return nil, &httpError{http.StatusBadRequest, fmt.Sprintf("unknown parameter %q: this endpoint takes none", name)}
		case !known:
			return nil, &httpError{http.StatusBadRequest, fmt.Sprintf("unknown parameter %q: this endpoint takes ?%s", name, strings.Join(allowed, ", ?"))}
		case len(vals) > 1:
			return nil, &httpError{http.StatusBadRequest, fmt.Sprintf("?%s given more than once", name)}
		}
	}
	return q, nil
}

// boolParam reads a boolean parameter: absent is false; present with no value ("?stale"), or
// with a value strconv.ParseBool takes as true, is true; "false" or "0" is false; anything
// else is a 400.
func boolParam(q url.Values, name string) (bool, error) {
	vals, ok := q[name]
	if !ok {
		return false, nil
	}
	if vals[0] == "" {
		return true, nil
	}
	b, err := strconv.ParseBool(vals[0])
	if err != nil {
		return false, &httpError{http.StatusBadRequest, fmt.Sprintf("?%s=%s: want true or false", name, vals[0])}
	}
	return b, nil
}

// condition reads ?if, the value the key must hold for a conditional write.
func (s *kvServer) condition(q url.Values) (old []byte, has bool, err error) {
	vals, has := q["if"]
	if !has {
		return nil, false, nil
	}
	if int64(len(vals[0])) > s.maxValue {
		return nil, false, &httpError{http.StatusRequestEntityTooLarge, "?if value too large"}
	}
	return []byte(vals[0]), true, nil
}

// body reads the request body, at most maxValue bytes (413 beyond).
func (s *kvServer) body(r *http.Request) ([]byte, error) {
	tooLarge := &httpError{http.StatusRequestEntityTooLarge, fmt.Sprintf("value larger than %d bytes", s.maxValue)}
	if r.ContentLength > s.maxValue {
		return nil, tooLarge
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, s.maxValue+1))
	if err != nil {
		return nil, &httpError{http.StatusBadRequest, "reading the body: " + err.Error()}
	}
	if int64(len(b)) > s.maxValue {
		return nil, tooLarge
	}
	return b, nil
}

// replicate runs one command through the log of the key's partition and returns the
// value its apply gave.
func (s *kvServer) replicate(r *http.Request, key, typ string, fields ...[]byte) (any, error) {
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	p := kommander.KeyPartition([]byte(key), s.node.Partitions())
	res, err := s.node.Replicate(ctx, p, typ, encodeFields(append([][]byte{[]byte(key)}, fields...)...))
	if err != nil {
		return nil, err
	}
	if err, ok := res.Value.(error); ok {
		return nil, &httpError{http.StatusBadRequest, err.Error()}
	}
	return res.Value, nil
}

// statusOf maps an error to the HTTP status it is answered with. The rule that matters:
// 503 only when the operation certainly was not applied, 504 when its outcome is unknown.
func statusOf(err error) int {
	var he *httpError
	switch {
	case errors.As(err, &he):
		return he.code
	case errors.Is(err, kommander.ErrTimeout):
		// Proposed; it may yet apply (checked before the causes it wraps).
		return http.StatusGatewayTimeout
	case errors.Is(err, kommander.ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, kommander.ErrMembershipChange):
		return http.StatusConflict
	case errors.Is(err, kommander.ErrRemoved):
		return http.StatusGone
	case errors.Is(err, kommander.ErrInvalidConfig):
		return http.StatusBadRequest
	case errors.Is(err, kommander.ErrNotLeader), errors.Is(err, kommander.ErrOverloaded),
		errors.Is(err, kommander.ErrStopped),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		// Without ErrTimeout these mean the entry was never proposed (no leader known in
		// time, too many pending, stopping, or the deadline passed while it was queued).
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func (s *kvServer) fail(w http.ResponseWriter, err error) {
	writeError(w, statusOf(err), err.Error())
}

// handler is a key-value endpoint: it writes its answer, or returns the error to answer
// with (see statusOf).
type handler func(w http.ResponseWriter, r *http.Request) error

// serve adapts a handler to net/http.
func (s *kvServer) serve(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.fail(w, err)
		}
	}
}

// parse returns the request's key and its query, refusing parameters the endpoint does not
// take (allowed).
func (s *kvServer) parse(r *http.Request, allowed ...string) (string, url.Values, error) {
	key, err := s.key(r)
	if err != nil {
		return "", nil, err
	}
	q, err := query(r, allowed...)
	return key, q, err
}

func (s *kvServer) putValue(w http.ResponseWriter, r *http.Request) error {
	key, q, err := s.parse(r, "if", "if-absent")
	if err != nil {
		return err
	}
	old, hasIf, err := s.condition(q)
	if err != nil {
		return err
	}
	ifAbsent, err := boolParam(q, "if-absent")
	if err != nil {
		return err
	}
	if hasIf && ifAbsent {
		return &httpError{http.StatusBadRequest, "?if and ?if-absent exclude each other"}
	}
	value, err := s.body(r)
	if err != nil {
		return err
	}
	var v any
	switch {
	case hasIf:
		v, err = s.replicate(r, key, cmdCAS, old, value)
	case ifAbsent:
		v, err = s.replicate(r, key, cmdPutAbsent, value)
	default:
		v, err = s.replicate(r, key, cmdPut, value)
	}
	return answerWrite(w, v, err)
}

// answerWrite answers a write: 204, 412 when its condition did not hold, or the error.
func answerWrite(w http.ResponseWriter, v any, err error) error {
	if err != nil {
		return err
	}
	if ok, isBool := v.(bool); isBool && !ok {
		return &httpError{http.StatusPreconditionFailed, "precondition failed: the current value differs"}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// read reads key from this node's state: as it is with ?stale; otherwise after a
// ReadBarrier (with ?lease, served from the leader's lease when it holds), so that the read
// observes every write acknowledged before it began.
func (s *kvServer) read(r *http.Request, q url.Values, key string, local func(p int) any) (any, error) {
	stale, err := boolParam(q, "stale")
	if err != nil {
		return nil, err
	}
	lease, err := boolParam(q, "lease")
	switch {
	case err != nil:
		return nil, err
	case stale && lease:
		return nil, &httpError{http.StatusBadRequest, "?stale and ?lease exclude each other"}
	case lease && !s.leaseReads:
		return nil, &httpError{http.StatusBadRequest, "?lease: lease reads are off on this node (start it with -lease-reads)"}
	}
	p := kommander.KeyPartition([]byte(key), s.node.Partitions())
	if stale {
		return local(p), nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	if lease {
		err = s.node.ReadBarrierLease(ctx, p)
	} else {
		err = s.node.ReadBarrier(ctx, p)
	}
	if err != nil {
		return nil, err
	}
	return local(p), nil
}

func (s *kvServer) getValue(w http.ResponseWriter, r *http.Request) error {
	key, q, err := s.parse(r, "stale", "lease")
	if err != nil {
		return err
	}
	v, err := s.read(r, q, key, func(p int) any {
		var val kvValue
		val.value, val.found = s.store.get(p, key)
		return val
	})
	if err != nil {
		return err
	}
	val, _ := v.(kvValue)
	if !val.found {
		return &httpError{http.StatusNotFound, "no value at " + strconv.Quote(key)}
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(val.value)))
	_, _ = w.Write(val.value)
	return nil
}

func (s *kvServer) deleteValue(w http.ResponseWriter, r *http.Request) error {
	key, q, err := s.parse(r, "if")
	if err != nil {
		return err
	}
	old, hasIf, err := s.condition(q)
	if err != nil {
		return err
	}
	var v any
	if hasIf {
		v, err = s.replicate(r, key, cmdCASDelete, old)
	} else {
		v, err = s.replicate(r, key, cmdDelete)
	}
	return answerWrite(w, v, err)
}

func (s *kvServer) appendList(w http.ResponseWriter, r *http.Request) error {
	key, _, err := s.parse(r)
	if err != nil {
		return err
	}
	elem, err := s.body(r)
	if err != nil {
		return err
	}
	v, err := s.replicate(r, key, cmdAppend, elem)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"index": v})
	return nil
}

func (s *kvServer) getList(w http.ResponseWriter, r *http.Request) error {
	key, q, err := s.parse(r, "stale", "lease")
	if err != nil {
		return err
	}
	v, err := s.read(r, q, key, func(p int) any { return s.store.list(p, key) })
	if err != nil {
		return err
	}
	l, _ := v.([][]byte)
	out := make([]string, len(l))
	for i, e := range l {
		out[i] = string(e)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *kvServer) status(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	st := s.node.Status()
	writeJSON(w, http.StatusOK, struct {
		kommander.Status
		Metrics kommander.Metrics `json:"metrics"`
	}{st, s.node.Metrics()})
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"encoding the response failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
