package kommander

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
)

// placedCluster is a nodeCluster whose partitions are placed on factor nodes each.
func placedCluster(t *testing.T, nodes, partitions, factor int) *nodeCluster {
	t.Helper()
	c := newNodeCluster(t, nodes, partitions, false)
	c.cfg = func(i int, cfg *Config) { cfg.ReplicationFactor = factor }
	return c
}

// runningPlacedCluster starts a placedCluster, waits for its leaders and returns it with
// its placement.
func runningPlacedCluster(t *testing.T, nodes, partitions, factor int) (*nodeCluster, placement) {
	t.Helper()
	c := placedCluster(t, nodes, partitions, factor)
	c.startAll()
	c.hostLeaders()
	return c, newPlacement(c.ids, partitions, factor)
}

// hostLeaders waits until every partition has a leader that every running node hosting it
// agrees on, and returns the leader's index per partition. Nodes that host no replica are
// not asked: their Leader asks a hosting node.
func (c *nodeCluster) hostLeaders() []int {
	c.t.Helper()
	return c.agreedLeaders(func(n *Node, p int) (string, bool) {
		if h := n.slots[p].Load(); h != nil {
			return h.leader(), true
		}
		return "", false
	})
}

// writeEverywhere writes one key to every partition through every running node, the
// nodes in parallel; a write whose outcome is unknown (a node it was proxied through was
// just killed) is retried up to retries times. It returns how many writes needed a retry.
func (c *nodeCluster) writeEverywhere(round string, retries int) int {
	c.t.Helper()
	var mu sync.Mutex
	var errs []error
	retried := 0
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		if n == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := 0; p < c.partitions; p++ {
				key := fmt.Sprintf("%s-%s", round, c.ids[i])
				var err error
				for try := 0; try <= retries; try++ {
					if try > 0 {
						mu.Lock()
						retried++
						mu.Unlock()
					}
					var r Result
					r, err = n.Replicate(ctxT(c.t), p, "put", put(key, "v"))
					if err == nil && r.Index == 0 {
						err = fmt.Errorf("no index in %+v", r)
					}
					if !errors.Is(err, ErrTimeout) {
						break
					}
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("%s partition %d: %w", c.ids[i], p, err))
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		c.t.Error(err)
	}
	if len(errs) > 0 {
		c.t.FailNow()
	}
	return retried
}

// checkHostsHave checks that every running node that hosts partition p applied key.
func (c *nodeCluster) checkHostsHave(key string) {
	c.t.Helper()
	for p := 0; p < c.partitions; p++ {
		c.waitFor(fmt.Sprintf("partition %d: %s applied on its hosts", p, key), 500, func() bool {
			for i, n := range c.nodes {
				if n == nil || n.slots[p].Load() == nil {
					continue
				}
				if _, ok := c.sms[i].get(p, key); !ok {
					return false
				}
			}
			return true
		})
	}
}

func TestNineNodesServeSixtyFourPartitionsOfThreeReplicasThroughAFailure(t *testing.T) {
	const nodes, partitions, factor = 9, 64, 3
	c := placedCluster(t, nodes, partitions, factor)
	c.startAll()
	pl := newPlacement(c.ids, partitions, factor)
	for i, n := range c.nodes {
		st := n.Status()
		if got := len(st.Partitions); got < partitions*factor/nodes || got > (partitions*factor+nodes-1)/nodes {
			t.Fatalf("%s hosts %d partitions; its fair share is %d", c.ids[i], got, partitions*factor/nodes)
		}
		for _, ps := range st.Partitions {
			if !pl.hosts(ps.Partition, c.ids[i]) {
				t.Fatalf("%s hosts partition %d, which the placement gives %v", c.ids[i], ps.Partition, pl.voters(ps.Partition))
			}
		}
	}
	// The first voters campaign first: the first leaders are spread as the placement
	// spreads first voters (7 or 8 partitions per node).
	leaders := c.hostLeaders()
	led := map[int]int{}
	for p, l := range leaders {
		led[l]++
		if c.ids[l] != pl.first(p) {
			t.Errorf("partition %d: %s leads, the first voter is %s", p, c.ids[l], pl.first(p))
		}
	}
	for i := range c.ids {
		if led[i] < partitions/nodes || led[i] > (partitions+nodes-1)/nodes {
			t.Errorf("%s leads %d partitions: %v", c.ids[i], led[i], led)
		}
	}

	stopPump := c.pump()
	// Every node writes to every partition: the six nodes of nine that host no replica of
	// a partition ask one that does.
	c.writeEverywhere("before", 0)
	stopPump()
	c.checkHostsHave("before-n9")

	// A node dies: every partition keeps serving from the eight others, including the
	// partitions it led and through nodes that host no replica of them.
	const dead = 0
	c.stop(dead)
	stopPump = c.pump()
	retried := c.writeEverywhere("down", 3)
	t.Logf("writes retried after an unknown outcome while %s was down: %d", c.ids[dead], retried)
	stopPump()
	c.checkHostsHave("down-n2")

	// It restarts: it hosts its partitions again and catches up.
	c.sms[dead] = c.sms[dead].restarted()
	c.start(dead)
	if got, want := len(c.nodes[dead].Status().Partitions), 21; got < want {
		t.Fatalf("restarted %s hosts %d partitions, want at least %d", c.ids[dead], got, want)
	}
	stopPump = c.pump()
	c.writeEverywhere("after", 3)
	stopPump()
	c.checkHostsHave("after-n1")
	c.checkHostsHave("down-n5")
	c.checkSameLogs()
}

