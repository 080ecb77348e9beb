package kommander

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestTCPReconnectOfSameProcessReplacesItsOldConnection: a connection that is dead but not
// yet timed out must not lock its own process out (only another process is a duplicate).
func TestTCPReconnectOfSameProcessReplacesItsOldConnection(t *testing.T) {
	tc := transportCases()[0]
	b := startTransportNode(t, tc, transportTestConfig("b"))
	admit(b, "x")
	link := rawLink{from: "x", to: "b", cluster: "conformance", version: 1, instance: 5}
	first, err := openRawTCP(t, b.tr, link)
	if err != nil {
		t.Fatalf("first link: %v", err)
	}
	defer first.close()
	second, err := openRawTCP(t, b.tr, link)
	if err != nil {
		t.Fatalf("the same instance reconnecting was refused: %v", err)
	}
	defer second.close()
	// The server closed the first connection.
	conn := first.(*rawTCP).conn
	conn.SetReadDeadline(time.Now().Add(transportWait))
	if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("old connection read: %v, want EOF", err)
	}
	if err := second.send(mustEncode(t, "x", "b", []Message{testHeartbeat(1, 9)})); err != nil {
		t.Fatal(err)
	}
	b.rec.waitFor(t, transportWait, "traffic on the new connection", func(m []Message) bool { return countMsgs(m, withMsgContext(9)) == 1 })
	// Another process (another instance) with the same ID is refused while this one lives (S30).
	if _, err := openRawTCP(t, b.tr, withLink(link, func(l *rawLink) { l.instance = 6 })); !errors.Is(err, ErrDuplicateNodeID) {
		t.Fatalf("second process: err = %v, want ErrDuplicateNodeID", err)
	}
	// The server counts after it has answered, so wait for it.
	waitForCondition(t, transportWait, "the duplicate to be counted", func() bool { return b.tr.Stats().DuplicateNodeIDs == 1 })
}

// TestTCPHandshakeRefusesWrongTargetAndOwnID: a peer that dialed the wrong node, or that
// claims the receiver's own ID, gets nothing in.
func TestTCPHandshakeRefusesWrongTargetAndOwnID(t *testing.T) {
	b := startTransportNode(t, transportCases()[0], transportTestConfig("b"))
	link := rawLink{from: "x", to: "b", cluster: "conformance", version: 1, instance: 5}
	if _, err := openRawTCP(t, b.tr, withLink(link, func(l *rawLink) { l.to = "z" })); err == nil {
		t.Fatal("a hello meant for another node was accepted")
	}
	if _, err := openRawTCP(t, b.tr, withLink(link, func(l *rawLink) { l.from = "b" })); !errors.Is(err, ErrDuplicateNodeID) {
		t.Fatalf("a peer claiming b's own ID: err = %v", err)
	}
}

// FuzzTCPServerHandshake: whatever a client sends during the handshake, the server
// answers or refuses, within its deadline, without panicking.
func FuzzTCPServerHandshake(f *testing.F) {
	h := tcpHello{version: tcpHandshakeVersion, cluster: "conformance", from: "x", to: "b", instance: 1}
	valid := append(h.append(nil), make([]byte, tcpProofSize)...)
	f.Add(valid)
	f.Add(valid[:10])
	f.Add([]byte("KMDR\x02"))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	cfg := transportTestConfig("b")
	cfg.HandshakeTimeout = time.Second
	tr, err := NewTCPTransport(cfg)
	if err != nil {
		f.Fatal(err)
	}
	defer tr.Close()
	f.Fuzz(func(t *testing.T, in []byte) {
		server, client := net.Pipe()
		defer client.Close()
		server.SetDeadline(time.Now().Add(cfg.HandshakeTimeout))
		go io.Copy(io.Discard, client) // the server's replies
		go func() {
			client.Write(in)
			client.Close() // then the server sees EOF instead of waiting for more
		}()
		got, err := tr.serverHandshake(server)
		server.Close()
		if err == nil {
			tr.mu.Lock()
			delete(tr.inbound, got.from)
			tr.mu.Unlock()
		}
	})
}

// TestTCPBoundsHandshakesInProgress: connections that never finish a handshake hold at most
// tcpMaxHandshakes goroutines; the next one is closed at once, and once they are gone a
// real peer gets in.
func TestTCPBoundsHandshakesInProgress(t *testing.T) {
	tc := transportCases()[0]
	cfg := transportTestConfig("b")
	cfg.HandshakeTimeout = transportWait
	b := startTransportNode(t, tc, cfg)
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for i := 0; i < tcpMaxHandshakes; i++ {
		c, err := net.Dial("tcp", b.tr.Addr())
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	extra, err := net.Dial("tcp", b.tr.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.SetReadDeadline(time.Now().Add(transportWait))
	if _, err := extra.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("connection beyond the handshake bound: read %v, want EOF", err)
	}
	if n := b.tr.Stats().Rejected; n != 1 {
		t.Fatalf("Rejected = %d, want 1", n)
	}
	for _, c := range idle {
		c.Close()
	}
	idle = nil
	a := startTransportNode(t, tc, transportTestConfig("a"))
	connectAll(a, b)
	stop := make(chan struct{})
	wg := keepSending(a, "b", 5, stop)
	b.rec.waitFor(t, transportWait, "a real peer after the idle ones left", func(m []Message) bool { return countMsgs(m, withMsgContext(5)) > 0 })
	close(stop)
	wg.Wait()
}

// TestTCPRedialsAPeerWhoseAddressChanged: SetPeer with a new address moves the live
// connection there; traffic no longer goes to the old address.
func TestTCPRedialsAPeerWhoseAddressChanged(t *testing.T) {
	tc := transportCases()[0]
	a, b := startTransportNode(t, tc, transportTestConfig("a")), startTransportNode(t, tc, transportTestConfig("b"))
	px := newFreezingProxy(t, b.tr.Addr())
	a.tr.SetPeer("b", px.addr())
	b.tr.SetPeer("a", a.tr.Addr())
	a.tr.Send("b", []Message{testHeartbeat(1, 1)})
	b.rec.waitFor(t, transportWait, "the first message, through the old address", func(m []Message) bool { return len(m) == 1 })
	a.tr.SetPeer("b", b.tr.Addr())
	stop := make(chan struct{})
	wg := keepSending(a, "b", 2, stop) // a lane dials only when it has something to send
	waitForCondition(t, transportWait, "a second connection, to the new address", func() bool { return a.tr.Stats().Connects == 2 })
	px.freeze() // anything still sent to the old address would now vanish
	expectFlowing(t, b, 2, "to the new address")
	close(stop)
	wg.Wait()
	if n := px.accepted(); n != 1 {
		t.Fatalf("the old address saw %d connections, want 1", n)
	}
}

// BenchmarkNodeReplicateTCPPartitions is BenchmarkNodeReplicateTCP with 16 partitions and
// 64 clients: every node then leads some partitions and follows the others, and all three
// fsync at once. It is the case where TCP with fsync fell behind the memory network
// (BenchmarkNodeReplicate/partitions=16/clients=64). Compare GOMAXPROCS values: each Save
// holds a P for its fsync, and a socket that became readable is only noticed when a P runs
// out of work (or by the runtime's 10 ms network poll), so with GOMAXPROCS=2 and three
// nodes in one process the hops wait in the scheduler, not in the transport.
//
//	go test -run '^$' -bench BenchmarkNodeReplicateTCPPartitions -benchtime 30000x -cpu 2,4 .
func BenchmarkNodeReplicateTCPPartitions(b *testing.B) {
	benchReplicateOver(b, 16, 64, true)
}
