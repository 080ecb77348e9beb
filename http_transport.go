package kommander

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The HTTP transport carries the same codec batches as the TCP one, as the bodies of POST
// requests over keep-alive connections. Each peer has a bounded queue and a sender goroutine
// that posts one batch at a time, so Send never blocks (S29).
//
// Every request carries these headers:
//
//	X-Kommander-Version    the codec version, "1"
//	X-Kommander-Cluster    the cluster name
//	X-Kommander-Node       the sender's node ID
//	X-Kommander-Instance   16 hex digits, random per transport: tells a reconnect from a
//	                       second process with the same node ID (S30)
//	X-Kommander-Timestamp  Unix time in nanoseconds            (with a shared secret)
//	X-Kommander-Nonce      a decimal sequence that grows per instance
//	X-Kommander-Digest     hex SHA-256 of the body
//	X-Kommander-Signature  hex HMAC-SHA256(secret, "kommander-http-v1", method, path,
//	                       cluster, node, instance, timestamp, nonce, digest)
//
// A signed request is accepted only within MaxClockSkew of this node's clock and only with
// a sequence above the last one seen for its (node, instance): a replay is refused.
// That cache holds one entry per live sender and is bounded; entries expire once their
// requests would be too old anyway. Everything is checked from the headers before the body
// is read (S32): version, cluster, timestamp, signature, replay, that the sender is a
// member given to SetPeer, and the node ID claim. The body is then read as it arrives,
// within MaxInboundBytes for all requests together, and must match the signed digest.
//
// Outcomes, each logged and counted, with the sentinel named in X-Kommander-Error: 204
// delivered (a malformed message inside a batch costs only itself, S28); 400 malformed
// body or wrong version; 401 bad signature, stale timestamp, replay, or a body that does
// not match its digest; 403 another cluster or a node ID that is not a known member; 409
// node ID in use by another process (S30: the first process keeps it until it has been
// quiet for PeerTimeout, so a restarted node waits that long to be heard); 413 body above
// MaxBatchBytes; 503 not started, closing, replay cache full, or inbound buffers full.
// With a shared secret GET /kommander/v1/status needs a signed request too (from any node
// ID: it is for operators as well). Refusals are logged through a rate limit.

const (
	httpRaftPath    = "/kommander/v1/raft"
	httpStatusPath  = "/kommander/v1/status"
	httpContentType = "application/x-kommander-batch"
	hdrVersion      = "X-Kommander-Version"
	hdrCluster      = "X-Kommander-Cluster"
	hdrNode         = "X-Kommander-Node"
	hdrInstance     = "X-Kommander-Instance"
	hdrTimestamp    = "X-Kommander-Timestamp"
	hdrNonce        = "X-Kommander-Nonce"
	hdrDigest       = "X-Kommander-Digest"
	hdrSignature    = "X-Kommander-Signature"
	hdrError        = "X-Kommander-Error"
)

// HTTPTransport carries batches as HTTP POST bodies. Create it with NewHTTPTransport;
// serve its Handler in your own server, or give it an Addr to listen on by itself.
type HTTPTransport struct {
	cfg      TransportConfig
	lim      codecLimits
	log      *slog.Logger
	instance string
	counters transportCounters
	budget   inboundBudget // MaxInboundBytes, shared by the requests being read
	rl       *rateLog      // every warning a peer or a stranger can provoke goes through it
	client   *http.Client
	ln       net.Listener // nil without a standalone listener
	srv      *http.Server
	handler  http.Handler

	done     chan struct{}
	ctx      context.Context // cancelled by Close: aborts requests in flight
	cancel   context.CancelFunc
	wg       sync.WaitGroup // sender goroutines and the standalone server
	inflight sync.WaitGroup // handlers between authentication and delivery

	mu      sync.Mutex
	closed  bool
	deliver func([]Message)
	peers   peerSet
	replay  map[replayKey]replayState
	holders map[string]holder // node ID -> the instance that holds it (S30)
}

