package kommander

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"expvar"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
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
	onApply func(p int, e Entry)
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
	s.mu.Lock()
	d := s.delay
	s.mu.Unlock()
	if d != nil {
		<-d
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, e := range ents {
		if e.Index <= s.applied[p] {
			s.errs = append(s.errs, fmt.Sprintf("partition %d: index %d applied after %d (twice or out of order)", p, e.Index, s.applied[p]))
		}
		s.applied[p] = e.Index
		s.log[p] = append(s.log[p], e)
		if s.onApply != nil {
			s.onApply(p, e)
		}
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

// stall makes Apply wait until the returned release is called.
func (s *kvSM) stall() (release func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.delay = ch
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		s.delay = nil
		s.mu.Unlock()
		close(ch)
	}
}

func (s *kvSM) stalled() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.delay != nil
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

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// nodeCluster is a whole cluster in one process, running its real goroutines, over a
// MemoryNetwork and MemoryStorage, driven by a FakeClock: nothing sleeps.
type nodeCluster struct {
	mu         sync.Mutex // guards nodes and sms against the pump goroutine
	t          testing.TB
	clock      *FakeClock
	net        *MemoryNetwork
	ids        []string
	partitions int
	nodes      []*Node
	stores     []Storage
	sms        []*kvSM
	cfg        func(i int, c *Config)          // optional per-test config changes
	opts       func(i int, o *testNodeOptions) // optional per-test changes of how nodes run
	tick       time.Duration
	dataDirs   []string // when set, nodes use the default Storage (the WAL) in these
}

// useWAL makes the cluster's nodes keep their logs in a real WAL, one directory each,
// kept across restarts.
func (c *nodeCluster) useWAL() {
	c.dataDirs = make([]string, len(c.ids))
	for i := range c.ids {
		c.dataDirs[i] = c.t.TempDir()
		c.stores[i] = nil
	}
	// Cleanups run last first: the nodes stop before their directories are removed.
	c.t.Cleanup(c.stopAll)
}

func newNodeCluster(t testing.TB, nodes, partitions int, durableSM bool) *nodeCluster {
	t.Helper()
	c := &nodeCluster{t: t, clock: NewFakeClock(time.Time{}), net: NewMemoryNetwork(1), partitions: partitions, tick: 10 * time.Millisecond}
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

// newRunningCluster starts a cluster of three nodes and one partition whose clock runs
// until the test ends, and returns it with the index of the partition's leader.
func newRunningCluster(t *testing.T) (*nodeCluster, int) {
	t.Helper()
	c := newNodeCluster(t, 3, 1, false)
	c.startAll()
	lead := c.leaders()[0]
	t.Cleanup(c.pump())
	return c, lead
}

func (c *nodeCluster) config(i int) Config {
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
		Logger:            discardLogger(),
		RandSeed:          int64(i + 1),
	}
	if c.dataDirs != nil {
		cfg.Storage, cfg.DataDir = nil, c.dataDirs[i]
	}
	if c.cfg != nil {
		c.cfg(i, &cfg)
	}
	return cfg
}

func (c *nodeCluster) start(i int) {
	c.t.Helper()
	var o testNodeOptions
	if c.opts != nil {
		c.opts(i, &o)
	}
	n, err := newNodeForTest(c.config(i), o)
	if err != nil {
		c.t.Fatalf("NewNode %s: %v", c.ids[i], err)
	}
	if err := n.Start(context.Background()); err != nil {
		c.t.Fatalf("Start %s: %v", c.ids[i], err)
	}
	c.mu.Lock()
	c.nodes[i] = n
	c.mu.Unlock()
}

func (c *nodeCluster) startAll() {
	for i := range c.ids {
		c.start(i)
	}
}

func (c *nodeCluster) stop(i int) {
	c.t.Helper()
	if c.nodes[i] == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.nodes[i].Stop(ctx); err != nil {
		c.t.Errorf("Stop %s: %v", c.ids[i], err)
	}
	c.mu.Lock()
	c.nodes[i] = nil
	c.mu.Unlock()
	if ms, ok := c.stores[i].(*MemoryStorage); ok {
		ms.Reopen()
	}
}

func (c *nodeCluster) stopAll() {
	for i := range c.nodes {
		c.stop(i)
	}
}

// waitFor advances the fake clock one tick at a time until cond holds; it fails the test
// after maxTicks ticks or 20 s of real time, whichever comes first.
func (c *nodeCluster) waitFor(what string, maxTicks int, cond func() bool) {
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
		runtime.Gosched() // let callers' goroutines run between ticks
	}
}

// await waits, without moving the fake clock, until cond holds (for example until
// callers' goroutines have submitted their proposals); it fails after 20 s of real time.
func (c *nodeCluster) await(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: not reached in 20s", what)
		}
		runtime.Gosched()
	}
}

