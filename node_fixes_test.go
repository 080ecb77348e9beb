package kommander

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
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
	c.opts = func(_ int, o *testNodeOptions) {
		o.admitted = func() {
			mu.Lock()
			g := gate
			mu.Unlock()
			if g != nil {
				entered <- struct{}{}
				<-g
			}
		}
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
	failSaves(t, c, lead)
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

// failSaves makes every later Save of node i fail (until the test ends), and checks that a
// write through it is then not acknowledged. It returns the storage error.
func failSaves(t *testing.T, c *nodeCluster, i int) error {
	t.Helper()
	ms := c.stores[i].(*MemoryStorage)
	boom := errors.New("fsync failed")
	ms.FailSaves(boom)
	t.Cleanup(func() { ms.FailSaves(nil) })
	if _, err := c.nodes[i].Replicate(ctxT(t), 0, "put", put("k", "w")); err == nil {
		t.Fatal("a write whose fsync failed was acknowledged")
	}
	return boom
}

// heldSaves holds, once armed, every Save that carries entries until the test hands it a
// token (or opens the gate for good): an fsync whose length the test decides.
type heldSaves struct {
	*MemoryStorage
	mu      sync.Mutex
	armed   bool
	tokens  chan struct{}
	open    chan struct{}
	entered chan struct{}
}

func newHeldSaves() *heldSaves {
	return &heldSaves{MemoryStorage: NewMemoryStorage(), tokens: make(chan struct{}, 1024), open: make(chan struct{}), entered: make(chan struct{}, 1024)}
}

func (h *heldSaves) arm() {
	h.mu.Lock()
	h.armed = true
	h.mu.Unlock()
}

func (h *heldSaves) Save(batch []Update) error {
	h.mu.Lock()
	armed := h.armed
	h.mu.Unlock()
	entries := 0
	for _, u := range batch {
		entries += len(u.Entries)
	}
	if armed && entries > 0 {
		h.entered <- struct{}{}
		select {
		case <-h.tokens:
		case <-h.open:
		}
	}
	return h.MemoryStorage.Save(batch)
}

// startHeldCluster starts three nodes of one partition on heldSaves, not armed yet, and
// makes one write through the leader, so that its no-op is saved; it returns the cluster,
// the storages and the leader's index.
func startHeldCluster(t *testing.T) (*nodeCluster, []*heldSaves, int) {
	t.Helper()
	c := newNodeCluster(t, 3, 1, false)
	held := make([]*heldSaves, 3)
	for i := range c.stores {
		held[i] = newHeldSaves()
		c.stores[i] = held[i]
	}
	c.startAll()
	lead := c.leaders()[0]
	stop := c.pump()
	if _, err := c.nodes[lead].Replicate(ctxT(t), 0, "put", put("k", "v")); err != nil {
		t.Fatal(err)
	}
	stop()
	return c, held, lead
}

// TestIsolatedLeaderUnderLoadStepsDownS18 is S18 under load: a leader cut off from its
// quorum while clients keep proposing to it, so that each of its Saves is followed at
// once by the next, still takes its ticks (it used to take none while a Save ran), so
// CheckQuorum makes it step down.
func TestIsolatedLeaderUnderLoadStepsDownS18(t *testing.T) {
	c, held, lead := startHeldCluster(t)
	n := c.nodes[lead]
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); close(held[lead].open) }) // runs before the cluster stops
	propose := func() {
		go func() { _, _ = n.Replicate(ctx, 0, "put", put("k", "v")) }()
	}
	p := n.parts[0]
	// inRaft: the proposal was handed to Raft (or, the leader gone, waits for one).
	inRaft := func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.queue) == 0 || p.queue[0].deadline != 0
	}
	held[lead].arm()
	c.net.Isolate(c.ids[lead])
	propose()
	<-held[lead].entered
	step := 0
	for ; n.IsLeader(0); step++ {
		if step > 4*n.elTicks {
			t.Fatalf("the isolated leader is still leader after %d ticks under load (CheckQuorum after %d)", step, n.elTicks)
		}
		// A new proposal reaches Raft while the Save runs, so the next Save starts as
		// soon as this one returns.
		propose()
		c.await("the proposal handed to Raft", inRaft)
		held[lead].tokens <- struct{}{}
		advanced := make(chan struct{})
		go func() { c.clock.Advance(c.tick); close(advanced) }()
		timer := time.NewTimer(2 * time.Second)
		select {
		case <-advanced:
			timer.Stop()
		case <-timer.C:
			t.Fatalf("tick %d: the leader took no tick in 2s: it does not tick while a Save runs", step)
		}
		c.await("the next Save", func() bool {
			return len(held[lead].entered) > 0 || !n.IsLeader(0)
		})
		select {
		case <-held[lead].entered:
		default:
		}
	}
	t.Logf("stepped down after %d ticks under load", step)
}

