package kommander

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestHTTPStatusServesTheNodeStatusAsJSON(t *testing.T) {
	cfg := transportTestConfig("a")
	cfg.Status = func() any { return map[string]any{"partitions": []map[string]any{{"role": "leader", "term": 3}}} }
	a := startTransportNode(t, transportCases()[1], cfg)
	resp, err := http.Get("http://" + a.tr.Addr() + httpStatusPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Partitions []struct {
			Role string
			Term int
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != 200 {
		t.Fatalf("status %d, decode: %v", resp.StatusCode, err)
	}
	if len(got.Partitions) != 1 || got.Partitions[0].Role != "leader" || got.Partitions[0].Term != 3 {
		t.Fatalf("status = %+v", got)
	}
}

// TestHTTPStatusNeedsTheSecretToo: with a shared secret, a peer that cannot sign gets no
// status either.
func TestHTTPStatusNeedsTheSecretToo(t *testing.T) {
	cfg := transportTestConfig("a")
	cfg.Secret = []byte("the-cluster-shared-secret")
	cfg.Status = func() any { return "secret status" }
	a := startTransportNode(t, transportCases()[1], cfg)
	for _, headers := range []map[string]string{
		{}, // a plain GET
		{hdrVersion: "1", hdrCluster: "conformance", hdrNode: "ops", hdrInstance: "01"}, // unsigned
	} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+a.tr.Addr()+httpStatusPath, nil)
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.StatusCode >= 500 || strings.Contains(string(body), "secret status") {
			t.Fatalf("request with headers %v: %s %q", headers, resp.Status, body)
		}
		if len(headers) > 0 && resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("unsigned request: %s, want 401", resp.Status)
		}
	}
	r := &rawHTTP{client: http.DefaultClient, addr: a.tr.Addr(),
		l: rawLink{from: "ops", cluster: "conformance", secret: cfg.Secret, version: 1, instance: 1}}
	req := r.request(nil)
	req.Method, req.URL.Path, req.Body = http.MethodGet, httpStatusPath, nil
	ts, nonce := req.Header.Get(hdrTimestamp), req.Header.Get(hdrNonce)
	req.Header.Set(hdrSignature, hexOf(httpSignature(cfg.Secret, http.MethodGet, httpStatusPath, "conformance", "ops",
		req.Header.Get(hdrInstance), ts, nonce, emptyDigest[:])))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "\"secret status\"\n" {
		t.Fatalf("signed status request: %s %q", resp.Status, body)
	}
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// TestHTTPRefusesReplayedAndStaleRequests: a captured request cannot be played again, and a
// request signed too far from the receiver's clock is refused.
func TestHTTPRefusesReplayedAndStaleRequests(t *testing.T) {
	cfg := transportTestConfig("b")
	cfg.Secret = []byte("the-cluster-shared-secret")
	cfg.MaxClockSkew = time.Minute
	b := startTransportNode(t, transportCases()[1], cfg)
	admit(b, "x")
	r := &rawHTTP{client: http.DefaultClient, addr: b.tr.Addr(),
		l: rawLink{from: "x", cluster: "conformance", secret: cfg.Secret, version: 1, instance: 1}}
	payload := mustEncode(t, "x", "b", []Message{testHeartbeat(1, 7)})
	do := r.do
	req := r.request(payload)
	replay := req.Clone(req.Context())
	replay.Body = io.NopCloser(newBytesReader(payload))
	if err := do(req); err != nil {
		t.Fatalf("first request: %v", err)
	}
	if err := do(replay); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("replayed request: %v, want ErrAuthFailed", err)
	}
	// A request from two minutes ago, correctly signed, is still refused.
	stale := r.request(payload)
	ts := strconv.FormatInt(time.Now().Add(-2*time.Minute).UnixNano(), 10)
	stale.Header.Set(hdrTimestamp, ts)
	stale.Header.Set(hdrSignature, hexOf(httpSignature(cfg.Secret, http.MethodPost, httpRaftPath, "conformance", "x",
		stale.Header.Get(hdrInstance), ts, stale.Header.Get(hdrNonce), digestOf(payload))))
	if err := do(stale); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("stale request: %v, want ErrAuthFailed", err)
	}
	// A body changed in flight breaks the signature.
	tampered := r.request(payload)
	tampered.Body = io.NopCloser(newBytesReader(mustEncode(t, "x", "b", []Message{testHeartbeat(2, 7)})))
	if err := do(tampered); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("tampered request: %v, want ErrAuthFailed", err)
	}
	msgs, _ := b.rec.snapshot()
	if len(msgs) != 1 {
		t.Fatalf("delivered %d messages, want only the first request's", len(msgs))
	}
	if s := b.tr.Stats(); s.AuthFailures != 3 {
		t.Fatalf("AuthFailures = %d, want 3", s.AuthFailures)
	}
}

