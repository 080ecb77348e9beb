package kommander

import (
	"context"
	"errors"
	"testing"
	"time"
)

// These tests cover ReadBarrier and ReadBarrierLease on the node (node_read.go).

// fsyncs returns the fsyncs of every node of the cluster so far.
func (c *nodeCluster) fsyncs() (n uint64) {
	for _, nd := range c.nodes {
		n += nd.Metrics().Fsyncs
	}
	return n
}

// readsAsked returns the requests node i's partition 0 has handed to Raft and not yet
// answered.
func (c *nodeCluster) readsAsked(i int) int {
	p := c.nodes[i].parts[0]
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.reads.all)
}

// readCanceled starts a ReadBarrier on node i, waits until it is handed to Raft, ends its
// ctx and returns what it returned.
func (c *nodeCluster) readCanceled(i int) error {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	n := c.nodes[i] // not c.nodes[i] in the goroutine: a failed test's cleanup clears it
	go func() { done <- n.ReadBarrier(ctx, 0) }()
	c.await("the read is handed to Raft", func() bool { return c.readsAsked(i) == 1 })
	cancel()
	return <-done
}

// A ReadBarrier, on the leader and on a follower, writes nothing to the log and costs no
// fsync anywhere, and after it the local state machine has the write acknowledged before.
func TestReadBarrierWritesNothingToTheLog(t *testing.T) {
	c, lead := newRunningCluster(t)
	res, err := c.nodes[lead].Replicate(ctxT(t), 0, "put", put("x", "1"))
	if err != nil {
		t.Fatal(err)
	}
	c.waitApplied(0, res.Index) // every node saved it
	last, fsyncs := c.nodes[lead].Status().Partitions[0].LastIndex, c.fsyncs()
	for i := range c.nodes {
		for k := 0; k < 3; k++ {
			if err := c.nodes[i].ReadBarrier(ctxT(t), 0); err != nil {
				t.Fatalf("%s: ReadBarrier: %v", c.ids[i], err)
			}
			if got, _ := c.sms[i].get(0, "x"); got != "1" {
				t.Fatalf("%s reads x = %q after ReadBarrier, want 1", c.ids[i], got)
			}
		}
		if r := c.nodes[i].Metrics().Reads; r != 3 {
			t.Fatalf("%s counted %d reads, want 3", c.ids[i], r)
		}
	}
	if got := c.nodes[lead].Status().Partitions[0].LastIndex; got != last {
		t.Fatalf("reads appended to the log: last index %d, was %d", got, last)
	}
	if got := c.fsyncs(); got != fsyncs {
		t.Fatalf("reads cost %d fsyncs", got-fsyncs)
	}
}

// A read that no leader confirms fails, in bounded time, with an error that wraps
// ErrNotLeader (it did not happen): on a cut-off follower (its request goes nowhere, it is
// asked again, then given up) and on a cut-off leader (it steps down, failing the read,
// and finds no leader). A caller whose ctx ends gets ctx's error.
func TestReadBarrierFailsDefinitelyWithoutALeader(t *testing.T) {
	for _, who := range []string{"follower", "leader"} {
		t.Run(who, func(t *testing.T) {
			c, lead := newRunningCluster(t)
			i := lead
			if who == "follower" {
				i = (lead + 1) % 3
			}
			c.net.Isolate(c.ids[i])
			err := c.nodes[i].ReadBarrier(ctxT(t), 0)
			if !errors.Is(err, ErrNotLeader) {
				t.Fatalf("ReadBarrier on an isolated %s: %v, want ErrNotLeader", who, err)
			}
		})
	}
	c := newNodeCluster(t, 3, 1, false)
	c.startAll()
	lead := c.leaders()[0]
	c.net.Isolate(c.ids[lead])
	if err := c.readCanceled(lead); !errors.Is(err, context.Canceled) {
		t.Fatalf("ReadBarrier whose ctx ended: %v, want context.Canceled", err)
	}
}

