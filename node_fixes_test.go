package kommander

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// Regression tests for the review of the node (findings 1 to 7). None of them sleeps:
// they drive the fake clock or wait on a condition with a deadline.

// TestCallersAreAnsweredWhenSavesFailS26 is S26: once a Save failed, every caller gets an
// answer, including one whose proposal passed the checks before the failure and reaches the
// partition after the node answered everything waiting (it used to be queued behind a
// loop that no longer runs, and waited forever).
func TestCallersAreAnsweredWhenSavesFailS26(t *testing.T) {
	var mu sync.Mutex
	var gate chan struct{}
	entered := make(chan struct{}, 1)
	c := newNodeCluster(t, 3, 1, false)
	c.cfg = func(_ int, cfg *Config) {
		cfg.testHooks = &testHooks{admitted: func() {
			mu.Lock()
			g := gate
			mu.Unlock()
			if g != nil {
				entered <- struct{}{}
				<-g
			}
		}}
	}
	c.startAll()
	lead := c.leaders()[0]
	defer c.pump()()
	n := c.nodes[lead]
	if _, err := n.Replicate(ctxT(t), 0, "put", put("k", "v")); err != nil {
		t.Fatal(err)
	}
	g := make(chan struct{})
	mu.Lock()
	gate = g
	mu.Unlock()
	late := c.writeInBackground(lead, 1)
	<-entered // admitted while the node still worked, not yet queued
	mu.Lock()
	gate = nil
	mu.Unlock()
	ms := c.stores[lead].(*MemoryStorage)
	boom := errors.New("fsync failed")
	ms.FailSaves(boom)
	defer ms.FailSaves(nil)
	if _, err := n.Replicate(ctxT(t), 0, "put", put("k", "w")); err == nil {
		t.Fatal("a write whose fsync failed was acknowledged")
	}
	if n.failed.Load() == nil {
		t.Fatal("the node did not fail after its Save failed")
	}
	close(g)
	timer := time.NewTimer(2 * time.Second)
	defer timer.Stop()
	select {
	case err := <-late:
		if !errors.Is(err, ErrStopped) {
			t.Fatalf("a write queued after the node failed: %v, want ErrStopped", err)
		}
	case <-timer.C:
		t.Fatalf("a write queued after the node failed is still waiting 2s later (pending %d)", n.Metrics().PendingProposals)
	}
}