// NewHTTPTransport validates cfg and, when cfg.Addr is set, listens there; requests are
// served from Start on.
func NewHTTPTransport(cfg TransportConfig) (*HTTPTransport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	inst, err := newInstanceID()
	if err != nil {
		return nil, err
	}
	t := &HTTPTransport{
		cfg: cfg, lim: cfg.limits(), instance: fmt.Sprintf("%016x", inst),
		log:     cfg.Logger.With("transport", "http", "node", cfg.NodeID),
		done:    make(chan struct{}),
		replay:  make(map[replayKey]replayState),
		holders: make(map[string]holder),
	}
	t.budget.limit = int64(cfg.MaxInboundBytes)
	t.rl = newRateLog(t.log, RealClock(), transportLogInterval)
	t.ctx, t.cancel = context.WithCancel(context.Background())
	// HTTP/1.1 only, on both sides: the batches need nothing of HTTP/2, and net/http would
	// otherwise add "h2" to a *tls.Config (the caller's, which may be shared) on Serve.
	var tlsClient, tlsServer *tls.Config
	if cfg.TLS != nil {
		tlsClient, tlsServer = cfg.TLS.Clone(), cfg.TLS.Clone()
		tlsClient.NextProtos = []string{"http/1.1"}
		tlsServer.NextProtos = []string{"http/1.1"}
	}
	t.client = &http.Client{
		Timeout: cfg.PeerTimeout, // a request that hangs marks its connection dead (S28)
		Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: cfg.PeerTimeout}).DialContext,
			TLSClientConfig:       tlsClient,
			TLSHandshakeTimeout:   cfg.HandshakeTimeout,
			ResponseHeaderTimeout: cfg.PeerTimeout,
			// A peer's answer has a few short headers; one sender per peer posts one
			// request at a time.
			MaxResponseHeaderBytes: 16 << 10,
			MaxIdleConnsPerHost:    1,
			TLSNextProto:           map[string]func(string, *tls.Conn) http.RoundTripper{}, // no HTTP/2
			IdleConnTimeout:        4 * cfg.PeerTimeout,
		},
	}
	mux := http.NewServeMux()
	mux.HandleFunc(httpRaftPath, t.serveRaft)
	mux.HandleFunc(httpStatusPath, t.serveStatus)
	t.handler = mux
	if cfg.Addr != "" {
		ln, err := net.Listen("tcp", cfg.Addr)
		if err != nil {
			return nil, fmt.Errorf("kommander: http transport: listen on %s: %w", cfg.Addr, err)
		}
		t.ln = ln
		t.srv = &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: cfg.HandshakeTimeout,
			MaxHeaderBytes:    16 << 10, // our headers are a few hundred bytes
			ReadTimeout:       cfg.PeerTimeout,
			WriteTimeout:      cfg.PeerTimeout,
			IdleTimeout:       4 * cfg.PeerTimeout,
			TLSConfig:         tlsServer,
			TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){}, // no HTTP/2
			ErrorLog:          log.New(t.rl.writer(t.log, "http server error"), "", 0),
		}
	}
	return t, nil
}

// Handler returns the handler of /kommander/v1/raft and /kommander/v1/status, for
// mounting in the application's own mux and server.
func (t *HTTPTransport) Handler() http.Handler { return t.handler }

// Addr returns the address of the standalone listener, or "" without one.
func (t *HTTPTransport) Addr() string {
	if t.ln == nil {
		return ""
	}
	return t.ln.Addr().String()
}

// Stats returns the transport's counters.
func (t *HTTPTransport) Stats() TransportStats { return t.counters.stats() }

// Start serves requests (on the standalone listener too, when there is one) and hands
// every batch received to deliver.
func (t *HTTPTransport) Start(deliver func(batch []Message)) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errTransportClosed
	}
	if t.deliver != nil {
		return errors.New("kommander: http transport already started")
	}
	t.deliver = deliver
	if t.srv != nil {
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			var err error
			if t.cfg.TLS != nil {
				err = t.srv.ServeTLS(t.ln, "", "")
			} else {
				err = t.srv.Serve(t.ln)
			}
			if !errors.Is(err, http.ErrServerClosed) {
				t.log.Error("http server stopped", "err", err)
			}
		}()
	}
	return nil
}

// SetPeer records where peer id is reached: "host:port" (http, or https with TLS) or a
// base URL such as "https://host:port/prefix".
func (t *HTTPTransport) SetPeer(id, addr string) {
	base := addr
	if !strings.Contains(addr, "://") {
		scheme := "http://"
		if t.cfg.TLS != nil {
			scheme = "https://"
		}
		base = scheme + addr
	}
	if id == t.cfg.NodeID {
		return
	}
	t.peers.set(id, strings.TrimSuffix(base, "/")+httpRaftPath, t.cfg.QueueSize, func(p *peer) {
		t.wg.Add(2)
		go t.runSender(p, p.queue, "")
		go t.runSender(p, p.snaps, httpSnapshotNonce)
	})
}

// RemovePeer forgets peer id: its senders end and its requests are refused (403) like a
// stranger's.
func (t *HTTPTransport) RemovePeer(id string) { t.peers.remove(id) }

// Send queues msgs for peer to; it never blocks.
func (t *HTTPTransport) Send(to string, msgs []Message) { t.peers.send(to, msgs, &t.counters) }

