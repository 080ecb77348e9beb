package kommander

import (
	"fmt"
	"runtime"
	"slices"
	"testing"
)

// These tests cover quiescence as the node runs it (raft_quiesce.go, node_liveness.go):
// an idle cluster sends next to nothing, a write to a quiesced partition commits without
// waiting for a tick, and the partitions of a node that falls silent fail over within
// three election timeouts.

// allQuiesced reports whether every partition is quiesced on every running node that is
// not in skip.
func (c *nodeCluster) allQuiesced(skip ...int) bool {
	for i, n := range c.nodes {
		if n == nil || slices.Contains(skip, i) {
			continue
		}
		for _, ps := range n.Status().Partitions {
			if !ps.Quiesced {
				return false
			}
		}
	}
	return true
}

// quiesceNodeCluster starts three nodes with partitions partitions and waits until every
// partition has a leader and is quiesced everywhere.
func quiesceNodeCluster(t *testing.T, partitions int) *nodeCluster {
	t.Helper()
	c := newNodeCluster(t, 3, partitions, false)
	c.startAll()
	c.leaders()
	c.waitFor("every partition quiesced", 200, func() bool { return c.allQuiesced() })
	return c
}

// ticksUntilLed advances the clock a tick at a time, at most maxTicks, until every
// running node but skip (-1: none) agrees on a leader, not skip, for each partition of
// parts. It returns the ticks it took and whether they agree.
func (c *nodeCluster) ticksUntilLed(parts []int, skip, maxTicks int) (int, bool) {
	led := func() bool {
		for _, p := range parts {
			lead := ""
			for i, n := range c.nodes {
				if n == nil || i == skip {
					continue
				}
				l, ok := n.Leader(p)
				if !ok || (skip >= 0 && l == c.ids[skip]) || (lead != "" && l != lead) {
					return false
				}
				lead = l
			}
		}
		return true
	}
	ticks := 0
	for ; !led() && ticks < maxTicks; ticks++ {
		// Advance returns once every node's ticker took the tick, which it does only once
		// its loop ran the one before: node time lags fake time by a tick at most.
		c.clock.Advance(c.tick)
		runtime.Gosched()
	}
	return ticks, led()
}

// quiescedVictim starts a quiesced cluster of three nodes and partitions partitions and
// returns it with the node that leads partition 0 and the partitions that node leads.
func quiescedVictim(t *testing.T, partitions int) (c *nodeCluster, victim int, led []int) {
	t.Helper()
	c = quiesceNodeCluster(t, partitions)
	leads := c.leaders()
	victim = leads[0]
	for p, l := range leads {
		if l == victim {
			led = append(led, p)
		}
	}
	return c, victim, led
}

// sentBy sums the messages the running nodes handed to their transports.
func (c *nodeCluster) sentBy() uint64 {
	var sent uint64
	for _, n := range c.nodes {
		if n != nil {
			sent += n.Metrics().MessagesSent
		}
	}
	return sent
}

func TestIdleClusterSendsOneMessagePerPeerPerInterval(t *testing.T) {
	const partitions, ticks = 50, 200
	c := quiesceNodeCluster(t, partitions)
	// The leader balancer's transfers wake the partitions they move: let it finish first.
	c.waitFor("leaders balanced and every partition quiesced", 100*partitions, func() bool {
		s := c.leaderSpread()
		return slices.Max(s)-slices.Min(s) <= 1 && c.allQuiesced()
	})
	before := c.sentBy()
	for range ticks {
		c.clock.Advance(c.tick)
		runtime.Gosched()
	}
	c.waitFor("still quiesced", 10, func() bool { return c.allQuiesced() })
	sent := c.sentBy() - before
	// One msgLiveness per peer per heartbeat interval (one tick here), a few ticks of
	// slack; without quiescence it would be a heartbeat and its answer per partition and
	// follower: 50 times as many.
	limit := uint64(3 * 2 * (ticks + 20))
	t.Logf("%d messages in %d ticks of an idle cluster of 3 nodes and %d partitions (limit %d)", sent, ticks, partitions, limit)
	if sent > limit {
		t.Fatalf("an idle cluster sent %d messages in %d ticks, want at most %d", sent, ticks, limit)
	}
}

func TestWriteToQuiescedPartitionCommitsAtOnce(t *testing.T) {
	c := quiesceNodeCluster(t, 4)
	leads := c.leaders()
	for p, lead := range leads {
		// Through the leader and through a follower, with the clock standing still: no tick
		// is needed to wake the partition.
		for _, i := range []int{lead, (lead + 1) % 3} {
			res, err := c.nodes[i].Replicate(ctxT(t), p, "put", put(fmt.Sprintf("k%d-%d", p, i), "v"))
			if err != nil {
				t.Fatalf("partition %d: Replicate on %s: %v", p, c.ids[i], err)
			}
			c.waitApplied(p, res.Index)
		}
		if err := c.nodes[(lead+2)%3].ReadBarrier(ctxT(t), p); err != nil {
			t.Fatalf("partition %d: ReadBarrier on a follower: %v", p, err)
		}
	}
	c.waitFor("quiesced again", 200, func() bool { return c.allQuiesced() })
}

func TestQuiescedPartitionsFailOverWithinThreeElectionTimeouts(t *testing.T) {
	c, dead, led := quiescedVictim(t, 100)
	c.net.Isolate(c.ids[dead])
	elTicks := c.nodes[dead].elTicks
	ticks, ok := c.ticksUntilLed(led, dead, 3*elTicks)
	if !ok {
		for _, p := range led {
			a, b := c.nodes[(dead+1)%3].Status().Partitions[p], c.nodes[(dead+2)%3].Status().Partitions[p]
			if a.Leader == "" || a.Leader != b.Leader || a.Leader == c.ids[dead] {
				t.Logf("partition %d: %+v and %+v", p, a, b)
			}
		}
		t.Fatalf("%d partitions of the isolated node: not all failed over within %d ticks (three election timeouts)", len(led), 3*elTicks)
	}
	t.Logf("%d partitions failed over in %d ticks (election timeout %d ticks)", len(led), ticks, elTicks)
	// The survivors quiesce again, without the isolated node.
	c.waitFor("the survivors quiesced", 10*elTicks, func() bool { return c.allQuiesced(dead) })
	// The isolated node lost its quorum: its quiesced leaders woke, and CheckQuorum
	// deposed them.
	c.waitFor("the isolated node leads nothing", 3*elTicks, func() bool {
		for _, ps := range c.nodes[dead].Status().Partitions {
			if ps.Role == roleLeader.String() {
				return false
			}
		}
		return true
	})
}

func TestQuiescedPartitionsFailOverWhenTheirLeaderRestarts(t *testing.T) {
	c, gone, led := quiescedVictim(t, 60)
	elTicks := c.nodes[gone].elTicks
	// A restart quicker than an election timeout: the node never falls silent, but it
	// leads nothing any more. Its first msgLiveness says so.
	c.stop(gone)
	c.start(gone)
	ticks, ok := c.ticksUntilLed(led, -1, 2*elTicks)
	if !ok {
		t.Fatalf("%d partitions of the restarted node: not all led again within %d ticks (two election timeouts)", len(led), 2*elTicks)
	}
	t.Logf("%d partitions led again %d ticks after their leader restarted (election timeout %d ticks)", len(led), ticks, elTicks)
}