// TestHTTPHandlerMountsInAUsersServer: without Addr the transport listens nowhere and its
// Handler serves from the application's own server.
// startHandlerOnly starts an HTTP transport for node b without a listener of its own, for
// a test to mount its Handler; it is closed when the test ends.
func startHandlerOnly(t *testing.T) (*HTTPTransport, *deliveryRecorder) {
	t.Helper()
	cfg := transportTestConfig("b")
	cfg.Addr = ""
	tr, err := NewHTTPTransport(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec := newDeliveryRecorder()
	if err := tr.Start(rec.deliver); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr, rec
}

func TestHTTPHandlerMountsInAUsersServer(t *testing.T) {
	trB, rec := startHandlerOnly(t)
	mux := http.NewServeMux()
	mux.Handle("/kommander/", trB.Handler())
	srv := httptest.NewServer(mux)
	defer srv.Close()
	a := startTransportNode(t, transportCases()[1], transportTestConfig("a"))
	a.tr.SetPeer("b", srv.URL)
	trB.SetPeer("a", a.tr.Addr())
	a.tr.Send("b", []Message{testHeartbeat(1, 5)})
	rec.waitFor(t, transportWait, "a batch through the mounted handler", func(m []Message) bool { return len(m) == 1 })
	if trB.Addr() != "" {
		t.Fatalf("Addr() = %q without a listener", trB.Addr())
	}
}

func newBytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// TestHTTPLeavesTheCallersTLSConfigAlone: net/http adds "h2" to a server's *tls.Config; a
// config shared with a later transport (a restarted node) then offered HTTP/2 to a client
// that speaks HTTP/1.1 only, and every request failed.
func TestHTTPLeavesTheCallersTLSConfigAlone(t *testing.T) {
	pki := newTestPKI(t, "cluster")
	shared := mutualTLS(pki, pki)
	cfgA, cfgB := transportTestConfig("a"), transportTestConfig("b")
	cfgA.TLS, cfgB.TLS = shared, shared
	a := startTransportNode(t, transportCases()[1], cfgA)
	b := startTransportNode(t, transportCases()[1], cfgB)
	connectAll(a, b)
	a.tr.Send("b", []Message{testHeartbeat(1, 1)})
	b.rec.waitFor(t, transportWait, "a batch over TLS", func(m []Message) bool { return len(m) == 1 })
	if len(shared.NextProtos) != 0 {
		t.Fatalf("the caller's tls.Config was changed: NextProtos = %v", shared.NextProtos)
	}
}

// The network transports carry snapshot chunks on a sender and connection of their own.
var (
	_ snapshotLane = (*TCPTransport)(nil)
	_ snapshotLane = (*HTTPTransport)(nil)
)

// TestHTTPSnapshotSenderNumbersItsOwnSequence: with a secret, the snapshot sender's
// requests are numbered in a sequence of their own, so that they interleave with the Raft
// sender's without being taken for replays; each sequence still refuses a replay.
func TestHTTPSnapshotSenderNumbersItsOwnSequence(t *testing.T) {
	cfg := transportTestConfig("b")
	cfg.Secret = []byte("the-cluster-shared-secret")
	b := startTransportNode(t, transportCases()[1], cfg)
	admit(b, "x")
	link := rawLink{from: "x", cluster: "conformance", secret: cfg.Secret, version: 1, instance: 1}
	raft := &rawHTTP{client: http.DefaultClient, addr: b.tr.Addr(), l: link}
	snaps := &rawHTTP{client: http.DefaultClient, addr: b.tr.Addr(), l: link, prefix: httpSnapshotNonce}
	payload := mustEncode(t, "x", "b", []Message{testHeartbeat(1, 7)})
	for i := 0; i < 5; i++ {
		if err := raft.send(payload); err != nil {
			t.Fatalf("Raft request %d: %v", i+1, err)
		}
	}
	req := snaps.request(payload)
	replay := req.Clone(req.Context())
	replay.Body = io.NopCloser(newBytesReader(payload))
	if err := snaps.do(req); err != nil {
		t.Fatalf("the snapshot sender's first request, after five Raft requests: %v", err)
	}
	if err := snaps.do(replay); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("a replayed snapshot request: %v, want ErrAuthFailed", err)
	}
	if err := raft.send(payload); err != nil {
		t.Fatalf("the Raft sender after the snapshot sender: %v", err)
	}
}
