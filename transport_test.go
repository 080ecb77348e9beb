package kommander

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The conformance suite: every transport runs the same table of tests, so that a user who
// switches Config.Transport sees the same behaviour. A transport joins by adding one entry
// to transportCases. The memory network has no wire: it delivers inside Send, keeps no
// counters and cannot be sent hostile bytes, so it runs only the tests of what every
// Transport promises (delivery, unknown peers, restarts); network transports run all.

// testTransport is a transport under test plus what the suite needs to drive it.
type testTransport interface {
	Transport
	Addr() string
	Stats() TransportStats
}

type transportCase struct {
	name string
	// network is set for real network transports: counters, queues that drop, a wire.
	network bool
	new     func(cfg TransportConfig) (testTransport, error)
	// raw opens a hand-driven link to target that claims to be l.from, for hostile input.
	raw func(t *testing.T, target testTransport, l rawLink) (rawSession, error)
}

func transportCases() []transportCase {
	mem := NewMemoryNetwork(1) // one network per test
	return []transportCase{
		{name: "tcp", network: true, new: func(c TransportConfig) (testTransport, error) { return NewTCPTransport(c) }, raw: openRawTCP},
		{name: "http", network: true, new: func(c TransportConfig) (testTransport, error) { return NewHTTPTransport(c) }, raw: openRawHTTP},
		{name: "memory", new: func(c TransportConfig) (testTransport, error) {
			return memoryUnderTest{mem.Transport(c.NodeID), c.NodeID}, nil
		}},
	}
}

// networkCases are the transports with a wire.
func networkCases() []transportCase {
	var out []transportCase
	for _, tc := range transportCases() {
		if tc.network {
			out = append(out, tc)
		}
	}
	return out
}

// memoryUnderTest gives a memory network endpoint the suite's view: its address is its ID,
// and it has no counters of its own.
type memoryUnderTest struct {
	Transport
	id string
}

func (m memoryUnderTest) Addr() string          { return m.id }
func (m memoryUnderTest) Stats() TransportStats { return TransportStats{} }

// rawLink is what a hand-driven link claims in its handshake or headers.
type rawLink struct {
	from, to, cluster string
	secret            []byte
	version           uint8
	instance          uint64
}

// rawSession sends hand-made payloads on one link.
type rawSession interface {
	// send sends one payload as one frame or request; an error is a refusal the transport
	// reports synchronously (HTTP) and wraps the refusal's sentinel.
	send(payload []byte) error
	// sendTruncated announces len(payload) bytes, sends only the first n, and hangs up.
	sendTruncated(payload []byte, n int)
	close()
}

// transportTestConfig is the configuration of test nodes: loopback, short timeouts so that dead
// links are found quickly, and small batches so that oversize is cheap to provoke.
func transportTestConfig(id string) TransportConfig {
	return TransportConfig{
		NodeID:           id,
		Addr:             "127.0.0.1:0",
		ClusterName:      "conformance",
		Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
		QueueSize:        1024,
		MaxBatchBytes:    64 << 10,
		DialTimeout:      2 * time.Second,
		HandshakeTimeout: 2 * time.Second,
		KeepAlive:        100 * time.Millisecond,
		PeerTimeout:      1500 * time.Millisecond,
		MaxBackoff:       100 * time.Millisecond,
	}
}

// deliveryRecorder collects delivered messages and lets a test wait for a condition on them.
type deliveryRecorder struct {
	mu      sync.Mutex
	msgs    []Message
	changed chan struct{}
	block   chan struct{} // when set, deliver waits on it (a node that stops reading)
}

func newDeliveryRecorder() *deliveryRecorder { return &deliveryRecorder{changed: make(chan struct{})} }

func (r *deliveryRecorder) deliver(batch []Message) {
	r.mu.Lock()
	block := r.block
	r.msgs = append(r.msgs, batch...)
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	if block != nil {
		<-block
	}
}

func (r *deliveryRecorder) snapshot() ([]Message, chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Message(nil), r.msgs...), r.changed
}

