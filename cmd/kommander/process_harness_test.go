//go:build unix

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kommander-go/kommander"
)

// The harness of the real-process tests, the outermost test layer: `kommander node` processes
// on loopback, built once per test binary, driven over their HTTP API and with signals.

var (
	buildOnce sync.Once
	buildDir  string
	buildPath string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// kommanderBinary builds cmd/kommander once (with -race when the tests run with it) and
// returns the path of the binary.
func kommanderBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "kommander-bin-")
		if buildErr != nil {
			return
		}
		buildPath = filepath.Join(buildDir, "kommander")
		args := []string{"build", "-o", buildPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// procNode is one `kommander node` process (or the slot for one, while it is down).
type procNode struct {
	id, raft, http, data string
	logPath              string
	peers                string   // this node's -peers, when it differs from the cluster's
	args                 []string // flags after the cluster's, which they override
	// fileLimitBlocks, when set, starts the process under `ulimit -f` (512-byte blocks):
	// a write past it fails with EFBIG, a disk that fails under the node.
	fileLimitBlocks int

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when the process exited
	exit int           // exit code, -1 when killed by a signal
}

// procCluster is a cluster of node processes.
type procCluster struct {
	t     *testing.T
	bin   string
	parts int
	peers string
	extra []string
	nodes []*procNode
	http  *http.Client
	proxy [][]*linkProxy // proxy[i][j]: the link from node i to node j, when proxied
}

// isolate cuts (or, with cut false, heals) every link to and from node i.
func (c *procCluster) isolate(i int, cut bool) {
	for j := range c.nodes {
		if j != i {
			c.proxy[i][j].setCut(cut)
			c.proxy[j][i].setCut(cut)
		}
	}
}

// linkProxy forwards TCP connections to a target until it is cut; while cut, it closes
// the connections it carries and refuses new ones, as a network partition would.
type linkProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
}

func newLinkProxy(t *testing.T, target string) *linkProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &linkProxy{ln: ln, target: target, conns: make(map[net.Conn]struct{})}
	t.Cleanup(p.close)
	go p.serve()
	return p
}

func (p *linkProxy) addr() string { return p.ln.Addr().String() }

func (p *linkProxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		if !p.track(in, out) {
			in.Close()
			out.Close()
			continue
		}
		for _, pair := range [][2]net.Conn{{in, out}, {out, in}} {
			go func(dst, src net.Conn) {
				_, _ = io.Copy(dst, src)
				dst.Close()
				src.Close()
			}(pair[0], pair[1])
		}
	}
}