// SendSnapshot queues snapshot chunks for peer to. They are posted by a sender of their
// own, on a connection of their own, so that heartbeats and appends never wait behind a
// chunk.
func (t *HTTPTransport) SendSnapshot(to string, msgs []Message) {
	t.peers.sendSnapshot(to, msgs, &t.counters)
}

// httpSnapshotNonce starts the nonces of the snapshot sender's requests. Each sender numbers
// its requests in a sequence of its own; with a secret the receiver refuses replays per
// sequence (replayKey), and the prefix, signed with the nonce, tells the two apart.
const httpSnapshotNonce = "snap."

// Close stops the sender goroutines and the standalone server and waits for them.
func (t *HTTPTransport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.peers.close()
	close(t.done)
	t.cancel()
	t.mu.Unlock()
	var err error
	if t.srv != nil {
		// Close, not Shutdown: a peer's idle keep-alive connection must not hold us up.
		err = t.srv.Close()
		if !t.started() { // Serve never ran, so nothing closed the listener
			t.ln.Close()
		}
	}
	t.wg.Wait()
	t.inflight.Wait() // also for a Handler mounted in the user's server
	t.client.CloseIdleConnections()
	t.rl.close()
	return err
}

func (t *HTTPTransport) started() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.deliver != nil
}

// ---- outbound ----

// runSender posts the messages queued on q for peer p, one batch per request, numbering its
// requests in a sequence of its own (nonces prefixed by prefix). A failed request drops its
// batch (Raft retries what matters) and waits a backoff before the next.
func (t *HTTPTransport) runSender(p *peer, q *sendQueue, prefix string) {
	defer t.wg.Done()
	bo := backoff{max: t.cfg.MaxBackoff}
	header := batchHeaderSize(t.cfg.NodeID, p.id)
	var buf []byte
	var seq uint64
	for {
		select {
		case <-t.done:
			return
		case <-p.gone:
			return
		case <-q.wake:
		}
		msgs := q.take()
		sent, failed := 0, false
		for batch := range splitBatches(msgs, header, t.cfg.MaxBatchBytes, t.log, p.id) {
			if failed { // the peer just failed: do not queue up timeouts behind it
				continue
			}
			var err error
			if buf, err = appendBatch(buf[:0], t.cfg.NodeID, p.id, batch); err != nil {
				t.log.Error("encode batch", "peer", p.id, "err", err)
				continue
			}
			seq++
			if err := t.post(p.address(), prefix+strconv.FormatUint(seq, 10), buf); err != nil {
				t.log.Warn("post to peer failed", "peer", p.id, "err", err)
				failed = true
				continue
			}
			sent += len(batch)
			t.counters.sent.Add(uint64(len(batch)))
		}
		// Too large, not encodable, or behind a failed request.
		t.counters.dropped.Add(uint64(len(msgs) - sent))
		q.giveBack(msgs)
		if cap(buf) > 1<<20 {
			buf = nil // do not pin one huge snapshot batch forever
		}
		if !failed {
			bo.reset()
		} else if waitOrDone(bo.next(), t.done) {
			return
		}
	}
}

// post sends one batch and reads the answer; anything but 204 is an error.
func (t *HTTPTransport) post(url, nonce string, body []byte) error {
	// net/http may still read a request body after Do returns (a peer that answers before
	// reading it all); the sender reuses body for the next batch, so the reader is cut off
	// from it first.
	br := &detachableBody{r: bytes.NewReader(body)}
	defer br.detach()
	req, err := http.NewRequestWithContext(t.ctx, http.MethodPost, url, br)
	if err != nil {
		return err
	}
	req.ContentLength = int64(len(body))
	req.Header.Set("Content-Type", httpContentType)
	t.sign(req, nonce, body)
	resp, err := t.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512)) // drained, so the connection is reused
	if resp.StatusCode == http.StatusNoContent {
		return nil
	}
	err = httpRefusal(resp)
	if errors.Is(err, ErrAuthFailed) {
		t.counters.authFailures.Add(1)
	}
	return fmt.Errorf("%w: %s: %s", err, resp.Status, bytes.TrimSpace(msg))
}

// httpRefusal turns a refused response back into an error wrapping its sentinel.
func httpRefusal(resp *http.Response) error {
	code := resp.Header.Get(hdrError)
	for _, c := range refusalCodes {
		if c.code == code {
			return c.err
		}
	}
	return fmt.Errorf("kommander: peer refused the batch (%s)", code)
}

// detachableBody reads a request body until detach, and then nothing more.
type detachableBody struct {
	mu       sync.Mutex
	r        *bytes.Reader
	detached bool
}

func (d *detachableBody) Read(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.detached {
		return 0, errors.New("kommander: request body read after its request ended")
	}
	return d.r.Read(p)
}