// waitFor waits until cond holds for the delivered messages, failing the test after d.
func (r *deliveryRecorder) waitFor(t *testing.T, d time.Duration, what string, cond func([]Message) bool) []Message {
	t.Helper()
	timeout := time.NewTimer(d)
	defer timeout.Stop()
	for {
		msgs, changed := r.snapshot()
		if cond(msgs) {
			return msgs
		}
		select {
		case <-changed:
		case <-timeout.C:
			t.Fatalf("timed out after %v waiting for %s; delivered %d messages", d, what, len(msgs))
		}
	}
}

// count returns how many delivered messages satisfy f.
func countMsgs(msgs []Message, f func(*Message) bool) int {
	n := 0
	for i := range msgs {
		if f(&msgs[i]) {
			n++
		}
	}
	return n
}

func withMsgContext(ctx uint64) func(*Message) bool {
	return func(m *Message) bool { return m.Context == ctx }
}

// waitForCondition polls cond (for counters, which have no change signal) until it holds or d passes.
func waitForCondition(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		<-tick.C
	}
}

// transportNode is one started transport with its deliveryRecorder.
type transportNode struct {
	id  string
	tr  testTransport
	rec *deliveryRecorder
}

func startTransportNode(t *testing.T, tc transportCase, cfg TransportConfig) *transportNode {
	t.Helper()
	tr, err := tc.new(cfg)
	if err != nil {
		t.Fatalf("new %s transport %s: %v", tc.name, cfg.NodeID, err)
	}
	n := &transportNode{id: cfg.NodeID, tr: tr, rec: newDeliveryRecorder()}
	if err := tr.Start(n.rec.deliver); err != nil {
		t.Fatalf("start %s: %v", cfg.NodeID, err)
	}
	t.Cleanup(func() { tr.Close() })
	return n
}

// admit makes ids members that n accepts traffic from (S32), for raw links that claim
// them. n never sends them anything, so it never dials the address.
func admit(n *transportNode, ids ...string) {
	for _, id := range ids {
		n.tr.SetPeer(id, "127.0.0.1:1")
	}
}

func digestOf(body []byte) []byte {
	sum := sha256.Sum256(body)
	return sum[:]
}

// connect introduces every node to every other.
func connectAll(nodes ...*transportNode) {
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b {
				a.tr.SetPeer(b.id, b.tr.Addr())
			}
		}
	}
}

const transportWait = 15 * time.Second // generous: CI shares 2 cores among many tests

func testHeartbeat(partition uint32, ctx uint64) Message {
	return Message{Type: MsgHeartbeat, Partition: partition, Term: 1, Commit: 1, Context: ctx}
}

// keepSending sends a heartbeat with context ctx from a to b every few milliseconds until
// stop is closed: the "other traffic" that an attack must not disturb.
func keepSending(a *transportNode, to string, ctx uint64, stop chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				a.tr.Send(to, []Message{testHeartbeat(1, ctx)})
			}
		}
	}()
	return &wg
}

// expectFlowing checks that b still receives a's traffic: n more messages with context
// ctx than it had.
func expectFlowing(t *testing.T, b *transportNode, ctx uint64, what string) {
	t.Helper()
	msgs, _ := b.rec.snapshot()
	before := countMsgs(msgs, withMsgContext(ctx))
	b.rec.waitFor(t, transportWait, "other traffic to keep flowing "+what, func(m []Message) bool {
		return countMsgs(m, withMsgContext(ctx)) >= before+3
	})
}