// unreadableLog is a Storage whose entries cannot be read back (a disk read error).
type unreadableLog struct{ Storage }

var errUnreadable = errors.New("read: input/output error")

func (unreadableLog) Entries(uint32, uint64, uint64, uint64) ([]Entry, error) {
	return nil, errUnreadable
}

// TestStorageReadErrorFailsTheNodeS26 is S26 for reads: a restarted node that cannot read
// back the committed entries it must apply fails (no more writes, Status says why) instead
// of panicking the process.
func TestStorageReadErrorFailsTheNodeS26(t *testing.T) {
	c := newNodeCluster(t, 1, 1, false)
	c.startAll()
	c.leaders()
	for i := 0; i < 5; i++ {
		if _, err := c.nodes[0].Replicate(ctxT(t), 0, "put", put("k", "v")); err != nil {
			t.Fatal(err)
		}
	}
	c.stop(0)
	c.stores[0] = unreadableLog{c.stores[0]}
	c.start(0) // the committed entries to apply are read from storage
	n := c.nodes[0]
	c.waitFor("the node failed", 100, func() bool { return n.failed.Load() != nil })
	if _, err := n.Replicate(ctxT(t), 0, "put", put("k", "w")); !errors.Is(err, ErrStopped) || !errors.Is(err, errUnreadable) {
		t.Fatalf("a write on a node that cannot read its log: %v, want ErrStopped wrapping the read error", err)
	}
	if s := n.Status(); s.Err == "" {
		t.Fatal("Status.Err is empty on a failed node")
	}
}

// TestReadBarrierOnLeader: a ReadBarrier made on the leader returns once its entry is
// applied (it used to fail with ErrNotLeader: the sweep for entries lost to another leader
// ran before the barrier was matched), and the write before it is visible locally.
func TestReadBarrierOnLeader(t *testing.T) {
	c, lead := newRunningCluster(t)
	n := c.nodes[lead]
	for k := 0; k < 3; k++ {
		v := fmt.Sprint(k)
		if _, err := n.Replicate(ctxT(t), 0, "put", put("x", v)); err != nil {
			t.Fatal(err)
		}
		if err := n.ReadBarrier(ctxT(t), 0); err != nil {
			t.Fatalf("ReadBarrier on the leader: %v", err)
		}
		if got, _ := c.sms[lead].get(0, "x"); got != v {
			t.Fatalf("after the barrier the leader reads x = %q, want %q", got, v)
		}
	}
}

// enteringSM counts the calls of Apply that started (kvSM's may then wait in stall).
type enteringSM struct {
	*kvSM
	entered atomic.Int32
}

func (s *enteringSM) Apply(p int, ents []Entry, results []any) error {
	s.entered.Add(1)
	return s.kvSM.Apply(p, ents, results)
}

// enteringSMs wraps the cluster's state machines (for Config.StateMachine; stall and the
// checks still go through c.sms).
func enteringSMs(c *nodeCluster) []*enteringSM {
	out := make([]*enteringSM, len(c.sms))
	for i := range out {
		out[i] = &enteringSM{kvSM: c.sms[i]}
	}
	return out
}

