package kommander

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestHTTPPostsReuseOneConnectionUnderAPrefix: a sender posts batch after batch on one
// keep-alive connection, to a Handler mounted under a path prefix. (With a secret the
// signature covers the path as the sender sees it, so a prefix that the server strips
// fails the check.)
func TestHTTPPostsReuseOneConnectionUnderAPrefix(t *testing.T) {
	trB, rec := startHandlerOnly(t)
	mux := http.NewServeMux()
	mux.Handle("/prefix/", http.StripPrefix("/prefix", trB.Handler()))
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	a := startTransportNode(t, transportCases()[1], transportTestConfig("a"))
	a.tr.SetPeer("b", srv.URL+"/prefix/")
	trB.SetPeer("a", a.tr.Addr())
	const batches = 20
	for i := 1; i <= batches; i++ {
		a.tr.Send("b", []Message{testHeartbeat(1, uint64(i))})
		rec.waitFor(t, transportWait, "the batch", func(m []Message) bool { return len(m) == i })
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d batches took %d connections, want 1", batches, n)
	}
	if s := trB.Stats(); s.Rejected != 0 {
		t.Fatalf("receiver stats %+v: requests under a prefix were refused", s)
	}
}

// TestHTTPCloseEndsAPostToASilentPeer: a peer that accepts a request and never answers
// holds the sender until PeerTimeout, but Close ends the post at once.
func TestHTTPCloseEndsAPostToASilentPeer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		var b [1]byte
		c.Read(b[:]) // the request started; never answer
		got <- c
	}()
	cfg := transportTestConfig("a")
	cfg.PeerTimeout = time.Minute
	a, err := NewHTTPTransport(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(func([]Message) {}); err != nil {
		t.Fatal(err)
	}
	a.SetPeer("b", ln.Addr().String())
	a.Send("b", []Message{testHeartbeat(1, 1)})
	var c net.Conn
	select {
	case c = <-got:
		defer c.Close()
	case <-time.After(transportWait):
		t.Fatal("the sender never reached the peer")
	}
	closed := make(chan struct{})
	go func() { a.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waits for a post that the peer never answers")
	}
}

// TestHTTPRefusesANameThatCannotBeAHeader: a node ID with a line break would split the
// request's headers; nothing is sent and the batch counts as dropped.
func TestHTTPRefusesANameThatCannotBeAHeader(t *testing.T) {
	b := startTransportNode(t, transportCases()[1], transportTestConfig("b"))
	cfg := transportTestConfig("a\r\nX-Kommander-Node: b")
	a := startTransportNode(t, transportCases()[1], cfg)
	a.tr.SetPeer("b", b.tr.Addr())
	a.tr.Send("b", []Message{testHeartbeat(1, 1)})
	waitForCondition(t, transportWait, "the batch to be dropped", func() bool { return a.tr.Stats().Dropped == 1 })
	if s := b.tr.Stats(); s.Received != 0 || s.Rejected != 0 {
		t.Fatalf("receiver stats %+v: a request with a split header reached it", s)
	}
}

// TestHTTPSignerMatchesTheMAC: the reused signer computes exactly the MAC of the label and
// the fields that earlier versions computed with mac, call after call, so that old and new
// nodes accept each other's requests.
func TestHTTPSignerMatchesTheMAC(t *testing.T) {
	secret := []byte("a secret of enough bytes")
	s := newHTTPSigner(secret)
	for i, f := range [][8]string{
		{"POST", "/kommander/v1/raft", "prod", "n1", "00000000000000ff", "1700000000000000000", "7", "digest one"},
		{"GET", "/kommander/v1/status", "", "ops", "0123456789abcdef", "1", "snap.12", ""},
	} {
		want := mac(secret, httpMACLabel, []byte(f[0]), []byte(f[1]), []byte(f[2]), []byte(f[3]),
			[]byte(f[4]), []byte(f[5]), []byte(f[6]), []byte(f[7]))
		if got := s.sign(f[0], f[1], f[2], f[3], f[4], f[5], f[6], []byte(f[7])); !bytes.Equal(got, want) {
			t.Fatalf("request %d: signer %x, mac %x", i, got, want)
		}
		if got := httpSignature(secret, f[0], f[1], f[2], f[3], f[4], f[5], f[6], []byte(f[7])); !bytes.Equal(got, want) {
			t.Fatalf("request %d: httpSignature %x, mac %x", i, got, want)
		}
	}
}

// TestHTTPSenderRedialsAConnectionThePeerClosed: the peer closes the sender's idle
// connection (a server's idle timeout, a restart); the next batch goes through on a new
// connection instead of being dropped.
func TestHTTPSenderRedialsAConnectionThePeerClosed(t *testing.T) {
	trB, rec := startHandlerOnly(t)
	srv := httptest.NewServer(trB.Handler())
	defer srv.Close()
	a := startTransportNode(t, transportCases()[1], transportTestConfig("a"))
	a.tr.SetPeer("b", srv.URL)
	trB.SetPeer("a", a.tr.Addr())
	for i := 1; i <= 3; i++ {
		a.tr.Send("b", []Message{testHeartbeat(1, uint64(i))})
		rec.waitFor(t, transportWait, "the batch", func(m []Message) bool { return len(m) == i })
		// The answer too: a connection closed between delivery and answer loses the answer,
		// and the sender rightly counts the batch as not known to be delivered.
		waitForCondition(t, transportWait, "the answer", func() bool { return a.tr.Stats().Sent == uint64(i) })
		srv.CloseClientConnections()
	}
	if s := a.tr.Stats(); s.Dropped != 0 {
		t.Fatalf("sender stats %+v: a batch was dropped after the peer closed an idle connection", s)
	}
}