func TestTransportConformanceDeliversBatchesBothWays(t *testing.T) {
	for _, tc := range transportCases() {
		t.Run(tc.name, func(t *testing.T) {
			a, b := startTransportNode(t, tc, transportTestConfig("a")), startTransportNode(t, tc, transportTestConfig("b"))
			connectAll(a, b)
			msgs := sampleMessages("a", "b") // every field, a snapshot among them
			a.tr.Send("b", msgs)
			got := b.rec.waitFor(t, transportWait, "the sample batch", func(m []Message) bool { return len(m) >= len(msgs) })
			want := normalizeWire(withFromTo(msgs, "a", "b"))
			if !reflect.DeepEqual(normalizeWire(got), want) {
				t.Fatalf("b received\n%+v\nwant\n%+v", got, want)
			}
			// Many partitions' heartbeats in one Send coalesce into one batch.
			var beats []Message
			for p := uint32(0); p < 500; p++ {
				m := testHeartbeat(p, 42)
				m.From, m.To = "b", "a"
				beats = append(beats, m)
			}
			b.tr.Send("a", beats)
			a.rec.waitFor(t, transportWait, "500 heartbeats", func(m []Message) bool { return countMsgs(m, withMsgContext(42)) == 500 })
			got, _ = a.rec.snapshot()
			for i := range got {
				if got[i].From != "b" || got[i].To != "a" || got[i].Partition != uint32(i) {
					t.Fatalf("message %d = %+v, want partition %d from b to a, in order", i, got[i], i)
				}
			}
			if !tc.network {
				return
			}
			if s := a.tr.Stats(); s.Received != 500 || s.Rejected != 0 {
				t.Fatalf("a stats %+v", s)
			}
			// b counts after its write returns, which may be after a delivered.
			waitForCondition(t, transportWait, "b to count 500 sent", func() bool { return b.tr.Stats().Sent == 500 })
			if s := b.tr.Stats(); s.Dropped != 0 {
				t.Fatalf("b stats %+v", s)
			}
		})
	}
}

func TestTransportConformanceUnknownPeerAndSelfAreDropped(t *testing.T) {
	for _, tc := range transportCases() {
		t.Run(tc.name, func(t *testing.T) {
			a := startTransportNode(t, tc, transportTestConfig("a"))
			a.tr.Send("nobody", []Message{testHeartbeat(1, 1), testHeartbeat(2, 1)})
			if got, _ := a.rec.snapshot(); len(got) != 0 {
				t.Fatalf("messages to an unknown peer were delivered: %+v", got)
			}
			if !tc.network {
				return // the memory network lets a node address itself
			}
			a.tr.SetPeer("a", a.tr.Addr()) // a network transport never dials its own node
			a.tr.Send("a", []Message{testHeartbeat(3, 1)})
			if got, _ := a.rec.snapshot(); len(got) != 0 {
				t.Fatalf("a node delivered %d messages to itself", len(got))
			}
			if s := a.tr.Stats(); s.Dropped != 3 || s.Sent != 0 {
				t.Fatalf("stats %+v, want 3 dropped", s)
			}
		})
	}
}

func TestTransportConformanceReconnectsAfterPeerRestarts(t *testing.T) {
	for _, tc := range transportCases() {
		t.Run(tc.name, func(t *testing.T) {
			a, b := startTransportNode(t, tc, transportTestConfig("a")), startTransportNode(t, tc, transportTestConfig("b"))
			connectAll(a, b)
			a.tr.Send("b", []Message{testHeartbeat(1, 1)})
			b.rec.waitFor(t, transportWait, "first message", func(m []Message) bool { return len(m) == 1 })
			addr := b.tr.Addr()
			if err := b.tr.Close(); err != nil {
				t.Fatalf("close b: %v", err)
			}
			cfg := transportTestConfig("b")
			cfg.Addr = addr // the restarted peer comes back on the same address
			b2 := startTransportNode(t, tc, cfg)
			b2.tr.SetPeer("a", a.tr.Addr())
			stop := make(chan struct{})
			wg := keepSending(a, "b", 2, stop)
			b2.rec.waitFor(t, transportWait, "a's traffic after b restarted", func(m []Message) bool { return countMsgs(m, withMsgContext(2)) > 0 })
			close(stop)
			wg.Wait()
			// And the restarted node reaches a; over HTTP only once its previous incarnation
			// has been quiet for PeerTimeout (S30 keeps the ID with the first process).
			stop = make(chan struct{})
			wg = keepSending(b2, "a", 3, stop)
			a.rec.waitFor(t, transportWait, "the restarted b's traffic", func(m []Message) bool { return countMsgs(m, withMsgContext(3)) > 0 })
			close(stop)
			wg.Wait()
		})
	}
}