func (d *detachableBody) detach() {
	d.mu.Lock()
	d.detached = true
	d.mu.Unlock()
}

// ---- inbound ----

// httpError is a refusal: the status to answer and the error to log and count.
type httpError struct {
	status int
	err    error
}

func (t *HTTPTransport) refuse(w http.ResponseWriter, r *http.Request, e *httpError) {
	t.counters.rejected.Add(1)
	switch e.status {
	case http.StatusUnauthorized:
		t.counters.authFailures.Add(1)
	case http.StatusConflict:
		t.counters.duplicates.Add(1)
	}
	level := slog.LevelWarn
	if e.status == http.StatusConflict {
		level = slog.LevelError
	}
	t.rl.log(t.log, level, "request refused: "+refusalCode(e.err), "remote", r.RemoteAddr,
		"peer", clip(r.Header.Get(hdrNode)), "path", clip(r.URL.Path), "status", e.status, "err", e.err)
	w.Header().Set(hdrError, refusalCode(e.err))
	// Closing the connection spares net/http reading the rest of a refused body to keep it
	// open, which would also hold the answer back until the sender sent it all (S32).
	w.Header().Set("Connection", "close")
	http.Error(w, e.err.Error(), e.status)
}

func (t *HTTPTransport) serveRaft(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	t.mu.Lock()
	deliver, closed := t.deliver, t.closed
	if deliver != nil && !closed {
		t.inflight.Add(1)
		defer t.inflight.Done()
	}
	t.mu.Unlock()
	if deliver == nil || closed {
		http.Error(w, "not serving", http.StatusServiceUnavailable)
		return
	}
	// The body is read with a deadline even when the handler is mounted in a server
	// without timeouts; a server that cannot set one has its own.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(t.cfg.PeerTimeout))
	id, herr := t.checkHeaders(r)
	if herr == nil {
		herr = t.authenticate(r, id, true)
	}
	var body []byte
	if herr == nil {
		body, herr = t.readBody(r, id)
	}
	if herr != nil {
		t.refuse(w, r, herr)
		return
	}
	defer t.budget.give(cap(body))
	node := id.node
	if err := deliverBatch(body, node, t.cfg.NodeID, t.lim, &t.counters, deliver, t.rl, t.log.With("peer", node)); err != nil {
		w.Header().Set(hdrError, refusalCode(err))
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// readBody reads the body of an authenticated request: at most MaxBatchBytes, buffered as
// it arrives within MaxInboundBytes for all requests (S32), and with a shared secret equal
// to the digest the signature covers. On success the caller gives back cap(body) to the
// budget.
func (t *HTTPTransport) readBody(r *http.Request, id reqIdentity) ([]byte, *httpError) {
	limit := t.lim.maxBatchBytes
	if r.ContentLength > int64(limit) {
		return nil, &httpError{http.StatusRequestEntityTooLarge,
			fmt.Errorf("%w: body of %d bytes exceeds the limit of %d", ErrMalformed, r.ContentLength, limit)}
	}
	body, _, err := t.budget.read(r.Body, int(r.ContentLength), limit) // -1: read to EOF
	switch {
	case errors.Is(err, errInboundFull):
		return nil, &httpError{http.StatusServiceUnavailable, err}
	case errors.Is(err, errInboundTooLarge):
		return nil, &httpError{http.StatusRequestEntityTooLarge, fmt.Errorf("%w: body exceeds the limit of %d bytes", ErrMalformed, limit)}
	case err != nil:
		return nil, &httpError{http.StatusBadRequest, fmt.Errorf("%w: reading body: %v", ErrMalformed, err)}
	}
	if t.cfg.Secret != nil {
		if sum := sha256.Sum256(body); !hmac.Equal(sum[:], id.digest) {
			t.budget.give(cap(body))
			return nil, &httpError{http.StatusUnauthorized, fmt.Errorf("%w: body does not match its signed digest", ErrAuthFailed)}
		}
	}
	return body, nil
}

// clip shortens a header value from a request for an error or log line: the value may be
// as long as the server's header limit, which a mounted Handler does not choose.
func clip(s string) string {
	if len(s) > maxNameBytes {
		return s[:maxNameBytes] + "..."
	}
	return s
}

func (t *HTTPTransport) serveStatus(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	if t.cfg.Secret != nil { // no status for a peer that cannot sign either
		id, herr := t.checkHeaders(r)
		if herr == nil {
			herr = t.authenticate(r, id, false)
		}
		if herr != nil {
			t.refuse(w, r, herr)
			return
		}
	}
	var v any = struct{}{}
	if t.cfg.Status != nil {
		v = t.cfg.Status()
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		t.rl.warn(t.log, "encode status", "err", err)
	}
}
