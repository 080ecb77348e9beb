package kommander

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"
)

// kvSM is the state machine of the node tests: a key-value map per partition whose
// commands are "put" (key \x00 value) and "get" (key; the value is returned through
// results, so reads go through the log). It records every entry it applies, checks that
// indexes only grow (exactly once, in order) and keeps its state across a node restart
// when durable is set (Applied then returns its index, as a durable application would).
type kvSM struct {
	mu      sync.Mutex
	durable bool
	kv      []map[string]string
	applied []uint64
	log     [][]Entry // applied entries per partition, in apply order
	errs    []string
	changed chan struct{}
	delay   chan struct{} // if non-nil, Apply waits for a value on it (a slow state machine)
}

func newKVSM(partitions int, durable bool) *kvSM {
	s := &kvSM{durable: durable, changed: make(chan struct{}, 1)}
	s.kv = make([]map[string]string, partitions)
	for i := range s.kv {
		s.kv[i] = make(map[string]string)
	}
	s.applied = make([]uint64, partitions)
	s.log = make([][]Entry, partitions)
	return s
}

// restarted returns the state machine a restarted node gets: the same one if durable, a
// fresh one otherwise; the record of everything applied is carried over for the checks.
func (s *kvSM) restarted() *kvSM {
	if s.durable {
		return s
	}
	f := newKVSM(len(s.kv), false)
	s.mu.Lock()
	defer s.mu.Unlock()
	f.errs = append(f.errs, s.errs...)
	return f
}

func (s *kvSM) Apply(p int, ents []Entry, results []any) error {
	if s.delay != nil {
		<-s.delay
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, e := range ents {
		if e.Index <= s.applied[p] {
			s.errs = append(s.errs, fmt.Sprintf("partition %d: index %d applied after %d (twice or out of order)", p, e.Index, s.applied[p]))
		}
		s.applied[p] = e.Index
		s.log[p] = append(s.log[p], e)
		switch e.Type {
		case "put":
			k, v, _ := bytes.Cut(e.Data, []byte{0})
			s.kv[p][string(k)] = string(v)
		case "get":
			results[i] = s.kv[p][string(e.Data)]
		}
	}
	select {
	case s.changed <- struct{}{}:
	default:
	}
	return nil
}

func (s *kvSM) Applied(p int) uint64 {
	if !s.durable {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied[p]
}

func (s *kvSM) appliedIndex(p int) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied[p]
}

func (s *kvSM) get(p int, k string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.kv[p][k]
	return v, ok
}

func (s *kvSM) entries(p int) []Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Entry(nil), s.log[p]...)
}

func (s *kvSM) problems() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.errs...)
}

func put(k, v string) []byte { return []byte(k + "\x00" + v) }

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testCluster is a whole cluster in one process, running its real goroutines, over a
// MemoryNetwork and MemoryStorage, driven by a FakeClock: nothing sleeps.
type testCluster struct {
	t          *testing.T
	clock      *FakeClock
	net        *MemoryNetwork
	ids        []string
	partitions int
	nodes      []*Node
	stores     []Storage
	sms        []*kvSM
	cfg        func(i int, c *Config) // optional per-test config changes
	tick       time.Duration
}

func newTestCluster(t *testing.T, nodes, partitions int, durableSM bool) *testCluster {
	t.Helper()
	c := &testCluster{t: t, clock: NewFakeClock(time.Time{}), net: NewMemoryNetwork(1), partitions: partitions, tick: 10 * time.Millisecond}
	c.net.SetClock(c.clock)
	for i := 0; i < nodes; i++ {
		c.ids = append(c.ids, fmt.Sprintf("n%d", i+1))
		c.stores = append(c.stores, NewMemoryStorage())
		c.sms = append(c.sms, newKVSM(partitions, durableSM))
	}
	c.nodes = make([]*Node, nodes)
	t.Cleanup(c.stopAll)
	return c
}

func (c *testCluster) config(i int) Config {
	var peers []Peer
	for _, id := range c.ids {
		peers = append(peers, Peer{ID: id, Addr: id})
	}
	cfg := Config{
		NodeID:            c.ids[i],
		Partitions:        c.partitions,
		Peers:             peers,
		StateMachine:      c.sms[i],
		CustomTransport:   c.net.Transport(c.ids[i]),
		Storage:           c.stores[i],
		ElectionTimeout:   10 * c.tick,
		HeartbeatInterval: c.tick,
		Clock:             c.clock,
		Logger:            quietLogger(),
		RandSeed:          int64(i + 1),
	}
	if c.cfg != nil {
		c.cfg(i, &cfg)
	}
	return cfg
}

func (c *testCluster) start(i int) {
	c.t.Helper()
	n, err := NewNode(c.config(i))
	if err != nil {
		c.t.Fatalf("NewNode %s: %v", c.ids[i], err)
	}
	if err := n.Start(context.Background()); err != nil {
		c.t.Fatalf("Start %s: %v", c.ids[i], err)
	}
	c.nodes[i] = n
}

func (c *testCluster) startAll() {
	for i := range c.ids {
		c.start(i)
	}
}