// TestTransportConformanceSlowPeerNeverBlocksSendOrOthers is S29: b stops reading; a's
// Send keeps returning at once, drops and counts what does not fit, and c keeps receiving.
func TestTransportConformanceSlowPeerNeverBlocksSendOrOthers(t *testing.T) {
	for _, tc := range networkCases() {
		t.Run(tc.name, func(t *testing.T) {
			cfgA := transportTestConfig("a")
			cfgA.QueueSize = 64
			a, b, c := startTransportNode(t, tc, cfgA), startTransportNode(t, tc, transportTestConfig("b")), startTransportNode(t, tc, transportTestConfig("c"))
			connectAll(a, b, c)
			unblock := make(chan struct{})
			b.rec.mu.Lock()
			b.rec.block = unblock
			b.rec.mu.Unlock()
			defer close(unblock)
			big := Message{Type: MsgAppend, Partition: 1, Term: 1, Context: 7,
				Entries: []Entry{{Term: 1, Index: 1, Data: make([]byte, 16<<10)}}}
			done := make(chan struct{})
			go func() {
				defer close(done)
				for i := 0; i < 5000; i++ {
					a.tr.Send("b", []Message{big, big})
					if i%50 == 0 {
						a.tr.Send("c", []Message{testHeartbeat(uint32(i), 9)})
					}
				}
			}()
			select {
			case <-done:
			case <-time.After(transportWait):
				t.Fatal("Send blocked behind a peer that stopped reading")
			}
			// c is served while b still hangs. (What the flood dropped from c's full queue
			// is gone, as any drop: Raft resends.)
			stop := make(chan struct{})
			wg := keepSending(a, "c", 1000, stop)
			c.rec.waitFor(t, transportWait, "c's heartbeats", func(m []Message) bool { return countMsgs(m, withMsgContext(1000)) >= 20 })
			close(stop)
			wg.Wait()
			if s := a.tr.Stats(); s.Dropped == 0 {
				t.Fatalf("a dropped nothing although b stopped reading: %+v", s)
			}
		})
	}
}

// TestTransportConformanceReplacesDeadConnection is S28: the link to b goes silent without
// closing (a frozen proxy, like a pulled cable); a notices within PeerTimeout and reaches b
// again over a new connection.
func TestTransportConformanceReplacesDeadConnection(t *testing.T) {
	for _, tc := range networkCases() {
		t.Run(tc.name, func(t *testing.T) {
			a, b := startTransportNode(t, tc, transportTestConfig("a")), startTransportNode(t, tc, transportTestConfig("b"))
			px := newFreezingProxy(t, b.tr.Addr())
			a.tr.SetPeer("b", px.addr())
			b.tr.SetPeer("a", a.tr.Addr())
			a.tr.Send("b", []Message{testHeartbeat(1, 1)})
			b.rec.waitFor(t, transportWait, "first message", func(m []Message) bool { return len(m) == 1 })
			px.freeze() // every current connection goes silent; new ones pass
			stop := make(chan struct{})
			wg := keepSending(a, "b", 2, stop)
			b.rec.waitFor(t, transportWait, "traffic over a new connection", func(m []Message) bool { return countMsgs(m, withMsgContext(2)) > 0 })
			close(stop)
			wg.Wait()
			if n := px.accepted(); n < 2 {
				t.Fatalf("proxy saw %d connections; the dead one was not replaced", n)
			}
		})
	}
}

