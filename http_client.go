package kommander

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The HTTP transport's client side: each sender posts its batches over one keep-alive
// HTTP/1.1 connection of its own, written and read in the sender's goroutine. net/http's
// client costs, per request, a hand-off to the connection's writer goroutine and another
// from its reader, a timer and a context for the timeout, and a hundred allocations; Raft
// sends a request per batch, so that was most of what HTTP cost over TCP. The server side
// stays net/http (Handler mounts in any server), and the wire is plain HTTP/1.1: any
// server or proxy that speaks it carries the requests.

// httpPoster is one sender's connection to one peer. Not safe for concurrent use.
type httpPoster struct {
	t      *HTTPTransport
	addr   string    // the URL conn is for
	target *url.URL  // addr parsed
	conn   net.Conn  // nil until dialed, and after a failure
	used   time.Time // when conn last carried a request
	stop   func() bool
	br     *bufio.Reader
	bw     *bufio.Writer
	head   []byte        // the request head, reused
	req    *http.Request // what http.ReadResponse is told the response answers
	signer *httpSigner   // with a secret
}

func (t *HTTPTransport) newPoster() *httpPoster {
	return &httpPoster{t: t, req: &http.Request{Method: http.MethodPost}}
}

// httpPosterBuffer is the size of a poster's read and write buffers; a larger batch is
// written from its own buffer.
const httpPosterBuffer = 16 << 10

// errStaleConn wraps the failure of a request on a connection that had served earlier
// ones, before any answer came: the peer may have closed it while it was idle, or
// restarted. The sender tries once more, on a new connection.
var errStaleConn = errors.New("kommander: http transport: reused connection failed")

// post sends one batch to the raft endpoint at rawURL, with nonce, and reads the answer;
// anything but 204 is an error. After an error the connection is closed and the next post
// dials again. A connection idle for PeerTimeout is not reused: the peer's server may close
// it (its idle timeout) just as the request goes out.
func (c *httpPoster) post(rawURL, nonce string, body []byte) error {
	if c.conn != nil && (rawURL != c.addr || time.Since(c.used) > c.t.cfg.PeerTimeout) {
		c.close() // the peer moved, or the connection idled
	}
	reused := c.conn != nil
	if !reused {
		if err := c.dial(rawURL); err != nil {
			return err
		}
	}
	answered, err := c.exchange(nonce, body)
	if err != nil {
		c.close()
		if reused && !answered {
			return fmt.Errorf("%w: %w", errStaleConn, err)
		}
		return err
	}
	c.used = time.Now()
	return nil
}

// exchange writes one request on the open connection and reads its response; answered
// reports whether a response came. Both are bounded by PeerTimeout: a peer that stops
// answering costs its connection (S28).
func (c *httpPoster) exchange(nonce string, body []byte) (answered bool, err error) {
	t := c.t
	c.conn.SetDeadline(time.Now().Add(t.cfg.PeerTimeout))
	if t.cfg.Secret != nil && c.signer == nil {
		c.signer = newHTTPSigner(t.cfg.Secret)
	}
	if c.head, err = t.appendHead(c.head[:0], c.target, nonce, body, c.signer); err != nil {
		return true, err // nothing to retry
	}
	if _, err := c.bw.Write(c.head); err != nil {
		return false, err
	}
	if _, err := c.bw.Write(body); err != nil {
		return false, err
	}
	if err := c.bw.Flush(); err != nil {
		return false, err
	}
	resp, err := http.ReadResponse(c.br, c.req)
	if err != nil {
		return false, err
	}
	return true, c.answer(resp)
}