func TestProxiedCallsReturnValuesAndErrorsOfTheHostingNode(t *testing.T) {
	c := placedCluster(t, 4, 4, 1)
	c.startAll()
	leaders := c.hostLeaders()
	defer c.pump()()
	// Partition 0 lives on one node only; ask another.
	other := (leaders[0] + 1) % 4
	n := c.nodes[other]
	if _, err := n.partition(0); !errors.Is(err, ErrNotHosted) {
		t.Fatalf("node %s hosts partition 0 (%v); the test needs one that does not", c.ids[other], err)
	}
	if _, err := n.Replicate(ctxT(t), 0, "put", put("k", "v1")); err != nil {
		t.Fatal(err)
	}
	rs, err := n.ReplicateBatch(ctxT(t), 0, []Command{{Type: "put", Data: put("k", "v2")}, {Type: "get", Data: []byte("k")}})
	if err != nil {
		t.Fatal(err)
	}
	if rs[1].Value != "v2" || rs[1].Index != rs[0].Index+1 || rs[0].Term == 0 {
		t.Fatalf("proxied batch results %+v: want the get's value v2 at the index after the put", rs)
	}
	if err := n.ReadBarrier(ctxT(t), 0); err != nil {
		t.Fatalf("proxied ReadBarrier: %v", err)
	}
	// Leader does not wait: it answers what the node last learned and asks in the
	// background.
	c.await("proxied Leader knows the leader", func() bool {
		l, ok := n.Leader(0)
		return ok && l == c.ids[leaders[0]]
	})
	if l, err := n.WaitForLeader(ctxT(t), 0); err != nil || l != c.ids[leaders[0]] {
		t.Fatalf("proxied WaitForLeader = %q, %v", l, err)
	}
	if n.IsLeader(0) {
		t.Fatal("IsLeader on a node that hosts no replica")
	}
	// The hosting node's limits and errors come back as they are.
	big := make([]byte, n.cfg.MaxEntrySize+1)
	if _, err := n.Replicate(ctxT(t), 0, "put", big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("too large proxied write: %v", err)
	}
	if err := n.ReadBarrierLease(ctxT(t), 0); err == nil {
		t.Fatal("ReadBarrierLease with lease reads off succeeded")
	}
	if _, err := n.Snapshot(ctxT(t), 0); !errors.Is(err, ErrNotHosted) {
		t.Fatalf("Snapshot of a partition not hosted: %v", err)
	}
	// A ctx that ends while a proxied write waits: the outcome is unknown.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := n.Replicate(ctx, 0, "put", put("k", "v3")); err == nil {
		t.Fatal("a write with a cancelled ctx succeeded")
	}
}