// TestTransportConformanceHostileInput sends what a broken or hostile peer might, each on
// its own link while a legitimate peer keeps talking to the same node. Outcomes: a payload
// that does not decode (garbage, truncated batch, wrong batch version, spoofed sender) is
// refused and counted and the link stays usable (S28); one bad message costs only itself;
// an oversize payload is refused without being buffered; a link that hangs up mid-payload
// delivers nothing; a wrong protocol version, cluster, secret or a duplicate node ID is
// refused before anything is delivered (S30). The legitimate traffic never stops.
func TestTransportConformanceHostileInput(t *testing.T) {
	secret := []byte("conformance-shared-secret")
	for _, tc := range networkCases() {
		t.Run(tc.name, func(t *testing.T) {
			cfgA, cfgB := transportTestConfig("a"), transportTestConfig("b")
			cfgA.Secret, cfgB.Secret = secret, secret
			b := startUnderAttack(t, tc, cfgA, cfgB)

			link := rawLink{from: "x", to: "b", cluster: "conformance", secret: secret, version: 1, instance: 77}
			good := func(ctx uint64) []byte {
				return mustEncode(t, "x", "b", []Message{testHeartbeat(5, ctx), testHeartbeat(6, ctx)})
			}
			rejected := func() uint64 { return b.tr.Stats().Rejected }

			// Payloads that do not decode: refused, counted, the same link carries on.
			bad := map[string][]byte{
				"garbage":             []byte("\x01\x00not a batch at all, just some bytes"),
				"truncated batch":     good(100)[:30],
				"wrong version":       append([]byte{codecVersion + 1}, good(100)[1:]...),
				"spoofed sender (S5)": mustEncode(t, "a", "b", []Message{testHeartbeat(5, 100)}),
				"wrong receiver":      mustEncode(t, "x", "c", []Message{testHeartbeat(5, 100)}),
				"oversize":            append(good(100), make([]byte, 64<<10)...),
			}
			s, err := tc.raw(t, b.tr, link)
			if err != nil {
				t.Fatalf("open raw link: %v", err)
			}
			ctx := uint64(200)
			for name, payload := range bad {
				before := rejected()
				if err := s.send(payload); err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVersion) {
					t.Fatalf("%s: refusal %v wraps neither ErrMalformed nor ErrVersion", name, err)
				}
				waitForCondition(t, transportWait, name+" to be counted as rejected", func() bool { return rejected() > before })
				ctx++
				if err := s.send(good(ctx)); err != nil {
					t.Fatalf("%s: the link refused a good batch afterwards: %v", name, err)
				}
				b.rec.waitFor(t, transportWait, "the good batch after "+name, func(m []Message) bool { return countMsgs(m, withMsgContext(ctx)) == 2 })
				expectFlowing(t, b, 1, "after "+name)
			}
			msgs, _ := b.rec.snapshot()
			if n := countMsgs(msgs, withMsgContext(100)); n != 0 {
				t.Fatalf("%d messages of refused payloads were delivered", n)
			}

			// One malformed message in a batch costs only that message (S28).
			three := mustEncode(t, "x", "b", []Message{testHeartbeat(1, 300), testHeartbeat(2, 301), testHeartbeat(3, 300)})
			three[batchHeaderSize("x", "b")+minRecordOnWire+4] = 0xee // the second record's type
			before := rejected()
			if err := s.send(three); err != nil {
				t.Fatalf("a batch with one bad message was refused whole: %v", err)
			}
			b.rec.waitFor(t, transportWait, "the two good messages", func(m []Message) bool { return countMsgs(m, withMsgContext(300)) == 2 })
			if got := rejected(); got != before+1 {
				t.Fatalf("rejected went from %d to %d, want one more", before, got)
			}
			s.close()

			// A link that hangs up in the middle of a payload delivers nothing of it.
			s, err = tc.raw(t, b.tr, link)
			if err != nil {
				t.Fatalf("open raw link: %v", err)
			}
			s.sendTruncated(good(400), 20)
			s.close()
			expectFlowing(t, b, 1, "after a truncated frame")

			// Refused before anything is delivered.
			refusals := []struct {
				name string
				l    rawLink
				want error
			}{
				{"wrong protocol version", withLink(link, func(l *rawLink) { l.version = 9 }), ErrVersion},
				{"wrong cluster", withLink(link, func(l *rawLink) { l.cluster = "other" }), ErrClusterMismatch},
				{"wrong secret", withLink(link, func(l *rawLink) { l.secret = []byte("not-the-shared-secret") }), ErrAuthFailed},
				{"no secret", withLink(link, func(l *rawLink) { l.secret = nil }), ErrAuthFailed},
				{"duplicate node ID (S30)", withLink(link, func(l *rawLink) { l.from, l.instance = "a", 99 }), ErrDuplicateNodeID},
			}
			for _, r := range refusals {
				dupsBefore := b.tr.Stats().DuplicateNodeIDs
				s, err := tc.raw(t, b.tr, r.l)
				if err == nil {
					err = s.send(mustEncode(t, r.l.from, "b", []Message{testHeartbeat(9, 500)}))
					s.close()
				}
				if !errors.Is(err, r.want) {
					t.Fatalf("%s: err = %v, want %v", r.name, err, r.want)
				}
				if r.want == ErrDuplicateNodeID { // counted after the answer: wait for it
					waitForCondition(t, transportWait, r.name+" to be counted", func() bool {
						return b.tr.Stats().DuplicateNodeIDs > dupsBefore
					})
				}
				expectFlowing(t, b, 1, "after "+r.name)
			}
			msgs, _ = b.rec.snapshot()
			if n := countMsgs(msgs, withMsgContext(500)) + countMsgs(msgs, withMsgContext(400)); n != 0 {
				t.Fatalf("%d messages of refused links were delivered", n)
			}
		})
	}
}