// answer checks a response: nil for 204.
func (c *httpPoster) answer(resp *http.Response) error {
	t := c.t
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent && !resp.Close {
		return nil
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	c.close() // a refusal closes the connection (refuse); so does anything unexpected
	if resp.StatusCode == http.StatusNoContent {
		return nil
	}
	err := httpRefusal(resp)
	if errors.Is(err, ErrAuthFailed) {
		t.counters.authFailures.Add(1)
	}
	return fmt.Errorf("%w: %s: %s", err, resp.Status, strings.TrimSpace(string(msg)))
}

// dial connects to the host of rawURL (with TLS for https) within DialTimeout and
// HandshakeTimeout. Close of the transport closes the connection, which ends a post in
// progress at once.
func (c *httpPoster) dial(rawURL string) error {
	t := c.t
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("kommander: http transport: peer URL %q: %w", rawURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("kommander: http transport: peer URL %q: scheme %q is not http or https", rawURL, u.Scheme)
	}
	hostport := u.Host
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		hostport = net.JoinHostPort(u.Hostname(), port)
	}
	d := net.Dialer{Timeout: t.cfg.DialTimeout, KeepAlive: t.cfg.PeerTimeout}
	raw, err := d.DialContext(t.ctx, "tcp", hostport)
	if err != nil {
		return err
	}
	conn := raw
	if u.Scheme == "https" {
		cfg := t.tlsClient
		if cfg == nil {
			cfg = &tls.Config{NextProtos: []string{"http/1.1"}}
		} else {
			cfg = cfg.Clone()
		}
		setDefault(&cfg.ServerName, u.Hostname())
		tconn := tls.Client(raw, cfg)
		hctx, cancel := context.WithTimeout(t.ctx, t.cfg.HandshakeTimeout)
		err := tconn.HandshakeContext(hctx)
		cancel()
		if err != nil {
			raw.Close()
			return fmt.Errorf("tls handshake with %s: %w", hostport, err)
		}
		conn = tconn
	}
	c.addr, c.target, c.conn = rawURL, u, conn
	c.stop = context.AfterFunc(t.ctx, func() { raw.Close() })
	if c.br == nil {
		c.br, c.bw = bufio.NewReaderSize(conn, httpPosterBuffer), bufio.NewWriterSize(conn, httpPosterBuffer)
	} else {
		c.br.Reset(conn)
		c.bw.Reset(conn)
	}
	return nil
}

// close closes the connection, if any.
func (c *httpPoster) close() {
	if c.conn == nil {
		return
	}
	c.stop()
	c.conn.Close()
	c.conn = nil
}

// appendHead appends the head of a POST of body to u: the request line, Host, the length,
// the headers that name this node and, with a shared secret, those that sign the request.
// It refuses a value that cannot be written in a header (a control character in a name).
func (t *HTTPTransport) appendHead(dst []byte, u *url.URL, nonce string, body []byte, signer *httpSigner) ([]byte, error) {
	dst = append(dst, "POST "...)
	dst = append(dst, u.RequestURI()...)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, u.Host...)
	dst = append(dst, "\r\nContent-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(body)), 10)
	dst = append(dst, "\r\n"...)
	dst = append(dst, t.idHead...)
	if t.cfg.Secret != nil {
		ts := strconv.FormatInt(time.Now().UnixNano(), 10)
		digest := sha256.Sum256(body)
		sig := signer.sign(http.MethodPost, u.Path, t.cfg.ClusterName, t.cfg.NodeID, t.instance, ts, nonce, digest[:])
		dst = appendHeaderLine(dst, hdrTimestamp, ts)
		dst = appendHeaderLine(dst, hdrNonce, nonce)
		dst = append(dst, hdrDigest+": "...)
		dst = hex.AppendEncode(dst, digest[:])
		dst = append(dst, "\r\n"+hdrSignature+": "...)
		dst = hex.AppendEncode(dst, sig)
		dst = append(dst, "\r\n"...)
	}
	if t.idHeadErr != nil {
		return dst, t.idHeadErr
	}
	return append(dst, "\r\n"...), nil
}

// idHeadLines returns the header lines that name this node, the same on every request.
func idHeadLines(cluster, node, instance string) ([]byte, error) {
	for _, v := range []string{cluster, node} {
		for i := 0; i < len(v); i++ {
			if b := v[i]; (b < ' ' && b != '\t') || b == 0x7f {
				return nil, fmt.Errorf("kommander: http transport: %q cannot be sent in an HTTP header", v)
			}
		}
	}
	var b []byte
	b = appendHeaderLine(b, "Content-Type", httpContentType)
	b = appendHeaderLine(b, hdrVersion, strconv.Itoa(codecVersion))
	b = appendHeaderLine(b, hdrCluster, cluster)
	b = appendHeaderLine(b, hdrNode, node)
	b = appendHeaderLine(b, hdrInstance, instance)
	return b, nil
}

func appendHeaderLine(dst []byte, key, value string) []byte {
	dst = append(dst, key...)
	dst = append(dst, ": "...)
	dst = append(dst, value...)
	return append(dst, "\r\n"...)
}