// A follower's request, or the leader's answer, may be lost: the follower asks again after
// an election timeout, and the read succeeds once the link is back (without asking again,
// it would wait until it gives up with ErrNotLeader).
func TestReadBarrierOnFollowerAsksAgainAfterALoss(t *testing.T) {
	c := newNodeCluster(t, 3, 1, false)
	c.startAll()
	lead := c.leaders()[0]
	f := (lead + 1) % 3
	c.net.CutOneWay(c.ids[f], c.ids[lead])
	done := make(chan error, 1)
	fn := c.nodes[f] // not c.nodes[f] in the goroutine: a failed test's cleanup clears it
	go func() { done <- fn.ReadBarrier(ctxT(t), 0) }()
	// A read is handed to Raft in the loop's next pass, with no tick: waiting with the clock
	// still keeps a slow goroutine from losing its turn to fifty ticks.
	c.await("the request is on its way", func() bool { return c.readsAsked(f) == 1 })
	for k := 0; k < 2*c.nodes[f].elTicks; k++ { // past the first ask's wait
		c.clock.Advance(c.tick)
	}
	c.net.HealAll()
	defer c.pump()()
	if err := <-done; err != nil {
		t.Fatalf("ReadBarrier after the link came back: %v", err)
	}
}

// With lease reads on, a leader serves ReadBarrierLease from its lease, without a round:
// even cut off from everyone, within the lease. ReadBarrier there still needs its round,
// and ReadBarrierLease is refused when lease reads are off.
func TestReadBarrierLeaseServesWithoutARound(t *testing.T) {
	c := newNodeCluster(t, 3, 1, false)
	c.cfg = func(i int, cfg *Config) { cfg.LeaseReads = true }
	c.startAll()
	lead := c.leaders()[0]
	for k := 0; k < 12; k++ { // ticks the lease check looks back on, and a confirmed round
		c.clock.Advance(c.tick)
	}
	if _, err := c.nodes[lead].Replicate(ctxT(t), 0, "put", put("x", "1")); err != nil {
		t.Fatal(err)
	}
	c.net.Isolate(c.ids[lead])
	// The clock stands still: the lease holds, and a round can never complete.
	if err := c.nodes[lead].ReadBarrierLease(ctxT(t), 0); err != nil {
		t.Fatalf("ReadBarrierLease within the lease: %v", err)
	}
	if err := c.readCanceled(lead); !errors.Is(err, context.Canceled) {
		t.Fatalf("ReadBarrier on an isolated leader returned %v before its round", err)
	}

	off := newNodeCluster(t, 1, 1, false)
	off.startAll()
	if err := off.nodes[0].ReadBarrierLease(ctxT(t), 0); err == nil {
		t.Fatal("ReadBarrierLease accepted with lease reads off")
	}
}

// The lease is counted in ticks, so the node uses it only while its ticks keep pace with
// its clock: enough ticks seen, the last one recent, none lost or late over the last
// election timeout.
func TestLeaseUsableOnlyWhileTicksKeepPace(t *testing.T) {
	const tick = 10 * time.Millisecond
	for _, tc := range []struct {
		name  string
		ticks int           // ticks taken, one per tick of the clock
		gap   int           // at which tick (counted from the end) the ticker lost one
		after time.Duration // clock time since the last tick
		lease bool          // Config.LeaseReads
		want  bool
	}{
		{"ticks on time", 30, 0, tick / 2, true, true},
		{"lease reads off", 30, 0, tick / 2, false, false},
		{"too few ticks seen", 5, 0, tick / 2, true, false},
		{"the last tick is late", 30, 0, 2 * tick, true, false},
		{"a tick lost within the election timeout", 30, 4, tick / 2, true, false},
		{"a tick lost before it", 30, 15, tick / 2, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := NewFakeClock(time.Time{})
			n := &Node{cfg: Config{Clock: clock, LeaseReads: tc.lease}, tick: tick, elTicks: 10}
			if tc.lease {
				n.leaseTicks.at = make([]time.Time, n.elTicks+1)
			}
			for k := 1; k <= tc.ticks; k++ {
				if k == tc.ticks-tc.gap+1 && tc.gap > 0 {
					clock.Advance(tick) // the ticker dropped this one
				}
				clock.Advance(tick)
				n.now++
				n.leaseTicks.tickedAt(n.now, clock.Now())
			}
			clock.Advance(tc.after)
			if got := n.leaseUsable(); got != tc.want {
				t.Fatalf("leaseUsable = %v, want %v", got, tc.want)
			}
		})
	}
}