// startUnderAttack starts a and b, with a sending b heartbeats with context 1 until the
// test ends, and b admitting member "x", which raw links claim; it returns b.
func startUnderAttack(t *testing.T, tc transportCase, cfgA, cfgB TransportConfig) *transportNode {
	a, b := startTransportNode(t, tc, cfgA), startTransportNode(t, tc, cfgB)
	connectAll(a, b)
	admit(b, "x")
	stop := make(chan struct{})
	wg := keepSending(a, "b", 1, stop)
	t.Cleanup(func() { close(stop); wg.Wait() })
	expectFlowing(t, b, 1, "at the start")
	return b
}

func withLink(l rawLink, f func(*rawLink)) rawLink {
	f(&l)
	return l
}

// ---- raw TCP links ----

type rawTCP struct {
	conn net.Conn
}

func openRawTCP(t *testing.T, target testTransport, l rawLink) (rawSession, error) {
	conn, err := net.DialTimeout("tcp", target.Addr(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	conn.SetDeadline(time.Now().Add(transportWait))
	h := tcpHello{version: l.version, cluster: l.cluster, from: l.from, to: l.to, instance: l.instance}
	if err := clientHandshake(conn, h, l.secret); err != nil {
		conn.Close()
		return nil, err
	}
	return &rawTCP{conn: conn}, nil
}

func (r *rawTCP) send(payload []byte) error {
	frame := binary.LittleEndian.AppendUint32(nil, uint32(len(payload)))
	_, err := r.conn.Write(append(frame, payload...))
	return err
}

func (r *rawTCP) sendTruncated(payload []byte, n int) {
	frame := binary.LittleEndian.AppendUint32(nil, uint32(len(payload)))
	r.conn.Write(append(frame, payload[:n]...))
}

func (r *rawTCP) close() { r.conn.Close() }

// ---- raw HTTP links ----

type rawHTTP struct {
	client *http.Client
	addr   string
	l      rawLink
	seq    int
	prefix string // of the nonces: "" for Raft traffic, httpSnapshotNonce for snapshot chunks
}

func openRawHTTP(t *testing.T, target testTransport, l rawLink) (rawSession, error) {
	return &rawHTTP{client: &http.Client{Timeout: transportWait}, addr: target.Addr(), l: l}, nil
}

func (r *rawHTTP) request(payload []byte) *http.Request {
	req, _ := http.NewRequest(http.MethodPost, "http://"+r.addr+httpRaftPath, bytes.NewReader(payload))
	r.seq++
	h := req.Header
	h.Set(hdrVersion, strconv.Itoa(int(r.l.version)))
	h.Set(hdrCluster, r.l.cluster)
	h.Set(hdrNode, r.l.from)
	inst := fmt.Sprintf("%016x", r.l.instance)
	h.Set(hdrInstance, inst)
	if r.l.secret != nil {
		ts := strconv.FormatInt(time.Now().UnixNano(), 10)
		nonce := r.prefix + strconv.Itoa(r.seq)
		h.Set(hdrTimestamp, ts)
		h.Set(hdrNonce, nonce)
		h.Set(hdrDigest, hexOf(digestOf(payload)))
		h.Set(hdrSignature, hexOf(httpSignature(r.l.secret, http.MethodPost, httpRaftPath,
			r.l.cluster, r.l.from, inst, ts, nonce, digestOf(payload))))
	}
	return req
}

func (r *rawHTTP) send(payload []byte) error { return r.do(r.request(payload)) }

// do sends req and returns nil for 204 and otherwise the refusal's sentinel.
func (r *rawHTTP) do(req *http.Request) error {
	resp, err := r.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode == http.StatusNoContent {
		return nil
	}
	return fmt.Errorf("%w (%s)", httpRefusal(resp), resp.Status)
}

// sendTruncated writes the request by hand with a Content-Length longer than the body.
func (r *rawHTTP) sendTruncated(payload []byte, n int) {
	conn, err := net.DialTimeout("tcp", r.addr, 5*time.Second)
	if err != nil {
		return
	}
	defer conn.Close()
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", httpRaftPath, r.addr, len(payload))
	r.request(payload).Header.Write(&buf)
	buf.WriteString("\r\n")
	buf.Write(payload[:n])
	conn.Write(buf.Bytes())
}

func (r *rawHTTP) close() { r.client.CloseIdleConnections() }

// ---- a proxy that can go silent ----

// freezingProxy forwards TCP connections to a target; freeze makes every current
// connection silent (nothing forwarded, nothing closed) while new ones still pass.
type freezingProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	frozen []chan struct{}
	count  atomic.Int32
	wg     sync.WaitGroup
}

func newFreezingProxy(t *testing.T, target string) *freezingProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezingProxy{ln: ln, target: target}
	var conns []net.Conn
	var connsMu sync.Mutex
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.count.Add(1)
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			connsMu.Lock()
			conns = append(conns, c, up)
			connsMu.Unlock()
			freeze := make(chan struct{})
			p.mu.Lock()
			p.frozen = append(p.frozen, freeze)
			p.mu.Unlock()
			p.wg.Add(2)
			go p.pipe(c, up, freeze)
			go p.pipe(up, c, freeze)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		connsMu.Lock()
		for _, c := range conns {
			c.Close()
		}
		connsMu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *freezingProxy) pipe(dst, src net.Conn, freeze chan struct{}) {
	defer p.wg.Done()
	r := bufio.NewReader(src)
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		select {
		case <-freeze:
			// Silent: swallow everything from now on, as a dead network would.
			for err == nil {
				_, err = r.Read(buf)
			}
			return
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

func (p *freezingProxy) addr() string  { return p.ln.Addr().String() }
func (p *freezingProxy) accepted() int { return int(p.count.Load()) }

func (p *freezingProxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.frozen {
		close(f)
	}
	p.frozen = nil
}

// TestTransportConformanceSharedSecretKeepsOutWrongSecret: nodes sharing the secret talk; a
// node with another secret gets nothing in and is sent nothing.
func TestTransportConformanceSharedSecretKeepsOutWrongSecret(t *testing.T) {
	for _, tc := range networkCases() {
		t.Run(tc.name, func(t *testing.T) {
			cfgA, cfgB, cfgC := transportTestConfig("a"), transportTestConfig("b"), transportTestConfig("c")
			cfgA.Secret = []byte("the-cluster-shared-secret")
			cfgB.Secret = cfgA.Secret
			cfgC.Secret = []byte("a-different-secret-entirely")
			a, b, c := startTransportNode(t, tc, cfgA), startTransportNode(t, tc, cfgB), startTransportNode(t, tc, cfgC)
			expectKeptOut(t, a, b, c, "the wrong secret")
			waitForCondition(t, transportWait, "authentication failures to be counted", func() bool {
				return a.tr.Stats().AuthFailures+c.tr.Stats().AuthFailures > 0
			})
		})
	}
}

// expectKeptOut checks that a and b talk while c, which a must not trust, gets no message
// in and is sent none.
func expectKeptOut(t *testing.T, a, b, c *transportNode, why string) {
	t.Helper()
	connectAll(a, b, c)
	stop := make(chan struct{})
	wgB := keepSending(b, "a", 1, stop)
	wgC := keepSending(c, "a", 2, stop)
	wgA := keepSending(a, "c", 3, stop)
	defer func() { close(stop); wgA.Wait(); wgB.Wait(); wgC.Wait() }()
	a.rec.waitFor(t, transportWait, "b's traffic", func(m []Message) bool { return countMsgs(m, withMsgContext(1)) >= 5 })
	waitForCondition(t, transportWait, "c's attempts to fail", func() bool { return c.tr.Stats().Dropped >= 5 })
	waitForCondition(t, transportWait, "a's attempts to reach c to fail", func() bool { return a.tr.Stats().Dropped >= 5 })
	expectFlowing(t, a, 1, "while c knocks")
	if got, _ := a.rec.snapshot(); countMsgs(got, withMsgContext(2)) != 0 {
		t.Fatalf("a accepted messages from a node with %s", why)
	}
	if got, _ := c.rec.snapshot(); countMsgs(got, withMsgContext(3)) != 0 {
		t.Fatalf("a sent messages to a node with %s", why)
	}
	if s := c.tr.Stats(); s.Sent != 0 {
		t.Fatalf("c's stats %+v: it got messages through with %s", s, why)
	}
}

// benchTransportConfigs are the configurations of nodes a and b in the transport
// benchmarks: a PeerTimeout that a loaded machine does not run out.
func benchTransportConfigs() (a, b TransportConfig) {
	a, b = transportTestConfig("a"), transportTestConfig("b")
	a.PeerTimeout, b.PeerTimeout = 10*time.Second, 10*time.Second
	return a, b
}

// startTransportPair starts transports of tc for nodes a and b, each the other's peer,
// delivering to deliverA and deliverB; they are closed when the benchmark ends.
func startTransportPair(b *testing.B, tc transportCase, cfgA, cfgB TransportConfig, deliverA, deliverB func([]Message)) (ta, tb testTransport) {
	b.Helper()
	ta, err := tc.new(cfgA)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ta.Close() })
	tb, err = tc.new(cfgB)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tb.Close() })
	ta.Start(deliverA)
	tb.Start(deliverB)
	ta.SetPeer("b", tb.Addr())
	tb.SetPeer("a", ta.Addr())
	return ta, tb
}