// track records the connections of a forwarded link, or reports false while cut.
func (p *linkProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *linkProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

func (p *linkProxy) close() {
	p.ln.Close()
	p.setCut(true)
}

// startProcCluster starts n node processes with parts partitions and extra flags, and
// waits until every partition has a leader all of them agree on.
func startProcCluster(t *testing.T, n, parts int, extra ...string) *procCluster {
	t.Helper()
	return startProcClusterWith(t, n, parts, false, extra...)
}

// startProcClusterWith is startProcCluster; with proxied, every node reaches every peer
// through a proxy of the test's own (proxy[i][j] carries what node i sends to node j), so
// that the test can cut links.
func startProcClusterWith(t *testing.T, n, parts int, proxied bool, extra ...string) *procCluster {
	t.Helper()
	c := &procCluster{
		t: t, bin: kommanderBinary(t), parts: parts, extra: extra,
		http: &http.Client{Timeout: 30 * time.Second},
	}
	dir := t.TempDir()
	var peers []string
	for i := 0; i < n; i++ {
		node := newProcNode(t, dir, fmt.Sprintf("n%d", i+1))
		c.nodes = append(c.nodes, node)
		peers = append(peers, node.id+"="+node.raft)
	}
	c.peers = strings.Join(peers, ",")
	t.Cleanup(c.shutdown)
	if proxied {
		c.proxy = make([][]*linkProxy, n)
		for i := range c.nodes {
			c.proxy[i] = make([]*linkProxy, n)
			var mine []string
			for j, peer := range c.nodes {
				addr := peer.raft
				if j != i {
					c.proxy[i][j] = newLinkProxy(t, peer.raft)
					addr = c.proxy[i][j].addr()
				}
				mine = append(mine, peer.id+"="+addr)
			}
			c.nodes[i].peers = strings.Join(mine, ",")
		}
	}
	for i := range c.nodes {
		c.start(i)
	}
	c.waitLeaders(60 * time.Second)
	return c
}

// newProcNode returns the slot of node id on free loopback ports, with its data directory
// and log in dir.
func newProcNode(t *testing.T, dir, id string) *procNode {
	t.Helper()
	raft, err := freeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	httpAddr, err := freeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	return &procNode{id: id, raft: raft, http: httpAddr, data: filepath.Join(dir, id), logPath: filepath.Join(dir, id+".log")}
}

// start starts node i's process (again).
func (c *procCluster) start(i int) {
	c.t.Helper()
	n := c.nodes[i]
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	peers := c.peers
	if n.peers != "" {
		peers = n.peers
	}
	args := []string{"node", "-id", n.id, "-raft", n.raft, "-http", n.http, "-data", n.data, "-partitions", fmt.Sprint(c.parts)}
	if peers != "" { // none: the nodes find each other through discovery
		args = append(args, "-peers", peers)
	}
	args = append(args, c.extra...)
	args = append(args, n.args...)
	cmd := exec.Command(c.bin, args...)
	if n.fileLimitBlocks > 0 {
		// Go ignores SIGXFSZ, so the node sees the failed write as an error.
		cmd = exec.Command("/bin/sh", append([]string{"-c", fmt.Sprintf(`ulimit -f %d && exec "$0" "$@"`, n.fileLimitBlocks), c.bin}, args...)...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		c.t.Fatal(err)
	}
	done := make(chan struct{})
	n.mu.Lock()
	n.cmd, n.done, n.exit = cmd, done, 0
	n.mu.Unlock()
	go func() {
		err := cmd.Wait()
		logf.Close()
		code := 0
		if err != nil {
			code = -1
			if ee, ok := err.(*exec.ExitError); ok && ee.Exited() {
				code = ee.ExitCode()
			}
		}
		n.mu.Lock()
		n.exit = code
		n.mu.Unlock()
		close(done)
	}()
}

// addNode adds a node process slot with the given ID, data directory and -peers (empty:
// the cluster's), on free loopback ports and with a log of its own, and returns its index.
// The caller starts it, and drops it (dropNode) before the next test step.
func (c *procCluster) addNode(id, data, peers string, args ...string) int {
	c.t.Helper()
	raft, err := freeLoopbackAddr()
	if err != nil {
		c.t.Fatal(err)
	}
	httpAddr, err := freeLoopbackAddr()
	if err != nil {
		c.t.Fatal(err)
	}
	logPath := filepath.Join(c.t.TempDir(), id+".log")
	c.nodes = append(c.nodes, &procNode{id: id, raft: raft, http: httpAddr, data: data, logPath: logPath, peers: peers, args: args})
	return len(c.nodes) - 1
}

// dropNode forgets the node slots from i on (added by addNode), killing a process of theirs
// that still runs: one a test expected to exit and that did not must not outlive the test.
func (c *procCluster) dropNode(i int) {
	for j := i; j < len(c.nodes); j++ {
		c.kill(j)
	}
	c.nodes = c.nodes[:i]
}

// kill kills node j's process, if it runs, and waits for it to end.
func (c *procCluster) kill(j int) {
	if !c.running(j) {
		return
	}
	n := c.nodes[j]
	n.mu.Lock()
	_ = n.cmd.Process.Signal(syscall.SIGCONT) // in case a test left it stopped
	_ = n.cmd.Process.Kill()
	done := n.done
	n.mu.Unlock()
	<-done
}

// signal sends sig to node i's process.
func (c *procCluster) signal(i int, sig syscall.Signal) {
	c.t.Helper()
	n := c.nodes[i]
	n.mu.Lock()
	cmd := n.cmd
	n.mu.Unlock()
	if err := cmd.Process.Signal(sig); err != nil {
		c.t.Fatalf("signal %v to %s: %v", sig, n.id, err)
	}
}

// waitExit waits for node i's process to exit and returns its exit code (-1 for a
// signal).
func (c *procCluster) waitExit(i int, timeout time.Duration) int {
	c.t.Helper()
	n := c.nodes[i]
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	select {
	case <-done:
	case <-time.After(timeout):
		c.t.Fatalf("%s did not exit within %v", n.id, timeout)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.exit
}

// running reports whether node i's process runs.
func (c *procCluster) running(i int) bool {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.done == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// shutdown kills what still runs and, when the test failed, shows the nodes' logs.
func (c *procCluster) shutdown() {
	for i := range c.nodes {
		c.kill(i)
	}
	if c.t.Failed() {
		for _, n := range c.nodes {
			b, _ := os.ReadFile(n.logPath)
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			c.t.Logf("--- last of %s's log:\n%s", n.id, b)
		}
	}
}

// reply is an HTTP answer.
type reply struct {
	code int
	body []byte
}

func (r reply) String() string { return fmt.Sprintf("%d %s", r.code, bytes.TrimSpace(r.body)) }

// do sends one request to node i.
func (c *procCluster) do(i int, method, path string, body []byte) (reply, error) {
	req, err := http.NewRequest(method, "http://"+c.nodes[i].http+path, bytes.NewReader(body))
	if err != nil {
		return reply{}, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, b}, err
}

// must sends one request and retries it, until a deadline, while the answer is 503
// (certainly not applied, so a retry cannot apply it twice) or, for a request that is
// idempotent (a read, a delete, an unconditional put), 504 (outcome unknown).
func (c *procCluster) must(i int, method, path string, body []byte) reply {
	c.t.Helper()
	idempotent := method == "GET" || method == "DELETE" || (method == "PUT" && !strings.Contains(path, "?if"))
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := c.do(i, method, path, body)
		if err != nil {
			c.t.Fatalf("%s %s on %s: %v", method, path, c.nodes[i].id, err)
		}
		retry := r.code == http.StatusServiceUnavailable || (idempotent && r.code == http.StatusGatewayTimeout)
		if !retry || time.Now().After(deadline) {
			return r
		}
		<-time.After(20 * time.Millisecond) // back off before retrying a refused request
	}
}

// expect sends one request (retrying as must does) and fails the test unless the status is code.
func (c *procCluster) expect(i int, method, path string, body []byte, code int) reply {
	c.t.Helper()
	r := c.must(i, method, path, body)
	if r.code != code {
		c.t.Fatalf("%s %s on %s: got %v, want %d", method, path, c.nodes[i].id, r, code)
	}
	return r
}

// nodeStatus is the JSON of GET /status.
type nodeStatus struct {
	Node       string                      `json:"node"`
	Partitions []kommander.PartitionStatus `json:"partitions"`
	Error      string                      `json:"error"`
}

// status returns node i's status, or an error when it does not answer.
func (c *procCluster) status(i int) (nodeStatus, error) {
	r, err := c.do(i, http.MethodGet, "/status", nil)
	if err != nil {
		return nodeStatus{}, err
	}
	if r.code != http.StatusOK {
		return nodeStatus{}, fmt.Errorf("status: %v", r)
	}
	var s nodeStatus
	if err := json.Unmarshal(r.body, &s); err != nil {
		return nodeStatus{}, fmt.Errorf("status: %w: %s", err, r.body)
	}
	return s, nil
}

// leaders returns the leader of every partition when every running node answers and
// names the same running leader for each, or nil.
func (c *procCluster) leaders() []string {
	var leaders []string
	for i, n := range c.nodes {
		if !c.running(i) {
			continue
		}
		s, err := c.status(i)
		if err != nil || len(s.Partitions) != c.parts {
			return nil
		}
		if leaders == nil {
			leaders = make([]string, c.parts)
		}
		for p, ps := range s.Partitions {
			if ps.Leader == "" || (leaders[p] != "" && leaders[p] != ps.Leader) {
				return nil
			}
			leaders[p] = ps.Leader
		}
		_ = n
	}
	for _, l := range leaders {
		if !c.running(c.index(l)) {
			return nil
		}
	}
	return leaders
}

// waitLeaders waits until the running nodes agree on a running leader in every partition.
func (c *procCluster) waitLeaders(timeout time.Duration) []string {
	c.t.Helper()
	var l []string
	c.eventually(timeout, "every partition has a leader the running nodes agree on", func() bool {
		l = c.leaders()
		return l != nil
	})
	return l
}

// index returns the position of the node with ID id, or -1.
func (c *procCluster) index(id string) int {
	for i, n := range c.nodes {
		if n.id == id {
			return i
		}
	}
	return -1
}

// eventually polls cond until it holds or timeout passes.
func (c *procCluster) eventually(timeout time.Duration, what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("not within %v: %s", timeout, what)
		}
		<-time.After(20 * time.Millisecond) // polling interval of a condition with a deadline
	}
}

// keyIn returns a key with the given prefix that maps to partition p.
func (c *procCluster) keyIn(prefix string, p int) string {
	for i := 0; ; i++ {
		k := fmt.Sprintf("%s-%d", prefix, i)
		if kommander.KeyPartition([]byte(k), c.parts) == p {
			return k
		}
	}
}
