package kommander

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// What an attacker did to three `kommander node` processes with default flags, and what
// the transports now do instead (S32): a second claimant of a live peer's ID, on whatever
// lane, is refused; strangers are refused before any frame or body is read; the frames of
// all connections together stay within MaxInboundBytes; and a flood of refusals writes a
// few log lines with a count, not a line each.

// inboundBudgetOf returns the inbound budget of a network transport under test.
func inboundBudgetOf(t *testing.T, tr testTransport) *inboundBudget {
	switch tr := tr.(type) {
	case *TCPTransport:
		return &tr.budget
	case *HTTPTransport:
		return &tr.budget
	}
	t.Fatalf("%T has no inbound budget", tr)
	return nil
}

// laneConn sets the lane byte of the TCP hello it writes first, which this version's
// dialer always leaves at 0.
type laneConn struct {
	net.Conn
	lane    byte
	written bool
}

func (c *laneConn) Write(b []byte) (int, error) {
	if !c.written && len(b) > 5 {
		c.written = true
		b = bytes.Clone(b)
		b[5] = c.lane
	}
	return c.Conn.Write(b)
}

// openRawTCPLane is openRawTCP with a hello for the given lane.
func openRawTCPLane(t *testing.T, target testTransport, l rawLink, lane byte) (rawSession, error) {
	conn, err := net.DialTimeout("tcp", target.Addr(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	conn.SetDeadline(time.Now().Add(transportWait))
	h := tcpHello{version: l.version, cluster: l.cluster, from: l.from, to: l.to, instance: l.instance}
	if err := clientHandshake(&laneConn{Conn: conn, lane: lane}, h, l.secret); err != nil {
		conn.Close()
		return nil, err
	}
	return &rawTCP{conn: conn}, nil
}

// TestTransportConformanceSecondClaimantOfALivePeerIsRefused is S32: lane 1 of the TCP
// transport skipped the duplicate check, which was kept per (ID, lane), so anyone could
// claim a connected peer's ID there. Now a connection or request claiming a live peer's
// ID from another process is refused on any lane (lane 1 carries snapshot chunks again),
// and a lane that nothing uses accepts nothing, not even from a member that is not
// connected.
func TestTransportConformanceSecondClaimantOfALivePeerIsRefused(t *testing.T) {
	for _, tc := range networkCases() {
		t.Run(tc.name, func(t *testing.T) {
			b := startUnderAttack(t, tc, transportTestConfig("a"), transportTestConfig("b"))

			impostor := rawLink{from: "a", to: "b", cluster: "conformance", version: 1, instance: 99}
			type attempt struct {
				name string
				l    rawLink
				lane byte
			}
			attempts := []attempt{{"a's ID on lane 0", impostor, 0}}
			if tc.name == "tcp" {
				attempts = append(attempts,
					attempt{"a's ID on lane 1", impostor, 1},
					attempt{"a's ID on lane 7", impostor, 7},
					attempt{"an idle member on lane 2", withLink(impostor, func(l *rawLink) { l.from = "x" }), 2})
			}
			for i, at := range attempts {
				ctx := uint64(500 + i)
				var s rawSession
				var err error
				if tc.name == "tcp" {
					s, err = openRawTCPLane(t, b.tr, at.l, at.lane)
				} else {
					s, err = tc.raw(t, b.tr, at.l)
				}
				if err == nil { // TCP refuses in the handshake, HTTP the request
					err = s.send(mustEncode(t, at.l.from, "b", []Message{testHeartbeat(9, ctx)}))
					s.close()
				}
				if err == nil {
					t.Fatalf("%s: accepted", at.name)
				}
				expectFlowing(t, b, 1, "after "+at.name)
				if msgs, _ := b.rec.snapshot(); countMsgs(msgs, withMsgContext(ctx)) != 0 {
					t.Fatalf("%s: its message was delivered", at.name)
				}
			}
		})
	}
}

// TestTransportConformanceStrangersAreRefusedBeforeAnyFrame is S32: connections with
// made-up node IDs, each announcing a frame or body as large as allowed, were accepted and
// buffered. Now a node ID that was not given to SetPeer is refused at the handshake (TCP)
// or from the headers (HTTP), and nothing of what follows is buffered.
func TestTransportConformanceStrangersAreRefusedBeforeAnyFrame(t *testing.T) {
	for _, tc := range networkCases() {
		t.Run(tc.name, func(t *testing.T) {
			cfg := transportTestConfig("b")
			b := startTransportNode(t, tc, cfg)
			admit(b, "a")
			budget := inboundBudgetOf(t, b.tr)
			announced := cfg.MaxBatchBytes - 1
			var open []net.Conn
			defer func() {
				for _, c := range open {
					c.Close()
				}
			}()
			for i := 0; i < 20; i++ {
				l := rawLink{from: fmt.Sprintf("stranger-%d", i), to: "b", cluster: "conformance", version: 1, instance: uint64(i)}
				var err error
				switch tc.name {
				case "tcp":
					var s rawSession
					if s, err = openRawTCP(t, b.tr, l); err == nil {
						open = append(open, s.(*rawTCP).conn)
						s.sendTruncated(make([]byte, announced), announced/2)
					}
				case "http":
					var c net.Conn
					c, err = postStalled(b.tr.Addr(), l, announced, announced/2, transportWait)
					open = append(open, c)
				}
				if !errors.Is(err, ErrUnknownPeer) {
					t.Fatalf("stranger %d: err = %v, want ErrUnknownPeer", i, err)
				}
			}
			waitForCondition(t, transportWait, "the refusals to be counted", func() bool { return b.tr.Stats().Rejected >= 20 })
			if peak := budget.peak.Load(); peak != 0 {
				t.Fatalf("strangers made the transport buffer %d bytes", peak)
			}
		})
	}
}

// postStalled writes a POST whose headers claim l and whose Content-Length is announced,
// then send bytes of the body, and returns the connection still open. With wait > 0 it
// also returns the refusal the server answered with within wait; a server that reads the
// body answers only when its read deadline cuts the request off.
func postStalled(addr string, l rawLink, announced, send int, wait time.Duration) (net.Conn, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	r := &rawHTTP{addr: addr, l: l}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", httpRaftPath, addr, announced)
	r.request(make([]byte, announced)).Header.Write(&buf)
	buf.WriteString("\r\n")
	buf.Write(make([]byte, send))
	if _, err := conn.Write(buf.Bytes()); err != nil {
		return conn, err
	}
	if wait == 0 {
		return conn, nil
	}
	conn.SetReadDeadline(time.Now().Add(wait))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return conn, err
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent {
		return conn, nil
	}
	return conn, fmt.Errorf("%w (%s)", httpRefusal(resp), resp.Status)
}

// TestHTTPChecksTheSignatureBeforeReadingTheBody is S32's HTTP half: the body was buffered
// up to MaxBatchBytes before its signature was checked. Now the signature covers a digest
// sent in a header and is checked first; a request that fails it costs no body buffer.
func TestHTTPChecksTheSignatureBeforeReadingTheBody(t *testing.T) {
	cfg := transportTestConfig("b")
	cfg.Secret = []byte("the-cluster-shared-secret")
	b := startTransportNode(t, transportCases()[1], cfg)
	admit(b, "x")
	l := rawLink{from: "x", to: "b", cluster: "conformance", secret: []byte("not-the-cluster-secret"), version: 1, instance: 1}
	conn, err := postStalled(b.tr.Addr(), l, cfg.MaxBatchBytes-1, cfg.MaxBatchBytes/2, transportWait)
	if conn != nil {
		defer conn.Close()
	}
	if !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("wrong secret: err = %v, want ErrAuthFailed before the body is read", err)
	}
	if peak := b.tr.(*HTTPTransport).budget.peak.Load(); peak != 0 {
		t.Fatalf("an unauthenticated request made the transport buffer %d bytes", peak)
	}
}

// TestTransportConformanceInboundBuffersStayWithinTheirBound is S32: 20 connections each
// announcing a 16 MB frame grew a node by up to 1 GB. Now a frame's buffer grows only as
// bytes arrive, and all inbound buffers together stay within MaxInboundBytes: members that
// announce large frames and send half of them are refused beyond it, and the node still
// hears its peers afterwards.
func TestTransportConformanceInboundBuffersStayWithinTheirBound(t *testing.T) {
	for _, tc := range networkCases() {
		t.Run(tc.name, func(t *testing.T) {
			cfg := transportTestConfig("b")
			cfg.MaxInboundBytes = 2 * cfg.MaxBatchBytes
			b := startTransportNode(t, tc, cfg)
			a := startTransportNode(t, tc, transportTestConfig("a"))
			connectAll(a, b)
			budget := inboundBudgetOf(t, b.tr)
			const links = 10
			announced, sent := cfg.MaxBatchBytes-100, cfg.MaxBatchBytes*3/4
			var open []net.Conn
			defer func() {
				for _, c := range open {
					if c != nil {
						c.Close()
					}
				}
			}()
			for i := 0; i < links; i++ {
				id := "m" + strconv.Itoa(i)
				admit(b, id)
				l := rawLink{from: id, to: "b", cluster: "conformance", version: 1, instance: uint64(i)}
				switch tc.name {
				case "tcp":
					s, err := openRawTCP(t, b.tr, l)
					if err != nil {
						t.Fatalf("member %s: %v", id, err)
					}
					open = append(open, s.(*rawTCP).conn)
					s.sendTruncated(make([]byte, announced), sent)
				case "http":
					c, _ := postStalled(b.tr.Addr(), l, announced, sent, 0)
					open = append(open, c)
				}
			}
			// At most two frames fit the bound, so at least links-2 are refused.
			waitForCondition(t, transportWait, "frames beyond the bound to be refused", func() bool {
				return b.tr.Stats().Rejected >= links-2 || budget.peak.Load() > int64(cfg.MaxInboundBytes)
			})
			if peak, limit := budget.peak.Load(), int64(cfg.MaxInboundBytes); peak > limit || peak < int64(sent) {
				t.Fatalf("inbound buffers peaked at %d bytes, want within (%d, %d]", peak, sent, limit)
			}
			for i, c := range open {
				if c != nil {
					c.Close()
				}
				open[i] = nil
			}
			waitForCondition(t, transportWait, "the buffers of closed connections to be given back", func() bool {
				return budget.used.Load() == 0
			})
			stop := make(chan struct{})
			wg := keepSending(a, "b", 1, stop)
			defer func() { close(stop); wg.Wait() }()
			expectFlowing(t, b, 1, "after the flood")
		})
	}
}

// TestTransportConformanceRefusalsAreRateLimited is S32: a flood of refused handshakes
// wrote a warning each (1,604 lines in 25 s). Now each kind of refusal writes at most a
// line per interval, and a summary line counts the rest.
func TestTransportConformanceRefusalsAreRateLimited(t *testing.T) {
	for _, tc := range networkCases() {
		t.Run(tc.name, func(t *testing.T) {
			var out lineLog
			cfg := transportTestConfig("b")
			cfg.Logger = out.logger()
			b := startTransportNode(t, tc, cfg)
			const flood = 50
			for i := 0; i < flood; i++ {
				l := rawLink{from: fmt.Sprintf("stranger-%d", i), to: "b", cluster: "conformance", version: 1, instance: uint64(i)}
				s, err := tc.raw(t, b.tr, l)
				if err == nil {
					err = s.send(mustEncode(t, l.from, "b", []Message{testHeartbeat(1, 1)}))
					s.close()
				}
				if tc.name == "http" && !errors.Is(err, ErrUnknownPeer) {
					t.Fatalf("stranger %d: err = %v", i, err)
				}
			}
			waitForCondition(t, transportWait, "the refusals to be counted", func() bool { return b.tr.Stats().Rejected >= flood })
			b.tr.Close() // writes the pending summary
			written, suppressed := 0, 0
			for _, line := range out.lines("unknown-peer") {
				if !strings.Contains(line, "log lines suppressed") {
					written++
					continue
				}
				i := strings.Index(line, "suppressed=")
				n, err := strconv.Atoi(strings.Fields(line[i+len("suppressed="):])[0])
				if err != nil {
					t.Fatalf("summary line %q: %v", line, err)
				}
				suppressed += n
			}
			if written > 3 || written+suppressed != flood {
				t.Fatalf("%d lines written and %d suppressed for %d refusals; want a few lines and the rest counted:\n%s",
					written, suppressed, flood, strings.Join(out.lines(""), "\n"))
			}
		})
	}
}

// TestInboundBudgetReadGrowsOnlyAsBytesArrive (S32): an announced length costs nothing
// until its bytes come; a body of unknown length stops at its limit; a frame that does not
// fit what others hold is refused and leaves nothing taken.
func TestInboundBudgetReadGrowsOnlyAsBytesArrive(t *testing.T) {
	b := &inboundBudget{limit: 1 << 20}
	// 16 MB announced, 10 bytes sent.
	if _, consumed, err := b.read(strings.NewReader("0123456789"), 16<<20, 16<<20); err == nil || consumed != 10 {
		t.Fatalf("short frame: consumed %d, err %v", consumed, err)
	}
	if peak := b.peak.Load(); peak > inboundFirstChunk {
		t.Fatalf("10 bytes of a 16 MB frame made it buffer %d bytes", peak)
	}
	// Unknown length: everything up to EOF, or refused beyond the limit.
	body := strings.Repeat("x", 3*inboundFirstChunk+1)
	frame, _, err := b.read(strings.NewReader(body), -1, len(body))
	if err != nil || string(frame) != body {
		t.Fatalf("body to EOF: %d bytes, err %v", len(frame), err)
	}
	b.give(cap(frame))
	if _, _, err := b.read(strings.NewReader(body), -1, len(body)-1); !errors.Is(err, errInboundTooLarge) {
		t.Fatalf("body beyond its limit: err %v", err)
	}
	// Held by others: refused, and what this read took is given back.
	if !b.take(int(b.limit) - 2*inboundFirstChunk) {
		t.Fatal("take")
	}
	if _, consumed, err := b.read(strings.NewReader(body), len(body), len(body)); !errors.Is(err, errInboundFull) || consumed != inboundFirstChunk {
		t.Fatalf("frame beyond the budget: consumed %d, err %v", consumed, err)
	}
	b.give(int(b.limit - 2*inboundFirstChunk))
	if used := b.used.Load(); used != 0 {
		t.Fatalf("%d bytes still taken", used)
	}
}