// BenchmarkTransportThroughput measures messages per second from one node to another over
// loopback: appends of one 128-byte entry, 64 per Send, with at most 4096 in flight so
// that nothing is dropped.
func BenchmarkTransportThroughput(b *testing.B) {
	for _, tc := range networkCases() {
		b.Run(tc.name, func(b *testing.B) {
			var received atomic.Int64
			progress := make(chan struct{}, 1)
			cfgA, cfgB := benchTransportConfigs()
			cfgA.QueueSize = 8192
			ta, _ := startTransportPair(b, tc, cfgA, cfgB, func([]Message) {}, func(m []Message) {
				received.Add(int64(len(m)))
				select {
				case progress <- struct{}{}:
				default:
				}
			})
			data := make([]byte, 128)
			batch := make([]Message, 64)
			for i := range batch {
				batch[i] = Message{Type: MsgAppend, Partition: uint32(i), Term: 1, Index: 10, LogTerm: 1, Commit: 9,
					Entries: []Entry{{Term: 1, Index: 11, Type: "SetValue", Data: data}}}
			}
			const window = 4096
			b.SetBytes(int64(encodedMessageSize(&batch[0])))
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			sent := int64(0)
			for sent < int64(b.N) {
				for sent-received.Load() > window {
					<-progress
				}
				n := min(int64(len(batch)), int64(b.N)-sent)
				ta.Send("b", batch[:n:n])
				sent += n
			}
			for received.Load() < sent {
				<-progress
			}
			b.ReportMetric(float64(sent)/time.Since(start).Seconds(), "msgs/s")
			if s := ta.Stats(); s.Dropped != 0 {
				b.Fatalf("dropped %d", s.Dropped)
			}
		})
	}
}

func TestNewTransportBuildsEachKind(t *testing.T) {
	for _, kind := range []TransportKind{TCP, HTTP} {
		tr, err := newTransport(kind, transportTestConfig("a"))
		if err != nil {
			t.Fatalf("%v: %v", kind, err)
		}
		tr.Close()
	}
	if _, err := newTransport(TransportKind(9), transportTestConfig("a")); err == nil {
		t.Fatal("an unknown kind was built")
	}
}