// TestStopWithExpiredContextStillAnswersCallers: a Stop whose ctx ends while the state
// machine is stuck still answers every caller (a Replicate without a deadline used to
// wait forever), and a later Stop finishes.
func TestStopWithExpiredContextStillAnswersCallers(t *testing.T) {
	c := newNodeCluster(t, 3, 1, false)
	sms := enteringSMs(c)
	c.cfg = func(i int, cfg *Config) { cfg.StateMachine = sms[i] }
	c.startAll()
	lead := c.leaders()[0]
	n := c.nodes[lead]
	release := c.sms[lead].stall()
	released := false
	defer func() {
		if !released {
			release()
		}
	}()
	first := c.writeInBackground(lead, 1) // committed; its Apply blocks
	stopPump := c.pump()
	p := n.parts[0]
	c.await("apply stuck", func() bool { return sms[lead].entered.Load() > 0 })
	stopPump()
	c.net.Isolate(c.ids[lead])
	second := c.writeInBackground(lead, 1) // proposed, never committed
	c.await("second proposed", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.pending == 2 && len(p.queue) == 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := n.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop with a stuck state machine: %v, want the context's error", err)
	}
	timer := time.NewTimer(2 * time.Second)
	defer timer.Stop()
	select {
	case err := <-second:
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("a proposed write after Stop: %v, want ErrTimeout (outcome unknown)", err)
		}
	case <-timer.C:
		t.Fatal("a Replicate with no deadline is still waiting 2s after Stop returned")
	}
	released = true
	release()
	if err := <-first; err != nil && !errors.Is(err, ErrTimeout) {
		t.Fatalf("the committed write: %v, want success or ErrTimeout", err)
	}
	if err := n.Stop(ctxT(t)); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := n.Replicate(ctxT(t), 0, "put", put("k", "v")); !errors.Is(err, ErrStopped) {
		t.Fatalf("a write after Stop: %v, want ErrStopped", err)
	}
	c.mu.Lock()
	c.nodes[lead] = nil
	c.mu.Unlock()
}

// TestForwardedProposalRefusedByLeaderFailsFast: a leader that cannot take a forwarded
// proposal (its state machine is too far behind, or too much of its log is unsaved) tells
// the follower, whose caller gets ErrOverloaded (not applied) at once, without any time
// passing; it used to be dropped silently, and the caller waited ten election timeouts
// for an ErrTimeout.
func TestForwardedProposalRefusedByLeaderFailsFast(t *testing.T) {
	forward := func(t *testing.T, c *nodeCluster, f int, data []byte) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := c.nodes[f].Replicate(ctx, 0, "put", data)
		if !errors.Is(err, ErrOverloaded) {
			t.Fatalf("a proposal forwarded to a leader that cannot take it: %v, want ErrOverloaded at once", err)
		}
	}
	t.Run("apply backlog", func(t *testing.T) {
		const bound = 2
		c := newNodeCluster(t, 3, 1, false)
		sms := enteringSMs(c)
		c.cfg = func(i int, cfg *Config) {
			cfg.StateMachine = sms[i]
		}
		c.opts = func(_ int, o *testNodeOptions) { o.applyBacklog = bound }
		c.startAll()
		lead := c.leaders()[0]
		release := c.sms[lead].stall()
		defer release()
		stop := c.pump()
		p := c.nodes[lead].parts[0]
		_ = c.writeInBackground(lead, 1)
		c.await("the leader's Apply stuck", func() bool { return sms[lead].entered.Load() > 0 })
		_ = c.writeInBackground(lead, 2*bound) // committed, queued behind the stuck Apply
		c.await("the leader's apply queue full", func() bool {
			p.mu.Lock()
			defer p.mu.Unlock()
			return p.applyFull()
		})
		stop() // from here on no time passes
		forward(t, c, (lead+1)%3, put("k", "v"))
	})
	t.Run("unsaved", func(t *testing.T) {
		const limit = 1 << 10
		c := newNodeCluster(t, 3, 1, false)
		held := make([]*heldSaves, 3)
		for i := range c.stores {
			held[i] = newHeldSaves()
			c.stores[i] = held[i]
		}
		c.opts = func(_ int, o *testNodeOptions) { o.maxUnstableBytes = limit }
		c.startAll()
		lead := c.leaders()[0]
		stop := c.pump()
		if _, err := c.nodes[lead].Replicate(ctxT(t), 0, "put", put("k", "v")); err != nil {
			t.Fatal(err)
		}
		stop() // from here on no time passes
		held[lead].arm()
		t.Cleanup(func() { close(held[lead].open) }) // runs before the cluster stops
		_ = c.writeInBackground(lead, 1)
		<-held[lead].entered // the leader's fsync of that entry hangs: it stays unsaved
		forward(t, c, (lead+1)%3, put("big", string(make([]byte, limit))))
	})
}