// leaders waits until every partition has a leader that all running nodes agree on and
// returns the leader index per partition.
func (c *nodeCluster) leaders() []int {
	c.t.Helper()
	out := make([]int, c.partitions)
	c.waitFor("a leader in every partition", 2000, func() bool {
		for p := 0; p < c.partitions; p++ {
			lead := ""
			for _, n := range c.nodes {
				if n == nil || n.failed.Load() != nil {
					continue // stopped, or failed and frozen
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

func (c *nodeCluster) index(id string) int {
	for i, x := range c.ids {
		if x == id {
			return i
		}
	}
	return -1
}

// waitApplied waits until every running node applied index idx of partition p.
func (c *nodeCluster) waitApplied(p int, idx uint64) {
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
func (c *nodeCluster) checkSameLogs() {
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
func (c *nodeCluster) pump() (stop func()) {
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
			// Let the apply goroutines catch up with what is committed before time moves
			// on, so that fake time does not run ahead of them (they run in real time).
			for start := time.Now(); c.applyBacklog() > 0 && time.Since(start) < 5*time.Second; {
				runtime.Gosched()
			}
			runtime.Gosched()
		}
	}()
	return func() { close(done); <-exited }
}

// applyBacklog counts the committed entries not yet applied on running nodes, leaving out
// failed nodes and stalled state machines, which will not catch up.
func (c *nodeCluster) applyBacklog() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for i, nd := range c.nodes {
		if nd == nil || nd.failed.Load() != nil || c.sms[i].stalled() {
			continue
		}
		for _, p := range nd.parts {
			p.mu.Lock()
			if p.status.Commit > p.applied {
				n += int(p.status.Commit - p.applied)
			}
			p.mu.Unlock()
		}
	}
	return n
}

// writeInBackground starts k writes to partition 0 through node i, with no deadline, and
// returns the channel their errors arrive on.
func (c *nodeCluster) writeInBackground(i, k int) <-chan error {
	errs := make(chan error, k)
	n := c.nodes[i]
	for j := 0; j < k; j++ {
		go func() {
			_, err := n.Replicate(context.Background(), 0, "put", put("k", fmt.Sprint(j)))
			errs <- err
		}()
	}
	return errs
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestClusterElectsLeaderInEveryPartitionAndSpreadsThem(t *testing.T) {
	for _, tc := range []struct{ nodes, partitions int }{{3, 1}, {3, 32}, {5, 1}, {5, 32}} {
		t.Run(fmt.Sprintf("%dnodes_%dpartitions", tc.nodes, tc.partitions), func(t *testing.T) {
			c := newNodeCluster(t, tc.nodes, tc.partitions, false)
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

func TestReplicateFromAnyNodeAppliesEverywhereInOneOrder(t *testing.T) {
	c := newNodeCluster(t, 3, 4, false)
	c.startAll()
	c.leaders()
	defer c.pump()()
	last := make([]uint64, c.partitions)
	for p := 0; p < c.partitions; p++ {
		for i := range c.nodes {
			r, err := c.nodes[i].Replicate(ctxT(t), p, "put", put(fmt.Sprintf("k%d", i), "v"))
			if err != nil {
				t.Fatalf("partition %d via %s: %v", p, c.ids[i], err)
			}
			if r.Index <= last[p] {
				t.Fatalf("partition %d: index %d after %d", p, r.Index, last[p])
			}
			last[p] = r.Index
			// Replicate returns once the entry is applied on the node that was called.
			if got := c.sms[i].appliedIndex(p); got < r.Index {
				t.Fatalf("%s returned index %d but applied only %d", c.ids[i], r.Index, got)
			}
		}
		// A read through the log sees the writes.
		r, err := c.nodes[1].Replicate(ctxT(t), p, "get", []byte("k2"))
		if err != nil || r.Value != "v" {
			t.Fatalf("read through the log = %v, %v; want v", r.Value, err)
		}
	}
	for p := range last {
		c.waitApplied(p, last[p])
	}
	c.checkSameLogs()
}

func TestDisabledForwardingReturnsNotLeaderWithHint(t *testing.T) {
	c := newNodeCluster(t, 3, 1, false)
	c.cfg = func(_ int, cfg *Config) { cfg.DisableForwarding = true }
	c.startAll()
	lead := c.leaders()[0]
	follower := (lead + 1) % 3
	_, err := c.nodes[follower].Replicate(ctxT(t), 0, "put", put("k", "v"))
	var nle *NotLeaderError
	if !errors.Is(err, ErrNotLeader) || !errors.As(err, &nle) || nle.Leader != c.ids[lead] {
		t.Fatalf("Replicate on a follower = %v, want ErrNotLeader naming %s", err, c.ids[lead])
	}
	if errors.Is(err, ErrTimeout) {
		t.Fatal("a refused proposal claims an unknown outcome")
	}
}

func TestReplicateRejectsTooLargeAndOverload(t *testing.T) {
	c := newNodeCluster(t, 1, 1, false)
	c.cfg = func(_ int, cfg *Config) { cfg.MaxEntrySize = 100; cfg.MaxPendingProposals = 2 }
	c.startAll()
	c.leaders()
	if _, err := c.nodes[0].Replicate(ctxT(t), 0, "put", make([]byte, 101)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized entry: %v, want ErrTooLarge", err)
	}
	if _, err := c.nodes[0].Replicate(ctxT(t), 7, "put", nil); !errors.Is(err, ErrNoPartition) {
		t.Fatalf("bad partition: %v, want ErrNoPartition", err)
	}
	// A state machine that does not return keeps entries pending: the third is refused.
	release := c.sms[0].stall()
	errs := make(chan error, 2)
	n := c.nodes[0]
	for i := 0; i < 2; i++ {
		go func() { _, err := n.Replicate(ctxT(t), 0, "put", put("k", "v")); errs <- err }()
	}
	c.await("two pending proposals", func() bool { return c.nodes[0].Metrics().PendingProposals == 2 })
	if _, err := c.nodes[0].Replicate(ctxT(t), 0, "put", put("k", "v")); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("third proposal: %v, want ErrOverloaded", err)
	}
	release()
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestStoppedLeaderIsReplacedAndItsCallersAnswered covers S18/S19 from the caller's side:
// callers waiting on a leader that goes away get an answer, a new leader takes over, and
// writes continue.
func TestStoppedLeaderIsReplacedAndItsCallersAnswered(t *testing.T) {
	c := newNodeCluster(t, 3, 2, false)
	c.startAll()
	lead := c.leaders()[0]
	// Followers do not answer: the leader's entries cannot commit, its callers wait.
	for i := range c.ids {
		if i != lead {
			c.net.CutOneWay(c.ids[i], c.ids[lead])
		}
	}
	errs := c.writeInBackground(lead, 8)
	c.await("8 pending proposals on the leader", func() bool { return c.nodes[lead].Metrics().PendingProposals == 8 })
	c.stop(lead)
	for k := 0; k < 8; k++ {
		err := <-errs
		// Proposed entries have an unknown outcome (ErrTimeout); ones the loop had not
		// yet proposed are certainly not applied (ErrStopped alone).
		if !errors.Is(err, ErrStopped) {
			t.Fatalf("caller of a stopped leader got %v, want ErrStopped (with ErrTimeout if proposed)", err)
		}
	}
	c.net.HealAll()
	newLead := c.leaders()[0]
	if newLead == lead {
		t.Fatal("stopped node still leads")
	}
	defer c.pump()()
	for i, n := range c.nodes {
		if n == nil {
			continue
		}
		if _, err := n.Replicate(ctxT(t), 0, "put", put("after", c.ids[i])); err != nil {
			t.Fatalf("write through %s after failover: %v", c.ids[i], err)
		}
	}
}

// TestIsolatedLeaderStepsDownAndCallersGetAnswer is S18: a leader cut off from its quorum
// steps down (CheckQuorum), and the callers waiting on it get ErrTimeout, not a hang; once
// healed, the outcome is the same on every node.
func TestIsolatedLeaderStepsDownAndCallersGetAnswer(t *testing.T) {
	c := newNodeCluster(t, 3, 1, false)
	c.startAll()
	lead := c.leaders()[0]
	c.net.Isolate(c.ids[lead])
	errs := c.writeInBackground(lead, 4)
	c.await("4 pending proposals", func() bool { return c.nodes[lead].Metrics().PendingProposals == 4 })
	answered := 0
	c.waitFor("callers of the isolated leader answered", 5000, func() bool {
		for {
			select {
			case err := <-errs:
				if !errors.Is(err, ErrTimeout) {
					t.Errorf("caller got %v, want ErrTimeout (outcome unknown)", err)
				}
				answered++
				continue
			default:
			}
			return answered == 4
		}
	})
	if c.nodes[lead].IsLeader(0) {
		t.Fatal("isolated node still believes it leads")
	}
	c.net.HealAll()
	c.leaders()
	defer c.pump()()
	r, err := c.nodes[lead].Replicate(ctxT(t), 0, "put", put("z", "z"))
	if err != nil {
		t.Fatal(err)
	}
	c.waitApplied(0, r.Index)
	c.checkSameLogs()
}

// TestRestartAllKeepsEveryAcknowledgedEntryAppliedOnce is S1 and S22 at node level: stop
// every node, start them again on the same storage, and every acknowledged write is there,
// applied exactly once per node lifetime; with a durable state machine, restart replays
// only what it lacks.
func TestRestartAllKeepsEveryAcknowledgedEntryAppliedOnce(t *testing.T) {
	for _, tc := range []struct{ durable, wal bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
		durable := tc.durable
		t.Run(fmt.Sprintf("durableSM=%v/wal=%v", tc.durable, tc.wal), func(t *testing.T) {
			c := newNodeCluster(t, 3, 4, durable)
			if tc.wal {
				c.useWAL()
			}
			c.startAll()
			c.leaders()
			stop := c.pump()
			acked := map[string]Result{}
			for k := 0; k < 40; k++ {
				p := k % c.partitions
				key := fmt.Sprintf("k%d", k)
				r, err := c.nodes[k%3].Replicate(ctxT(t), p, "put", put(key, "v"))
				if err != nil {
					for _, n := range c.nodes {
						t.Logf("%s: %+v\n%+v", n.ID(), n.Status(), n.Metrics())
					}
					t.Fatal(err)
				}
				acked[key] = r
			}
			stop()
			c.stopAll()
			c.mu.Lock()
			for i := range c.sms {
				c.sms[i] = c.sms[i].restarted()
			}
			c.mu.Unlock()
			c.startAll()
			c.leaders()
			defer c.pump()()
			for k := 0; k < 40; k++ {
				p := k % c.partitions
				key := fmt.Sprintf("k%d", k)
				for i := range c.nodes {
					r, err := c.nodes[i].Replicate(ctxT(t), p, "get", []byte(key))
					if err != nil {
						t.Fatal(err)
					}
					if r.Value != "v" {
						t.Fatalf("after restart %s reads %s = %v, want v (acknowledged at index %d)", c.ids[i], key, r.Value, acked[key].Index)
					}
				}
			}
			// kvSM flags an index applied twice in one lifetime; a durable one lives on
			// across the restart, so there it also proves that restart replayed only what
			// it lacked.
			c.checkSameLogs()
		})
	}
}

// TestConcurrentReplicateAppliesEachAcknowledgedEntryOnceInOneOrder: 64 goroutines
// replicate across partitions through every node (S12, S16, S17).
func TestConcurrentReplicateAppliesEachAcknowledgedEntryOnceInOneOrder(t *testing.T) {
	const clients, perClient, partitions = 64, 20, 8
	c := newNodeCluster(t, 3, partitions, false)
	c.startAll()
	c.leaders()
	defer c.pump()()
	var mu sync.Mutex
	acked := map[string]Result{}
	var wg sync.WaitGroup
	for cl := 0; cl < clients; cl++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < perClient; k++ {
				key := fmt.Sprintf("c%d-%d", cl, k)
				p := KeyPartition([]byte(key), partitions)
				r, err := c.nodes[(cl+k)%3].Replicate(ctxT(t), p, "put", put(key, "v"))
				if err != nil {
					t.Errorf("%s: %v", key, err)
					return
				}
				mu.Lock()
				acked[key] = r
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	maxIdx := make([]uint64, partitions)
	for key, r := range acked {
		p := KeyPartition([]byte(key), partitions)
		maxIdx[p] = max(maxIdx[p], r.Index)
	}
	for p := range maxIdx {
		c.waitApplied(p, maxIdx[p])
	}
	// Every acknowledged entry was applied exactly once on every node, at its index.
	for i, sm := range c.sms {
		seen := map[string]int{}
		for p := 0; p < partitions; p++ {
			for _, e := range sm.entries(p) {
				k, _, _ := bytes.Cut(e.Data, []byte{0})
				seen[string(k)]++
				if r, ok := acked[string(k)]; ok && r.Index != e.Index {
					t.Fatalf("%s applied %s at %d, acknowledged at %d", c.ids[i], k, e.Index, r.Index)
				}
			}
		}
		for key := range acked {
			if seen[key] != 1 {
				t.Fatalf("%s applied %s %d times", c.ids[i], key, seen[key])
			}
		}
	}
	c.checkSameLogs()
	m := c.nodes[0].Metrics()
	t.Logf("node n1: %d entries saved in %d fsyncs (%.2f per fsync)", m.EntriesSaved, m.Fsyncs, m.EntriesPerFsync)
}

// TestFailedSaveStopsWrites is S26: a failed Save is never reported as success, and the
// node accepts no more writes.
func TestFailedSaveStopsWrites(t *testing.T) {
	c := newNodeCluster(t, 3, 1, false)
	c.startAll()
	lead := c.leaders()[0]
	boom := errors.New("fsync failed")
	c.stores[lead].(*MemoryStorage).FailSaves(boom)
	defer c.pump()()
	_, err := c.nodes[lead].Replicate(ctxT(t), 0, "put", put("k", "v"))
	if err == nil {
		t.Fatal("a write whose fsync failed was acknowledged")
	}
	if !errors.Is(err, ErrTimeout) && !errors.Is(err, ErrStopped) {
		// ErrTimeout if its own save failed (its append went out before the fsync, so
		// followers may still commit it); ErrStopped if an earlier save failed first.
		t.Fatalf("write during a failed save: %v, want ErrTimeout or ErrStopped", err)
	}
	_, err = c.nodes[lead].Replicate(ctxT(t), 0, "put", put("k", "v"))
	if !errors.Is(err, ErrStopped) || !errors.Is(err, boom) {
		t.Fatalf("write after a failed save: %v, want ErrStopped wrapping the storage error", err)
	}
	if s := c.nodes[lead].Status(); !strings.Contains(s.Err, "fsync failed") {
		t.Fatalf("Status.Err = %q, want the storage error", s.Err)
	}
	c.stores[lead].(*MemoryStorage).FailSaves(nil)
	// The rest of the cluster carries on without it.
	c.leaders()
}

// TestSlowStateMachineDoesNotBlockTheLoop: while Apply is stuck, the node keeps
// heartbeating and voting (apply runs beside the loop), so leadership stays put and
// entries keep committing; the callers are answered once Apply resumes.
func TestSlowStateMachineDoesNotBlockTheLoop(t *testing.T) {
	c := newNodeCluster(t, 3, 1, false)
	c.startAll()
	lead := c.leaders()[0]
	term := c.nodes[lead].Status().Partitions[0].Term
	slow := (lead + 1) % 3
	release := c.sms[slow].stall()
	defer c.pump()()
	for k := 0; k < 5; k++ {
		if _, err := c.nodes[lead].Replicate(ctxT(t), 0, "put", put("k", fmt.Sprint(k))); err != nil {
			t.Fatal(err)
		}
	}
	c.waitFor("commit index reaches the slow node", 1000, func() bool {
		return c.nodes[slow].Status().Partitions[0].Commit >= c.nodes[lead].Status().Partitions[0].Commit
	})
	if st := c.nodes[lead].Status().Partitions[0]; st.Term != term || st.Leader != c.ids[lead] {
		t.Fatalf("leadership changed while a follower's state machine was stuck: %+v", st)
	}
	release()
}

// TestSlowStateMachineBoundsItsQueue: a follower whose state machine is stuck takes no
// more entries once its apply queue is full (memory stays bounded, the loop never waits),
// the cluster keeps committing with the other follower, and the stuck one catches up
// once its state machine resumes.
func TestSlowStateMachineBoundsItsQueue(t *testing.T) {
	const bound = 8
	c := newNodeCluster(t, 3, 1, false)
	c.opts = func(_ int, o *testNodeOptions) { o.applyBacklog = bound }
	c.startAll()
	lead := c.leaders()[0]
	slow := (lead + 1) % 3
	release := c.sms[slow].stall()
	stop := c.pump()
	var last Result
	for k := 0; k < 60; k++ {
		r, err := c.nodes[lead].Replicate(ctxT(t), 0, "put", put("k", fmt.Sprint(k)))
		if err != nil {
			t.Fatal(err)
		}
		last = r
		p := c.nodes[slow].parts[0]
		p.mu.Lock()
		queued := len(p.applyQ)
		p.mu.Unlock()
		// Raft hands out committed entries only while the queue has room.
		if queued > bound {
			t.Fatalf("stuck follower queued %d entries, bound %d", queued, bound)
		}
	}
	stop()
	release()
	defer c.pump()()
	c.waitApplied(0, last.Index)
	c.checkSameLogs()
}

func TestValidateRejectsTimersThatCannotWork(t *testing.T) {
	base := Config{NodeID: "n1", StateMachine: newKVSM(1, false), Storage: NewMemoryStorage()}
	for name, tc := range map[string]struct {
		mod  func(*Config)
		want string
	}{
		// S8: a heartbeat no more frequent than the election timeout.
		"S8 heartbeat equals election timeout": {func(c *Config) { c.HeartbeatInterval, c.ElectionTimeout = time.Second, time.Second }, "HeartbeatInterval (1s) must be shorter than ElectionTimeout (1s)"},
		"S8 heartbeat above election timeout":  {func(c *Config) { c.HeartbeatInterval, c.ElectionTimeout = 2*time.Second, time.Second }, "must be shorter than ElectionTimeout"},
		"no node id":                           {func(c *Config) { c.NodeID = "" }, "NodeID is empty"},
		"self not among peers":                 {func(c *Config) { c.Peers = []Peer{{ID: "n2", Addr: "x"}} }, `NodeID "n1" is not among the peers`},
		"no storage":                           {func(c *Config) { c.Storage = nil }, "DataDir is empty"},
		"short secret":                         {func(c *Config) { c.Secret = []byte("short") }, "Secret has 5 bytes"},
		"peers but no address":                 {func(c *Config) { c.Peers = []Peer{{ID: "n1"}, {ID: "n2", Addr: "x"}} }, "Addr is empty"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := base
			tc.mod(&cfg)
			err := cfg.Validate()
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want ErrInvalidConfig saying %q", err, tc.want)
			}
			if _, err := NewNode(cfg); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("NewNode accepted the config: %v", err)
			}
		})
	}
	if err := base.Validate(); err != nil {
		t.Fatalf("defaults rejected: %v", err)
	}
}

// TestPartitionForIsStable pins the key-to-partition mapping: applications route by it,
// so it must never change. (Values computed independently from the FNV-1a definition.)
func TestPartitionForIsStable(t *testing.T) {
	for _, tc := range []struct {
		key        string
		partitions int
		want       int
	}{
		{"", 16, 5}, {"a", 16, 12}, {"user:42", 16, 2}, {"user:42", 7, 0}, {"anything", 1, 0},
	} {
		if got := KeyPartition([]byte(tc.key), tc.partitions); got != tc.want {
			t.Errorf("KeyPartition(%q, %d) = %d, want %d", tc.key, tc.partitions, got, tc.want)
		}
	}
}

func TestLeaderChangesAreNotified(t *testing.T) {
	c := newNodeCluster(t, 3, 2, false)
	var mu sync.Mutex
	seen := map[string]LeaderChange{}
	c.cfg = func(i int, cfg *Config) {
		id := c.ids[i]
		cfg.OnLeaderChange = func(lc LeaderChange) {
			mu.Lock()
			defer mu.Unlock()
			seen[fmt.Sprintf("%s/%d", id, lc.Partition)] = lc
		}
	}
	c.startAll()
	leaders := c.leaders()
	c.waitFor("every node notified of every leader", 1000, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, id := range c.ids {
			for p, l := range leaders {
				lc, ok := seen[fmt.Sprintf("%s/%d", id, p)]
				if !ok || lc.Leader != c.ids[l] || lc.IsLocal != (id == c.ids[l]) {
					return false
				}
			}
		}
		return true
	})
}

// freeAddrs reserves n loopback addresses for a cluster over a real transport.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, ln.Addr().String())
		ln.Close()
	}
	return addrs
}

// TestClusterOverRealTransports runs three nodes with the real clock, the WAL and the TCP
// or HTTP transport built by NewNode: leaders, writes through every node, and a leader
// stopped and replaced.
// realPeers returns the IDs of n nodes on free local addresses, and them as peers.
func realPeers(t *testing.T, n int) ([]string, []Peer) {
	addrs := freeAddrs(t, n)
	ids := make([]string, n)
	peers := make([]Peer, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("n%d", i+1)
		peers[i] = Peer{ID: ids[i], Addr: addrs[i]}
	}
	return ids, peers
}

// startRealNode creates and starts a node that the end of the test stops.
func startRealNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	n, err := NewNode(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Stop(context.Background()) })
	return n
}

func TestClusterOverRealTransports(t *testing.T) {
	if testing.Short() {
		t.Skip("real network and clock; -short runs the in-memory tests only")
	}
	for _, kind := range []TransportKind{TCP, HTTP} {
		t.Run(kind.String(), func(t *testing.T) {
			ids, peers := realPeers(t, 3)
			nodes := make([]*Node, 3)
			for i := range ids {
				nodes[i] = startRealNode(t, Config{
					NodeID: ids[i], Addr: peers[i].Addr, DataDir: t.TempDir(), Partitions: 4, Peers: peers,
					Transport: kind, StateMachine: newKVSM(4, false), Logger: discardLogger(),
					ElectionTimeout: 300 * time.Millisecond, HeartbeatInterval: 30 * time.Millisecond,
					Secret: []byte("0123456789abcdef0123"),
				})
			}
			for p := 0; p < 4; p++ {
				for i, n := range nodes {
					if _, err := n.Replicate(ctxT(t), p, "put", put("k", ids[i])); err != nil {
						t.Fatalf("partition %d via %s: %v", p, ids[i], err)
					}
				}
			}
			lead, err := nodes[0].WaitForLeader(ctxT(t), 0)
			if err != nil {
				t.Fatal(err)
			}
			li := int(lead[1] - '1')
			if err := nodes[li].Stop(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			other := nodes[(li+1)%3]
			// The first tries may be forwarded to the stopped leader before the followers
			// notice it is gone: their outcome is unknown, and a read can simply be retried.
			var r Result
			ctx := ctxT(t)
			for err = ErrTimeout; errors.Is(err, ErrTimeout) && ctx.Err() == nil; {
				r, err = other.Replicate(ctx, 0, "get", []byte("k"))
			}
			if err != nil || r.Value != "n3" {
				t.Fatalf("read after the leader stopped: %v, %v; want n3", r.Value, err)
			}
			if l, _ := other.Leader(0); l == lead {
				t.Fatalf("stopped node %s still leads", lead)
			}
		})
	}
}

// TestCommittedEntriesReachEveryFollowerWithoutFurtherWrites is S16: after one write and
// no more, every follower still applies it (the commit index reaches them through
// heartbeats; nothing waits for a next write).
func TestCommittedEntriesReachEveryFollowerWithoutFurtherWrites(t *testing.T) {
	c := newNodeCluster(t, 5, 3, false)
	c.startAll()
	leaders := c.leaders()
	for p, l := range leaders {
		r, err := c.nodes[l].Replicate(ctxT(t), p, "put", put("only", "write"))
		if err != nil {
			t.Fatal(err)
		}
		c.waitApplied(p, r.Index) // only ticks from here on
		for i, sm := range c.sms {
			if v, _ := sm.get(p, "only"); v != "write" {
				t.Fatalf("%s partition %d: value %q, want the committed write", c.ids[i], p, v)
			}
		}
	}
}

// TestReadBarrierMakesLocalReadsLinearizable: after ReadBarrier on a follower, its local
// state machine has every write acknowledged before the call; no entry of the type older
// versions logged for reads reaches the state machine, and the reserved type cannot be
// replicated directly.
func TestReadBarrierMakesLocalReadsLinearizable(t *testing.T) {
	c := newNodeCluster(t, 3, 1, false)
	c.startAll()
	lead := c.leaders()[0]
	f := (lead + 1) % 3
	defer c.pump()()
	for k := 0; k < 5; k++ {
		v := fmt.Sprint(k)
		if _, err := c.nodes[lead].Replicate(ctxT(t), 0, "put", put("x", v)); err != nil {
			t.Fatal(err)
		}
		if err := c.nodes[f].ReadBarrier(ctxT(t), 0); err != nil {
			t.Fatal(err)
		}
		if got, _ := c.sms[f].get(0, "x"); got != v {
			t.Fatalf("after ReadBarrier the follower reads %q, want %q", got, v)
		}
	}
	for _, e := range c.sms[f].entries(0) {
		if e.Type == barrierType {
			t.Fatal("a barrier entry reached the state machine")
		}
	}
	if _, err := c.nodes[f].Replicate(ctxT(t), 0, barrierType, nil); err == nil {
		t.Fatal("the reserved barrier type was accepted from a caller")
	}
}

// TestSingleNodeWithTheDefaultsNeedsNoNetwork: a one-node cluster with only a DataDir and
// a state machine runs on the WAL, elects itself and takes writes; its Status marshals to
// the JSON the status endpoints serve, and its metrics publish through expvar.
func TestSingleNodeWithTheDefaultsNeedsNoNetwork(t *testing.T) {
	sm := newKVSM(2, false)
	id := fmt.Sprintf("solo%d", soloRuns.Add(1)) // expvar names are process-wide: -count=N
	n, err := NewNode(Config{NodeID: id, DataDir: t.TempDir(), Partitions: 2, StateMachine: sm, Logger: discardLogger(),
		ElectionTimeout: 50 * time.Millisecond, HeartbeatInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	defer n.Stop(context.Background())
	r, err := n.Replicate(ctxT(t), 1, "put", put("k", "v"))
	if err != nil || r.Index != 2 {
		t.Fatalf("Replicate = %+v, %v; want index 2 after the leader's no-op", r, err)
	}
	b, err := json.Marshal(n.Status())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"node":"` + id + `"`, `"partition":1`, `"role":"leader"`, `"leader":"` + id + `"`, `"commit":2`, `"applied":2`} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("status JSON %s lacks %s", b, want)
		}
	}
	if err := n.PublishExpvar(); err != nil {
		t.Fatal(err)
	}
	if err := n.PublishExpvar(); err == nil {
		t.Fatal("publishing the same expvar twice succeeded")
	}
	v := expvar.Get("kommander." + id).String()
	if !strings.Contains(v, `"fsyncs":`) || !strings.Contains(v, `"role":"leader"`) {
		t.Fatalf("expvar = %s", v)
	}
	if _, err := n.WaitForLeader(ctxT(t), 0); err != nil {
		t.Fatal(err)
	}
	if m := n.Metrics(); m.Proposals != 1 || m.Fsyncs == 0 || m.Leaders != 2 {
		t.Fatalf("metrics = %+v", m)
	}
}

var soloRuns atomic.Int64

// countingTransport records how a node's loop calls Send.
type countingTransport struct {
	Transport
	mu    sync.Mutex
	sends map[string]int
	parts map[string]map[uint32]bool
}

func (c *countingTransport) Send(to string, msgs []Message) {
	c.mu.Lock()
	c.sends[to]++
	for _, m := range msgs {
		if c.parts[to] == nil {
			c.parts[to] = map[uint32]bool{}
		}
		c.parts[to][m.Partition] = true
	}
	c.mu.Unlock()
	c.Transport.Send(to, msgs)
}

// TestOnePassSavesAllPartitionsInOneFsyncAndOneSendPerPeer steps one node's loop by hand:
// proposals for every partition it leads, queued together, are saved by one Storage.Save
// (one fsync) and reach each peer in one Send before that fsync (the appends) and at
// most one after it.
func TestOnePassSavesAllPartitionsInOneFsyncAndOneSendPerPeer(t *testing.T) {
	s := newNodeSim(t, nodeSimOptions{seed: 1, nodes: 3, partitions: 16, steps: 0})
	s.net.HealAll()
	var led []int
	for k := 0; k < 500 && len(led) < 2; k++ {
		s.advance()
		led = nil
		for p := 0; p < 16; p++ {
			if s.nodes[0].IsLeader(p) {
				led = append(led, p)
			}
		}
	}
	if len(led) < 2 {
		t.Fatalf("n1 leads %d partitions after 500 ticks; the test needs two", len(led))
	}
	n := s.nodes[0]
	ct := &countingTransport{Transport: n.transport, sends: map[string]int{}, parts: map[string]map[uint32]bool{}}
	n.transport = ct
	for _, p := range led {
		if _, err := n.submit(p, []Command{{Type: "put", Data: put("k", "v")}}); err != nil {
			t.Fatal(err)
		}
	}
	saves := s.stores[0].Saves()
	if !n.runPass() {
		t.Fatal("the pass found no work")
	}
	if !n.persist.inFlight() {
		t.Fatal("the pass saved nothing")
	}
	n.completePersist() // the fsync returns
	n.finishPersist()   // and the pass completes
	if got := s.stores[0].Saves() - saves; got != 1 {
		t.Fatalf("one pass over %d partitions made %d saves, want 1", len(led), got)
	}
	for _, peer := range []string{"n2", "n3"} {
		if ct.sends[peer] < 1 || ct.sends[peer] > 2 {
			t.Fatalf("pass sent %d batches to %s, want 1 or 2", ct.sends[peer], peer)
		}
		if len(ct.parts[peer]) < len(led) {
			t.Fatalf("%s got messages of %d partitions, want all %d the node leads", peer, len(ct.parts[peer]), len(led))
		}
	}
}

// gatedStorage holds Save calls until the test lets them through, and records how many
// entries each carried.
type gatedStorage struct {
	*MemoryStorage
	mu      sync.Mutex
	gate    chan struct{}
	entered chan struct{}
	sizes   []int
}

func (g *gatedStorage) Save(batch []Update) error {
	g.mu.Lock()
	gate := g.gate
	n := 0
	for _, u := range batch {
		n += len(u.Entries)
	}
	g.sizes = append(g.sizes, n)
	g.mu.Unlock()
	if gate != nil && n > 0 { // hard-state-only saves pass
		g.entered <- struct{}{}
		<-gate
	}
	return g.MemoryStorage.Save(batch)
}

// TestProposalsDuringAnFsyncShareTheNextOne: while the loop waits for one fsync, new
// proposals queue up, and the next pass saves all of them with a single fsync.
func TestProposalsDuringAnFsyncShareTheNextOne(t *testing.T) {
	c := newNodeCluster(t, 1, 1, false)
	gs := &gatedStorage{MemoryStorage: NewMemoryStorage(), entered: make(chan struct{}, 1)}
	c.stores[0] = gs
	c.startAll()
	c.leaders()
	n := c.nodes[0]
	// A first write makes sure the leader's no-op is saved before the gate goes up.
	if _, err := n.Replicate(ctxT(t), 0, "put", put("warm", "up")); err != nil {
		t.Fatal(err)
	}
	gs.mu.Lock()
	gs.gate = make(chan struct{})
	gs.mu.Unlock()
	first := make(chan error, 1)
	go func() { _, err := n.Replicate(ctxT(t), 0, "put", put("first", "1")); first <- err }()
	<-gs.entered // the loop is inside Save with the first entry
	const more = 50
	errs := make(chan error, more)
	for k := 0; k < more; k++ {
		go func() { _, err := n.Replicate(ctxT(t), 0, "put", put("k", fmt.Sprint(k))); errs <- err }()
	}
	c.await("50 proposals queued behind the fsync", func() bool { return n.Metrics().PendingProposals == more+1 })
	gs.mu.Lock()
	gate := gs.gate
	gs.gate = nil
	gs.mu.Unlock()
	close(gate)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for k := 0; k < more; k++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if last := gs.sizes[len(gs.sizes)-1]; last != more {
		t.Fatalf("entries per save after the gate: %v; want the %d queued proposals in one save", gs.sizes, more)
	}
}

// TestProposalsAreChunkedToMaxMessageBytes: queued proposals go to Raft, or to the
// leader in MsgForward messages, in chunks of about MaxMessageBytes, never splitting one
// proposal; a batch larger than a message is refused with ErrTooLarge.
func TestProposalsAreChunkedToMaxMessageBytes(t *testing.T) {
	n := &Node{cfg: Config{MaxMessageBytes: 8 << 10}}
	var queue []*proposal
	for k := 0; k < 40; k++ {
		queue = append(queue, &proposal{cmds: []Command{{Type: "put", Data: make([]byte, 900)}}})
	}
	var chunks []int
	for len(queue) > 0 {
		k, size := n.chunk(queue)
		if size > 8<<10 {
			t.Fatalf("chunk of %d bytes, limit %d", size, 8<<10)
		}
		chunks = append(chunks, k)
		queue = queue[k:]
	}
	if len(chunks) < 4 {
		t.Fatalf("40 proposals of 900 bytes went in chunks %v, want several", chunks)
	}
	big := &proposal{cmds: make([]Command, 20)}
	for i := range big.cmds {
		big.cmds[i] = Command{Type: "put", Data: make([]byte, 900)}
	}
	if k, _ := n.chunk([]*proposal{big}); k != 1 {
		t.Fatalf("a proposal was split: chunk of %d", k)
	}

	c := newNodeCluster(t, 1, 1, false)
	c.cfg = func(_ int, cfg *Config) { cfg.MaxEntrySize, cfg.MaxMessageBytes = 1000, 8<<10 }
	c.startAll()
	c.leaders()
	if _, err := c.nodes[0].ReplicateBatch(ctxT(t), 0, big.cmds); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("an 18 KB batch with MaxMessageBytes 8 KB: %v, want ErrTooLarge", err)
	}
	if _, err := c.nodes[0].ReplicateBatch(ctxT(t), 0, big.cmds[:5]); err != nil {
		t.Fatalf("a batch within the limit: %v", err)
	}
}

// TestForwardedProposalIsTakenOnceByTheLeaderOfItsTerm is S35 for forwarding: a MsgForward
// is appended only by the node that leads the partition in the term its sender named; a
// follower, or the leader with another term, drops it; and a copy delivered again, before
// or after the leader restarted and another took over, is never applied a second time.
func TestForwardedProposalIsTakenOnceByTheLeaderOfItsTerm(t *testing.T) {
	s := newNodeSim(t, nodeSimOptions{seed: 2, nodes: 3, partitions: 1, steps: 0})
	s.net.HealAll()
	leader := func() (int, uint64) {
		for k := 0; k < 500; k++ {
			for i, n := range s.nodes {
				if n != nil && n.IsLeader(0) {
					return i, n.parts[0].raft.status().term
				}
			}
			s.advance()
		}
		t.Fatal("no leader after 500 ticks")
		return -1, 0
	}
	lead, term := leader()
	follower, origin := (lead+1)%3, (lead+2)%3
	id := uint64(1)<<idSeqBits | 7 // incarnation 1 of the origin, its 7th entry
	forward := func(to int, term uint64) Message {
		return Message{Type: MsgForward, Partition: 0, From: s.ids[origin], To: s.ids[to], Term: term,
			Entries: []Entry{{Kind: EntryNormal, ID: id, Type: "put", Data: put("via", "forward")}}}
	}
	applied := func() (most int) {
		for i := range s.nodes {
			k := 0
			for _, e := range s.sms[i].entries(0) {
				if string(e.Data) == string(put("via", "forward")) {
					k++
				}
			}
			most = max(most, k)
		}
		return most
	}
	deliver := func(to int, m Message) {
		s.nodes[to].deliver([]Message{m})
		for k := 0; k < 30; k++ {
			s.advance()
		}
	}

	deliver(follower, forward(follower, term))
	deliver(lead, forward(lead, term+1))
	deliver(lead, forward(lead, term-1))
	if k := applied(); k != 0 {
		t.Fatalf("a forward to a follower, or to the leader with another term, was applied %d times", k)
	}
	deliver(lead, forward(lead, term))
	if k := applied(); k != 1 {
		t.Fatalf("the forward to the leader of its term was applied %d times, want 1", k)
	}
	deliver(lead, forward(lead, term))
	if k := applied(); k != 1 {
		t.Fatalf("a copy delivered again was applied: %d times", k)
	}
	// The leader restarts; another takes over in a higher term. Copies reach both.
	s.crash(lead)
	s.startNode(lead)
	newLead, newTerm := leader()
	if newTerm <= term {
		t.Fatalf("new leader %s in term %d, after term %d", s.ids[newLead], newTerm, term)
	}
	for _, to := range []int{newLead, lead, follower} {
		deliver(to, forward(to, term))
	}
	if k := applied(); k != 1 {
		t.Fatalf("a copy delivered after the leader restarted was applied: %d times", k)
	}
}