// TestRestartWithAnotherReplicationFactorIsRefused: the factor decides which node hosts
// which partition, so a data directory keeps it and refuses another (S34).
func TestRestartWithAnotherReplicationFactorIsRefused(t *testing.T) {
	dir := t.TempDir()
	peers := []Peer{{ID: "a", Addr: "a"}, {ID: "b", Addr: "b"}, {ID: "c", Addr: "c"}}
	cfg := Config{NodeID: "a", Peers: peers, Partitions: 4, ReplicationFactor: 2, StateMachine: newKVSM(4, false),
		DataDir: dir, UnsafeNoSync: true, CustomTransport: NewMemoryNetwork(1).Transport("a"), Logger: discardLogger()}
	n, err := NewNode(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for _, factor := range []int{0, 3} {
		cfg.ReplicationFactor = factor
		if n, err := NewNode(cfg); !errors.Is(err, ErrIdentityMismatch) {
			if n != nil {
				_ = n.Stop(ctxT(t))
			}
			t.Fatalf("restart with factor %d: %v, want ErrIdentityMismatch", factor, err)
		}
	}
	cfg.ReplicationFactor = 2
	n, err = NewNode(cfg)
	if err != nil {
		t.Fatalf("restart with the same factor: %v", err)
	}
	_ = n.Stop(ctxT(t))
}

// TestProxiedWriteDeliveredTwiceIsAppliedOnce: the network delivers every request of a
// node that hosts no replica twice, late and out of order; the hosting node takes each
// request once, so each write is in the log once (S35's rule for proxied calls).
func TestProxiedWriteDeliveredTwiceIsAppliedOnce(t *testing.T) {
	c, pl := runningPlacedCluster(t, 3, 3, 1)
	host := c.index(pl.first(0))
	asker := (host + 1) % 3
	c.net.SetLink(c.ids[asker], c.ids[host], LinkFaults{Duplicate: 1, Delay: c.tick, Jitter: 5 * c.tick})
	defer c.pump()()
	const writes = 30
	var wg sync.WaitGroup
	for w := 0; w < writes; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.nodes[asker].Replicate(ctxT(t), 0, "put", put(fmt.Sprintf("k%d", w), "v")); err != nil {
				t.Errorf("write %d: %v", w, err)
			}
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	for _, e := range c.sms[host].entries(0) {
		if e.Type == "put" {
			seen[string(e.Data)]++
		}
	}
	for w := 0; w < writes; w++ {
		if times := seen[string(put(fmt.Sprintf("k%d", w), "v"))]; times != 1 {
			t.Errorf("write %d is in the log %d times", w, times)
		}
	}
}

// TestDisabledForwardingOnANodeThatHostsNoReplicaNamesTheLeader: a node that forwards
// nothing does not proxy writes either; it says which node leads.
func TestDisabledForwardingOnANodeThatHostsNoReplicaNamesTheLeader(t *testing.T) {
	c := placedCluster(t, 3, 1, 1)
	c.cfg = func(i int, cfg *Config) { cfg.ReplicationFactor, cfg.DisableForwarding = 1, true }
	c.startAll()
	lead := c.hostLeaders()[0]
	defer c.pump()()
	_, err := c.nodes[(lead+1)%3].Replicate(ctxT(t), 0, "put", put("k", "v"))
	var nl *NotLeaderError
	if !errors.As(err, &nl) || nl.Leader != c.ids[lead] || nl.LeaderAddr != c.ids[lead] {
		t.Fatalf("Replicate on a node that hosts no replica, forwarding off: %v; want a NotLeaderError naming %s", err, c.ids[lead])
	}
}

// TestProxyServerTakesEachRequestOnce: a request is taken once; one that arrives late but
// above its sender's oldest call in flight is still taken; one below it is a copy or was
// given up on, and is dropped; incarnations are told apart.
func TestProxyServerTakesEachRequestOnce(t *testing.T) {
	s := proxyServer{seen: make(map[forwardKey]*proxySeen)}
	inc := uint64(5) << idSeqBits
	other := uint64(6) << idSeqBits
	for i, step := range []struct {
		from    string
		id, low uint64
		want    bool
	}{
		{"a", inc + 5, inc + 5, true},
		{"a", inc + 5, inc + 5, false}, // a copy
		{"a", inc + 7, inc + 5, true},
		{"a", inc + 6, inc + 5, true}, // sent before 7, arrived after it
		{"a", inc + 9, inc + 8, true}, // 5..7 are done
		{"a", inc + 6, inc + 5, false},
		{"a", inc + 8, inc + 5, true},  // still in flight at its sender
		{"a", inc + 4, inc + 4, false}, // given up on by its sender: never run late
		{"b", inc + 6, inc + 6, true},  // another node
		{"a", other + 1, other + 1, true},
		{"a", inc + 10, inc + 8, true},
	} {
		if got := s.first(step.from, step.id, step.low, uint64(i)); got != step.want {
			t.Fatalf("step %d: first(%s, %#x, low %#x) = %v, want %v", i, step.from, step.id, step.low, got, step.want)
		}
	}
	s.forget(100, 50)
	if len(s.seen) != 0 {
		t.Fatalf("%d incarnations kept after they went quiet", len(s.seen))
	}
}

// BenchmarkProxiedReplicate compares a write on the node that hosts the partition's only
// replica with the same write from a node that hosts none (one more round trip, over the
// in-memory network; the clock is fake, so no tick is paid).
//
//	go test -run '^$' -bench BenchmarkProxiedReplicate -benchmem .
func BenchmarkProxiedReplicate(b *testing.B) {
	for _, proxied := range []bool{false, true} {
		b.Run(fmt.Sprintf("proxied=%v", proxied), func(b *testing.B) {
			c := newNodeCluster(b, 3, 1, false)
			c.cfg = func(i int, cfg *Config) { cfg.ReplicationFactor = 1 }
			c.startAll()
			lead := c.agreedLeaders(func(n *Node, p int) (string, bool) {
				if h := n.slots[p].Load(); h != nil {
					return h.leader(), true
				}
				return "", false
			})[0]
			n := c.nodes[lead]
			if proxied {
				n = c.nodes[(lead+1)%3]
			}
			payload := put("k", "v")
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := n.Replicate(ctx, 0, "put", payload); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// TestProxiedCallsOverRealTransports: over TCP and HTTP, with a secret, every node writes
// to and reads every partition, each of which lives on one node only.
func TestProxiedCallsOverRealTransports(t *testing.T) {
	for _, kind := range []TransportKind{TCP, HTTP} {
		t.Run(kind.String(), func(t *testing.T) {
			ids, nodes := startRealCluster(t, kind, 3, func(cfg *Config) { cfg.ReplicationFactor = 1 })
			for p := 0; p < 3; p++ {
				for i, n := range nodes {
					if _, err := n.Replicate(ctxT(t), p, "put", put("k", ids[i])); err != nil {
						t.Fatalf("partition %d via %s: %v", p, ids[i], err)
					}
				}
				for _, n := range nodes {
					r, err := n.Replicate(ctxT(t), p, "get", []byte("k"))
					if err != nil || r.Value != ids[2] {
						t.Fatalf("partition %d: read via %s: %v, %v; want %s", p, n.ID(), r.Value, err, ids[2])
					}
					if err := n.ReadBarrier(ctxT(t), p); err != nil {
						t.Fatalf("partition %d: ReadBarrier via %s: %v", p, n.ID(), err)
					}
				}
			}
		})
	}
}

// Leader on a node that hosts no replica of the partition never waits, even when no
// hosting node can answer and the clock stands still: it says it knows no leader, and
// learns the leader in the background once one answers.
func TestLeaderOfAPartitionNotHostedNeverWaits(t *testing.T) {
	c := placedCluster(t, 4, 1, 1)
	c.startAll()
	leaders := c.hostLeaders()
	other := (leaders[0] + 1) % 4
	n := c.nodes[other] // not c.nodes[other] in the goroutine: a failed test's cleanup clears it
	c.net.Isolate(c.ids[other])
	answered := make(chan bool, 1)
	go func() {
		_, ok := n.Leader(0)
		answered <- ok
	}()
	var ok bool
	c.await("Leader on a cut-off node that hosts no replica returned", func() bool {
		select {
		case ok = <-answered:
			return true
		default:
			return false
		}
	})
	if ok {
		t.Fatal("a cut-off node that never asked knows a leader")
	}
	c.net.HealAll()
	defer c.pump()()
	c.await("Leader learned in the background", func() bool {
		l, ok := n.Leader(0)
		return ok && l == c.ids[leaders[0]]
	})
}
