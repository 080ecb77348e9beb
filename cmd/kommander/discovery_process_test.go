//go:build unix

package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestNodeProcessesBootstrapThroughRegistries: three `kommander node` processes given no
// peers, only each other's registries (-discovery registry -seeds, every node serving one
// under /registry), form one cluster of three and serve writes; a restarted node resumes
// with the set it formed.
func TestNodeProcessesBootstrapThroughRegistries(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	c := &procCluster{t: t, bin: kommanderBinary(t), parts: 2, extra: processFlags, http: &http.Client{Timeout: 30 * time.Second}}
	dir := t.TempDir()
	var registries []string
	for i := 0; i < 3; i++ {
		node := newProcNode(t, dir, fmt.Sprintf("n%d", i+1))
		c.nodes = append(c.nodes, node)
		registries = append(registries, "http://"+node.http+registryPath)
	}
	for _, n := range c.nodes {
		n.args = []string{"-discovery", "registry", "-seeds", strings.Join(registries, ","), "-bootstrap-expect", "3"}
	}
	t.Cleanup(c.shutdown)
	for i := range c.nodes {
		c.start(i)
	}
	c.waitLeaders(60 * time.Second)
	c.expect(0, "PUT", "/kv/k", []byte("v"), http.StatusNoContent)
	if r := c.expect(2, "GET", "/kv/k", nil, http.StatusOK); string(r.body) != "v" {
		t.Fatalf("read on n3: %q", r.body)
	}
	c.kill(1)
	c.start(1)
	c.waitLeaders(60 * time.Second)
	if r := c.expect(1, "GET", "/kv/k", nil, http.StatusOK); string(r.body) != "v" {
		t.Fatalf("read on the restarted n2: %q", r.body)
	}
}