func (c *testCluster) stop(i int) {
	c.t.Helper()
	if c.nodes[i] == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.nodes[i].Stop(ctx); err != nil {
		c.t.Errorf("Stop %s: %v", c.ids[i], err)
	}
	c.nodes[i] = nil
	if ms, ok := c.stores[i].(*MemoryStorage); ok {
		ms.Reopen()
	}
}

func (c *testCluster) stopAll() {
	for i := range c.nodes {
		c.stop(i)
	}
}

// waitFor advances the fake clock one tick at a time until cond holds; it fails the test
// after maxTicks ticks or 20 s of real time, whichever comes first.
func (c *testCluster) waitFor(what string, maxTicks int, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; ; i++ {
		if cond() {
			return
		}
		if i >= maxTicks || time.Now().After(deadline) {
			for _, n := range c.nodes {
				if n != nil {
					c.t.Logf("%s status: %+v", n.ID(), n.Status())
				}
			}
			c.t.Fatalf("%s: not reached after %d ticks (%v of fake time)", what, i, time.Duration(i)*c.tick)
		}
		c.clock.Advance(c.tick)
	}
}

// leaders waits until every partition has a leader that all running nodes agree on and
// returns the leader index per partition.
func (c *testCluster) leaders() []int {
	c.t.Helper()
	out := make([]int, c.partitions)
	c.waitFor("a leader in every partition", 2000, func() bool {
		for p := 0; p < c.partitions; p++ {
			lead := ""
			for _, n := range c.nodes {
				if n == nil {
					continue
				}
				l, ok := n.Leader(p)
				if !ok || (lead != "" && l != lead) {
					return false
				}
				lead = l
			}
			i := c.index(lead)
			if i < 0 || c.nodes[i] == nil || !c.nodes[i].IsLeader(p) {
				return false
			}
			out[p] = i
		}
		return true
	})
	return out
}

func (c *testCluster) index(id string) int {
	for i, x := range c.ids {
		if x == id {
			return i
		}
	}
	return -1
}

// waitApplied waits until every running node applied index idx of partition p.
func (c *testCluster) waitApplied(p int, idx uint64) {
	c.t.Helper()
	c.waitFor(fmt.Sprintf("partition %d applied through %d everywhere", p, idx), 5000, func() bool {
		for i, n := range c.nodes {
			if n != nil && c.sms[i].appliedIndex(p) < idx {
				return false
			}
		}
		return true
	})
}

// checkSameLogs checks that every node applied the same entries in the same order in
// every partition (S17), each once, and reports the state machines' own complaints.
func (c *testCluster) checkSameLogs() {
	c.t.Helper()
	for i, sm := range c.sms {
		for _, e := range sm.problems() {
			c.t.Errorf("%s: %s", c.ids[i], e)
		}
	}
	for p := 0; p < c.partitions; p++ {
		byIndex := map[uint64]Entry{}
		for i, sm := range c.sms {
			for _, e := range sm.entries(p) {
				if o, ok := byIndex[e.Index]; ok && (o.ID != e.ID || o.Term != e.Term || !bytes.Equal(o.Data, e.Data)) {
					c.t.Errorf("partition %d index %d: %s applied %q (term %d), another node %q (term %d)", p, e.Index, c.ids[i], e.Data, e.Term, o.Data, o.Term)
				}
				byIndex[e.Index] = e
			}
		}
	}
}

// pump advances the fake clock, one tick at a time, until the returned stop is called:
// for tests that wait on calls which need time to pass (heartbeats carry commit indexes
// to followers, elections need timeouts). Each Advance returns only once every running
// loop took its tick, so fake time never runs ahead of the loops.
func (c *testCluster) pump() (stop func()) {
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		for {
			select {
			case <-done:
				return
			default:
			}
			c.clock.Advance(c.tick)
			runtime.Gosched()
		}
	}()
	return func() { close(done); <-exited }
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestClusterElectsLeaderInEveryPartitionAndSpreadsThem(t *testing.T) {
	for _, tc := range []struct{ nodes, partitions int }{{3, 1}, {3, 32}, {5, 1}, {5, 32}} {
		t.Run(fmt.Sprintf("%dnodes_%dpartitions", tc.nodes, tc.partitions), func(t *testing.T) {
			c := newTestCluster(t, tc.nodes, tc.partitions, false)
			c.startAll()
			leaders := c.leaders()
			spread := map[int]int{}
			for _, l := range leaders {
				spread[l]++
			}
			if tc.partitions >= 32 && len(spread) < 2 {
				t.Fatalf("all %d partitions are led by one node: %v", tc.partitions, spread)
			}
			t.Logf("leaders per node: %v", spread)
			// Every partition takes a write, through a follower where there is one.
			defer c.pump()()
			for p := 0; p < tc.partitions; p++ {
				if _, err := c.nodes[p%tc.nodes].Replicate(ctxT(t), p, "put", put("k", "v")); err != nil {
					t.Fatalf("partition %d: %v", p, err)
				}
			}
		})
	}
}
