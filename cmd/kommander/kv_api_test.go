package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kommander-go/kommander"
)

// newKVTestServer runs a one-node key-value store (memory storage, no network) behind an
// httptest server and returns its URL.
func newKVTestServer(t *testing.T) string { return newKVTestServerLease(t, false) }

// newKVTestServerLease is newKVTestServer with lease reads on or off (-lease-reads).
func newKVTestServerLease(t *testing.T, lease bool) string {
	t.Helper()
	store := newKVStore(2)
	n, err := kommander.NewNode(kommander.Config{
		NodeID: "n1", StateMachine: store, Storage: kommander.NewMemoryStorage(), Partitions: 2,
		ElectionTimeout: 20 * time.Millisecond, HeartbeatInterval: 2 * time.Millisecond,
		LeaseReads: lease,
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Stop(context.Background()) })
	for p := 0; p < n.Partitions(); p++ {
		if _, err := n.WaitForLeader(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	kv := newKVServer(n, store, 5*time.Second, 1<<10)
	kv.leaseReads = lease
	srv := httptest.NewServer(kv)
	t.Cleanup(srv.Close)
	return srv.URL
}

// kvDo sends one request and returns the status and the body. Error answers must be JSON
// objects with an "error" field.
func kvDo(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if ct := res.Header.Get("Content-Type"); ct != "application/json" || json.Unmarshal(b, &e) != nil || e.Error == "" {
			t.Errorf("%s %s: %d answered with %q (%s), want a JSON error", method, url, res.StatusCode, b, ct)
		}
	}
	return res.StatusCode, string(b)
}

// TestKVAPIRefusesWhatItCannotParse: a query string that does not parse, an unknown
// parameter or a repeated one is a 400 that changes nothing, never a write without its
// condition.
func TestKVAPIRefusesWhatItCannotParse(t *testing.T) {
	u := newKVTestServer(t)
	if code, _ := kvDo(t, "PUT", u+"/kv/k", "v1"); code != http.StatusNoContent {
		t.Fatalf("put: %d", code)
	}
	for _, c := range []struct{ method, path string }{
		{"PUT", "/kv/k?if=%G0"},
		{"PUT", "/kv/k?if=wrong%"},
		{"PUT", "/kv/k?if=v1&if=v1"},
		{"PUT", "/kv/k?if-absent=maybe"},
		{"PUT", "/kv/k?iff=v1"},
		{"PUT", "/kv/k?if=v1;x"},
		{"DELETE", "/kv/k?if=%zz"},
		{"DELETE", "/kv/k?force"},
		{"GET", "/kv/k?stale=perhaps"},
		{"GET", "/kv/k?lease"},
		{"POST", "/list/l?x=1"},
		{"GET", "/list/l?stale=2"},
		{"GET", "/status?verbose"},
		{"GET", "/kv"},
		{"PUT", "/kv"},
		{"GET", "/list"},
		{"GET", "/kv/"},
	} {
		if code, body := kvDo(t, c.method, u+c.path, "overwritten"); code != http.StatusBadRequest {
			t.Errorf("%s %s: %d %s, want 400", c.method, c.path, code, body)
		}
	}
	if code, body := kvDo(t, "GET", u+"/kv/k", ""); code != http.StatusOK || body != "v1" {
		t.Fatalf("after refused requests: %d %q, want 200 v1", code, body)
	}
	if code, body := kvDo(t, "GET", u+"/list/l", ""); code != http.StatusOK || strings.TrimSpace(body) != "[]" {
		t.Fatalf("list after a refused append: %d %q", code, body)
	}
}

// TestKVAPIConditionsHold: ?if holds on DELETE as on PUT, and ?if-absent=false is a plain
// write.
func TestKVAPIConditionsHold(t *testing.T) {
	u := newKVTestServer(t)
	steps := []struct {
		method, path, body string
		code               int
		after              string // the value of k afterwards, "" for none
	}{
		{"PUT", "/kv/k", "v1", http.StatusNoContent, "v1"},
		{"DELETE", "/kv/k?if=x", "", http.StatusPreconditionFailed, "v1"},
		{"PUT", "/kv/k?if=x", "v2", http.StatusPreconditionFailed, "v1"},
		{"PUT", "/kv/k?if-absent", "v2", http.StatusPreconditionFailed, "v1"},
		{"PUT", "/kv/k?if-absent=true", "v2", http.StatusPreconditionFailed, "v1"},
		{"PUT", "/kv/k?if-absent=false", "v2", http.StatusNoContent, "v2"},
		{"PUT", "/kv/k?if=v2", "v3", http.StatusNoContent, "v3"},
		{"DELETE", "/kv/k?if=v3", "", http.StatusNoContent, ""},
		{"DELETE", "/kv/k?if=v3", "", http.StatusPreconditionFailed, ""},
		{"PUT", "/kv/k?if-absent", "v4", http.StatusNoContent, "v4"},
		{"DELETE", "/kv/k", "", http.StatusNoContent, ""},
	}
	for i, s := range steps {
		if code, body := kvDo(t, s.method, u+s.path, s.body); code != s.code {
			t.Fatalf("step %d: %s %s: %d %s, want %d", i, s.method, s.path, code, body, s.code)
		}
		code, body := kvDo(t, "GET", u+"/kv/k", "")
		switch {
		case s.after == "" && code != http.StatusNotFound:
			t.Fatalf("step %d: k is %q (%d), want none", i, body, code)
		case s.after != "" && (code != http.StatusOK || body != s.after):
			t.Fatalf("step %d: k is %q (%d), want %q", i, body, code, s.after)
		}
	}
	if code, body := kvDo(t, "GET", u+"/kv/k?stale=false", ""); code != http.StatusNotFound {
		t.Fatalf("?stale=false: %d %s", code, body)
	}
}

// TestKVServerBoundsSlowClients: the server refuses to wait for ever on a client's
// headers, body or next request.
func TestKVServerBoundsSlowClients(t *testing.T) {
	srv := newHTTPServer(http.NotFoundHandler(), 5*time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.IdleTimeout <= 0 || srv.WriteTimeout <= 5*time.Second {
		t.Fatalf("timeouts: header %v, read %v, idle %v, write %v", srv.ReadHeaderTimeout, srv.ReadTimeout, srv.IdleTimeout, srv.WriteTimeout)
	}
}

// TestKVAPILeaseReads: with -lease-reads, GET takes ?lease (a value and a list read through
// the leader's lease); ?lease with ?stale is refused, and without -lease-reads ?lease is a
// 400 (TestKVAPIRefusesWhatItCannotParse).
func TestKVAPILeaseReads(t *testing.T) {
	u := newKVTestServerLease(t, true)
	if code, _ := kvDo(t, "PUT", u+"/kv/k", "v1"); code != http.StatusNoContent {
		t.Fatalf("put: %d", code)
	}
	if code, body := kvDo(t, "GET", u+"/kv/k?lease", ""); code != http.StatusOK || body != "v1" {
		t.Fatalf("GET ?lease: %d %q, want 200 v1", code, body)
	}
	if code, body := kvDo(t, "GET", u+"/list/l?lease=true", ""); code != http.StatusOK || strings.TrimSpace(body) != "[]" {
		t.Fatalf("GET list ?lease: %d %q", code, body)
	}
	if code, body := kvDo(t, "GET", u+"/kv/k?lease&stale", ""); code != http.StatusBadRequest {
		t.Fatalf("GET ?lease&stale: %d %q, want 400", code, body)
	}
}