// A follower has one request in flight to the leader at a time: reads that arrive while it
// is unanswered wait in the queue and share the next request, sent once the answer comes
// (here: once the first is given up on and asked again, with them, after a loss).
func TestReadBarrierOnFollowerSendsOneRequestAtATime(t *testing.T) {
	c := newNodeCluster(t, 3, 1, false)
	c.startAll()
	lead := c.leaders()[0]
	f := (lead + 1) % 3
	c.net.CutOneWay(c.ids[lead], c.ids[f]) // answers are lost
	done := make(chan error, 3)
	fn := c.nodes[f] // not c.nodes[f] in the goroutines: a failed test's cleanup clears it
	go func() { done <- fn.ReadBarrier(ctxT(t), 0) }()
	// Handed to Raft in the loop's next pass, with no tick (see the test above).
	c.await("the first request is asked", func() bool { return c.readsAsked(f) == 1 })
	for range 2 {
		go func() { done <- fn.ReadBarrier(ctxT(t), 0) }()
	}
	queued := func() int {
		p := c.nodes[f].parts[0]
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.reads.queue)
	}
	c.await("the later reads are queued", func() bool { return queued() == 2 })
	c.clock.Advance(c.tick) // a pass with a tick: they stay queued behind the request in flight
	if q, a := queued(), c.readsAsked(f); q != 2 || a != 1 {
		t.Fatalf("%d reads queued and %d requests in flight, want 2 and 1", q, a)
	}
	c.net.HealAll()
	defer c.pump()()
	for range 3 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// A read on a follower that knows no leader waits in the queue; once the follower learns
// one from a message, the read is asked at once, not at the next tick (with the clock
// standing still it would wait for ever). A leadership transfer during a read leaves a
// follower so: its request is refused by the old leader before the new one is known.
func TestReadBarrierQueuedWithoutALeaderIsAskedOnceOneIsKnown(t *testing.T) {
	c := newNodeCluster(t, 3, 1, false)
	c.startAll()
	lead := c.leaders()[0]
	f := (lead + 1) % 3
	term := c.nodes[lead].Status().Partitions[0].Term
	// Quiesced, nothing is in flight when the follower is cut off: no append of the leader
	// is lost, which would leave the follower's progress waiting for a heartbeat's answer.
	c.waitFor("the partition quiesced", 200, func() bool { return c.allQuiesced() })
	c.net.Isolate(c.ids[f])
	c.waitFor("the isolated follower knows no leader", 20*c.nodes[f].elTicks, func() bool {
		return c.nodes[f].Status().Partitions[0].Leader == ""
	})
	if got := c.nodes[f].Status().Partitions[0].Term; got != term {
		t.Fatalf("the isolated follower is at term %d, want %d (PreVote keeps it)", got, term)
	}
	done := make(chan error, 1)
	fn := c.nodes[f] // not c.nodes[f] in the goroutine: a failed test's cleanup clears it
	go func() { done <- fn.ReadBarrier(ctxT(t), 0) }()
	triedOnce := func() bool {
		p := fn.parts[0]
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.reads.queue) == 1 && p.reads.queue[0].giveUp != 0
	}
	c.await("the read found no leader and waits in the queue", triedOnce)
	c.net.HealAll()
	// From here on the clock stands still: the leader's append tells the follower who
	// leads, and nothing else may be needed for the read to be asked and answered.
	if _, err := c.nodes[lead].Replicate(ctxT(t), 0, "put", put("x", "1")); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("ReadBarrier once the follower knows its leader again: %v", err)
	}
}