// TestDuplicatedForwardedProposalAppliesOnceS12 is S12 for forwarding: a MsgForward the
// network delivers twice is appended, committed and applied once (the state machine used
// to see the same entry ID at two indexes).
func TestDuplicatedForwardedProposalAppliesOnceS12(t *testing.T) {
	c := newNodeCluster(t, 3, 1, false)
	c.startAll()
	lead := c.leaders()[0]
	f := (lead + 1) % 3
	c.net.SetLink(c.ids[f], c.ids[lead], LinkFaults{Duplicate: 1})
	defer c.pump()()
	for k := 0; k < 5; k++ {
		if _, err := c.nodes[f].Replicate(ctxT(t), 0, "put", put("x", fmt.Sprint(k))); err != nil {
			t.Fatal(err)
		}
	}
	r, err := c.nodes[lead].Replicate(ctxT(t), 0, "put", put("y", "1"))
	if err != nil {
		t.Fatal(err)
	}
	c.waitApplied(0, r.Index)
	for i := range c.sms {
		seen := map[uint64]uint64{}
		for _, e := range c.sms[i].entries(0) {
			if prev, ok := seen[e.ID]; ok {
				t.Fatalf("%s: entry ID %d (%s %q) applied at index %d and again at %d", c.ids[i], e.ID, e.Type, e.Data, prev, e.Index)
			}
			seen[e.ID] = e.Index
		}
	}
	c.checkSameLogs()
}

// TestFailedNodeSaysSoThroughDoneAndErr: a node whose Save failed closes Done and reports
// the storage error through Err, so that the program embedding it can stop and exit for a
// supervisor to restart it; a node that runs says nothing, and one that stopped says
// ErrStopped.
func TestFailedNodeSaysSoThroughDoneAndErr(t *testing.T) {
	c, lead := newRunningCluster(t)
	n := c.nodes[lead]
	if _, err := n.Replicate(ctxT(t), 0, "put", put("k", "v")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n.Done():
		t.Fatal("Done is closed on a node that runs")
	default:
	}
	if err := n.Err(); err != nil {
		t.Fatalf("Err on a node that runs: %v", err)
	}
	boom := failSaves(t, c, lead)
	select {
	case <-n.Done():
	case <-ctxT(t).Done():
		t.Fatal("Done is still open after the node failed")
	}
	if err := n.Err(); !errors.Is(err, ErrStopped) || !errors.Is(err, boom) {
		t.Fatalf("Err after a failed Save: %v, want ErrStopped wrapping the storage error", err)
	}
	other := c.nodes[(lead+1)%3]
	if err := other.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	<-other.Done()
	if err := other.Err(); !errors.Is(err, ErrStopped) {
		t.Fatalf("Err after Stop: %v, want ErrStopped", err)
	}
}

