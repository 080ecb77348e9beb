//go:build unix

package main

import (
	"flag"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

var snapKillSeed = flag.Uint64("snapkill.seed", 0, "seed of TestNodeProcessSnapshotsSurviveKills (0: random)")

// snapshot returns a copy of the acknowledged writes.
func (a *ackLog) snapshot() map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	keys := make(map[string]string, len(a.keys))
	for k, v := range a.keys {
		keys[k] = v
	}
	return keys
}

// waitHolds waits until node i's own state (read without a barrier) holds every write of
// keys.
func (c *procCluster) waitHolds(i int, keys map[string]string) {
	c.t.Helper()
	c.eventually(60*time.Second, c.nodes[i].id+" holds every acknowledged write", func() bool {
		for k, v := range keys {
			r, err := c.do(i, "GET", "/kv/"+k+"?stale", nil)
			if err != nil || r.code != http.StatusOK || string(r.body) != v {
				return false
			}
		}
		return true
	})
}

// TestNodeProcessSnapshotsSurviveKills is S20 and S22 with real processes: nodes that
// snapshot every 40 entries, so that they are writing a snapshot at almost any moment,
// are killed with SIGKILL while writers keep writing; a killed node restarts behind the
// others' compacted logs, so it catches up by snapshot, and is killed once more while it
// does. Afterwards every node's own state (read without a barrier) holds every write
// that was acknowledged.
func TestNodeProcessSnapshotsSurviveKills(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	seed := *snapKillSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d; replay: go test -run TestNodeProcessSnapshotsSurviveKills -snapkill.seed=%d ./cmd/kommander", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 20))
	c := startProcCluster(t, 3, 2, append(append([]string{}, processFlags...), "-snapshot-entries", "40")...)
	c.waitLeaders(30 * time.Second)
	w := c.startWriters("snap", 6)
	defer w.end()
	acked, grow := w.acked, w.grow
	kill := func(i int) {
		t.Helper()
		c.signal(i, syscall.SIGKILL)
		if code := c.waitExit(i, 10*time.Second); code != -1 {
			t.Fatalf("%s exited with %d after SIGKILL", c.nodes[i].id, code)
		}
	}
	for round := 0; round < 3; round++ {
		grow(50+rng.IntN(100), "writes are acknowledged before the kill")
		victim := rng.IntN(len(c.nodes))
		kill(victim)
		// The others snapshot every 40 entries and keep a window of 8: the victim's next
		// entries are compacted away.
		grow(300, "writes are acknowledged while the victim is down")
		c.start(victim)
		grow(rng.IntN(30), "writes go on while the victim catches up")
		kill(victim)
		c.start(victim)
		c.waitLeaders(60 * time.Second)
		t.Logf("round %d: killed %s twice, %d writes acknowledged", round, c.nodes[victim].id, acked.len())
	}
	grow(50, "writes are acknowledged after the last restart")
	w.end()
	keys := acked.snapshot()
	for i := range c.nodes {
		c.waitHolds(i, keys)
	}
	t.Logf("every node holds all %d acknowledged writes", len(keys))
	installed, restored := false, false
	for _, n := range c.nodes {
		b, _ := os.ReadFile(n.logPath)
		installed = installed || strings.Contains(string(b), "installed a snapshot from the leader")
		restored = restored || strings.Contains(string(b), "restored snapshot")
	}
	if !installed || !restored {
		t.Fatalf("no node installed a snapshot from a leader (%v) or restarted from one (%v): the kills did not reach what this test is about", installed, restored)
	}
}
