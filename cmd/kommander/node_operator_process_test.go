//go:build unix

package main

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"
)

// Operator mistakes, with real processes: a second process on a live data directory, and
// a restart with flags that contradict what the data directory was created with.

// startMistaken starts a `kommander node` like node i but with its own ports, the given
// data directory and extra flags, waits for it to exit, and returns its exit code and log.
// A process that keeps running past the timeout fails the test: it should have refused.
func startMistaken(c *procCluster, i int, data string, peers string, args ...string) (int, string) {
	c.t.Helper()
	j := c.addNode(c.nodes[i].id, data, peers, args...)
	defer c.dropNode(j)
	c.start(j)
	code := c.waitExit(j, 30*time.Second)
	b, _ := os.ReadFile(c.nodes[j].logPath)
	return code, string(b)
}

// testSecondProcessOnDataDir is S33: a second process pointed at a running node's data
// directory exits at once with an error naming the directory and the holder, and the
// running node, its log and the cluster go on as before.
func testSecondProcessOnDataDir(c *procCluster) {
	const i = 2
	c.expect(0, "PUT", "/kv/before-second", []byte("v"), http.StatusNoContent)
	code, out := startMistaken(c, i, c.nodes[i].data, "")
	if code == 0 || !strings.Contains(out, "in use by another process") || !strings.Contains(out, c.nodes[i].data) || !strings.Contains(out, "pid ") {
		c.t.Fatalf("second process on %s: exit %d, output:\n%s", c.nodes[i].data, code, out)
	}
	if !c.running(i) {
		c.t.Fatalf("%s stopped when a second process tried its data directory", c.nodes[i].id)
	}
	c.expect(i, "PUT", "/kv/after-second", []byte("w"), http.StatusNoContent)
	// The running node's WAL is whole: it restarts and still has both writes.
	c.signal(i, syscall.SIGTERM)
	if code := c.waitExit(i, 30*time.Second); code != 0 {
		c.t.Fatalf("%s exited with %d after SIGTERM", c.nodes[i].id, code)
	}
	c.start(i)
	c.waitLeaders(60 * time.Second)
	for _, k := range []string{"before-second", "after-second"} {
		c.eventually(30*time.Second, "the restarted node has "+k, func() bool {
			r, err := c.do(i, "GET", "/kv/"+k+"?stale", nil)
			return err == nil && r.code == http.StatusOK
		})
	}
}

// testRestartWithOtherFlags is S34: a node restarted on its data with another partition
// count, member list or cluster name refuses to start, saying what the directory holds and
// what the flags asked for; started as before, it rejoins.
func testRestartWithOtherFlags(c *procCluster) {
	const i = 2
	n := c.nodes[i]
	c.signal(i, syscall.SIGTERM)
	if code := c.waitExit(i, 30*time.Second); code != 0 {
		c.t.Fatalf("%s exited with %d after SIGTERM", n.id, code)
	}
	self := ""
	for _, p := range strings.Split(c.peers, ",") {
		if strings.HasPrefix(p, n.id+"=") {
			self = p
		}
	}
	for name, m := range map[string]struct {
		peers string
		args  []string
		says  string
	}{
		"partitions": {"", []string{"-partitions", fmt.Sprint(c.parts * 2)}, fmt.Sprintf("%d partitions", c.parts*2)},
		"alone":      {self, nil, fmt.Sprintf("members [%s]", n.id)},
		"cluster":    {"", []string{"-cluster", "other"}, `cluster "other"`},
	} {
		code, out := startMistaken(c, i, n.data, m.peers, m.args...)
		if code == 0 || !strings.Contains(out, "belongs to another cluster configuration") || !strings.Contains(out, m.says) ||
			!strings.Contains(out, fmt.Sprintf("%d partitions", c.parts)) {
			c.t.Fatalf("%s: restart with other flags: exit %d, output:\n%s", name, code, out)
		}
	}
	c.expect(0, "PUT", "/kv/after-mistakes", []byte("ok"), http.StatusNoContent)
	c.start(i)
	c.waitLeaders(60 * time.Second)
	c.eventually(30*time.Second, "the node restarted as before has the write", func() bool {
		r, err := c.do(i, "GET", "/kv/after-mistakes?stale", nil)
		return err == nil && r.code == http.StatusOK && string(r.body) == "ok"
	})
}