// TestReplayRespectsTheApplyBound: a node restarted with many committed entries and a state
// machine that is stuck queues no more of them for the applier than the bound, instead of
// the whole log; once the state machine resumes, everything is applied in order.
func TestReplayRespectsTheApplyBound(t *testing.T) {
	const bound, writes = 8, 300
	c := newNodeCluster(t, 1, 1, false)
	c.startAll()
	stop := c.pump()
	var last Result
	for k := 0; k < writes; k++ {
		r, err := c.nodes[0].Replicate(ctxT(t), 0, "put", put("k", fmt.Sprint(k)))
		if err != nil {
			t.Fatal(err)
		}
		last = r
	}
	stop()
	c.stop(0)
	c.sms[0] = newKVSM(1, false) // it kept nothing: the whole log is replayed into it
	release := c.sms[0].stall()
	c.opts = func(_ int, o *testNodeOptions) { o.applyBacklog = bound }
	c.start(0)
	stop = c.pump()
	p := c.nodes[0].parts[0]
	// Handed out and not applied: what waits in the apply queue, plus the batch the stuck
	// Apply holds, which the applier took from the queue when it held at most bound.
	outstanding := func() uint64 {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.handedTo - p.applied
	}
	c.await("the replay handed entries to the applier", func() bool { return outstanding() >= bound })
	stop()
	for i := 0; i < 50; i++ {
		c.clock.Advance(c.tick)
		if q := outstanding(); q > 2*bound {
			t.Fatalf("the replay handed %d committed entries to a stuck state machine, bound %d", q, bound)
		}
	}
	release()
	defer c.pump()()
	c.waitApplied(0, last.Index)
	if probs := c.sms[0].problems(); len(probs) > 0 {
		t.Fatal(probs)
	}
}

// TestRestartedNodeNeverReusesEntryIDs is S35: entry IDs never derive from RandSeed, so a
// node restarted with the same seed hands out IDs its previous life never did, and writes
// forwarded through it after the restart are taken by the leader (they used to be dropped
// as copies of the previous life's and time out).
func TestRestartedNodeNeverReusesEntryIDs(t *testing.T) {
	incarnations := map[uint64]bool{}
	for i := 0; i < 8; i++ {
		n, err := NewNode(Config{NodeID: "n1", StateMachine: newKVSM(1, false), Storage: NewMemoryStorage(), RandSeed: 42, Logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		incarnations[idIncarnation(n.nextIDs(1))] = true
	}
	if len(incarnations) < 2 {
		t.Fatalf("8 nodes with RandSeed 42 hand out IDs of %d incarnation(s)", len(incarnations))
	}

	c := newNodeCluster(t, 3, 1, false)
	c.startAll()
	defer c.pump()()
	lead := c.leaders()[0]
	follower := (lead + 1) % 3
	write := func(k int) {
		t.Helper()
		if _, err := c.nodes[follower].Replicate(ctxT(t), 0, "put", put("k", fmt.Sprint(k))); err != nil {
			t.Fatalf("write %d through %s: %v", k, c.ids[follower], err)
		}
	}
	for k := 0; k < 20; k++ {
		write(k)
	}
	c.stop(follower)
	c.start(follower) // the same Config, RandSeed included
	c.leaders()
	for k := 20; k < 40; k++ {
		write(k)
	}
}

// TestFollowersSaveNewEntriesWhileTheLeadersSaveRuns: entries proposed while the leader's
// own Save runs reach the followers, which save them, before that Save returns (the
// leader need not persist before it sends: thesis §10.2.1). They used to wait in the
// leader until its Save returned, and a follower busy with a Save of its own when they
// finally came then added one more fsync to the write.
func TestFollowersSaveNewEntriesWhileTheLeadersSaveRuns(t *testing.T) {
	c, held, lead := startHeldCluster(t)
	n := c.nodes[lead]
	var once sync.Once
	release := func() { once.Do(func() { close(held[lead].open) }) }
	t.Cleanup(release) // runs before the cluster stops
	base := held[lead].LastIndex(0)
	held[lead].arm()
	write := func(v string) <-chan error {
		done := make(chan error, 1)
		go func() {
			_, err := n.Replicate(ctxT(t), 0, "put", put("k", v))
			done <- err
		}()
		return done
	}
	first := write("1")
	<-held[lead].entered // the leader's Save of the first write is held from here on
	second := write("2")
	c.await("both followers saved the second write while the leader's Save of the first is held", func() bool {
		for i := range held {
			if i != lead && held[i].LastIndex(0) < base+2 {
				return false
			}
		}
		return true
	})
	if got := held[lead].LastIndex(0); got != base {
		t.Fatalf("the leader's storage reached %d while its Save was held, want %d", got, base)
	}
	release()
	for i, done := range []<-chan error{first, second} {
		if err := <-done; err != nil {
			t.Fatalf("write %d: %v", i+1, err)
		}
	}
}
