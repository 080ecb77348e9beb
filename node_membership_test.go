package kommander

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// newGrowingCluster returns a cluster of total nodes whose first boot form it; the others
// are configured to join it (Config.Join, the address book of every node) and are started
// by the test.
func newGrowingCluster(t *testing.T, boot, total, partitions int) *nodeCluster {
	t.Helper()
	c := newNodeCluster(t, total, partitions, false)
	c.cfg = func(i int, cfg *Config) {
		if i < boot {
			cfg.Peers = cfg.Peers[:boot]
		} else {
			cfg.Join = true
		}
	}
	for i := 0; i < boot; i++ {
		c.start(i)
	}
	return c
}

// ackedWriters writes unique keys through some nodes, at most one write per writer per
// tick of the fake clock, and remembers every write that was acknowledged.
type ackedWriters struct {
	c    *nodeCluster
	stop chan struct{}
	wg   sync.WaitGroup

	mu     sync.Mutex
	acked  map[string]int // key -> partition
	errs   []error
	worst  time.Duration // the longest acknowledged write, in fake time
	counts int
}

// startWriters starts one writer per node index in via.
func (c *nodeCluster) startWriters(via ...int) *ackedWriters { return c.startWritersEach(1, via...) }

// startWritersEach starts k writers per node index in via.
func (c *nodeCluster) startWritersEach(k int, via ...int) *ackedWriters {
	w := &ackedWriters{c: c, stop: make(chan struct{}), acked: make(map[string]int)}
	for x := 0; x < k*len(via); x++ {
		i := via[x%len(via)]
		n := c.nodes[i]
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for j := 0; ; j++ {
				select {
				case <-w.stop:
					return
				default:
				}
				key := fmt.Sprintf("w%d-%d-%d", i, x, j)
				p := KeyPartition([]byte(key), c.partitions)
				start := c.clock.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				_, err := n.Replicate(ctx, p, "put", put(key, key))
				cancel()
				took := c.clock.Now().Sub(start)
				w.mu.Lock()
				if err != nil {
					w.errs = append(w.errs, fmt.Errorf("write %s through %s: %w", key, n.ID(), err))
				} else {
					w.acked[key] = p
					w.worst = max(w.worst, took)
					w.counts++
				}
				w.mu.Unlock()
				for c.clock.Now().Equal(start) { // one write per tick
					select {
					case <-w.stop:
						return
					default:
						runtime.Gosched()
					}
				}
			}
		}()
	}
	return w
}

// acks returns how many writes were acknowledged so far.
func (w *ackedWriters) acks() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.counts
}

// finish stops the writers and returns the errors they got.
func (w *ackedWriters) finish() []error {
	close(w.stop)
	w.wg.Wait()
	return w.errs
}

// finishHeld waits for more acknowledged writes than acks in all, stops the writers and
// checks that every node in on holds every acknowledged write. Writes may fail while the
// membership changes (a removed leader steps down; they are never acknowledged then): they
// are logged; none that was acknowledged may be missing.
func (w *ackedWriters) finishHeld(acks int, on ...int) {
	w.c.t.Helper()
	w.c.await("more writes", func() bool { return w.acks() > acks })
	if errs := w.finish(); len(errs) > 0 {
		w.c.t.Logf("%d writes failed (not acknowledged), the first: %v", len(errs), errs[0])
	}
	w.checkHeld(on...)
}

// checkHeld checks that the state machine of every node in on holds every acknowledged
// write, once each node has applied what is committed.
func (w *ackedWriters) checkHeld(on ...int) {
	c := w.c
	c.t.Helper()
	for _, i := range on {
		c.await(fmt.Sprintf("every acknowledged write applied on %s", c.ids[i]), func() bool {
			for k, p := range w.acked {
				if v, ok := c.sms[i].get(p, k); !ok || v != k {
					return false
				}
			}
			return true
		})
	}
	c.checkSameLogs()
}

// membersEverywhere waits until every running node in on sees voters (in any order) and
// no learners in every partition.
func (c *nodeCluster) membersEverywhere(voters []string, on ...int) {
	c.t.Helper()
	want := slices.Clone(voters)
	slices.Sort(want)
	differs := func() string {
		for _, i := range on {
			for p := 0; p < c.partitions; p++ {
				m, err := c.nodes[i].Members(p)
				got := slices.Clone(m.Voters)
				slices.Sort(got)
				if err != nil || !slices.Equal(got, want) || len(m.Learners) > 0 {
					return fmt.Sprintf("%s sees %+v in partition %d (%v; status %+v)", c.ids[i], m, p, err, c.nodes[i].Status())
				}
			}
		}
		return ""
	}
	deadline := time.Now().Add(20 * time.Second)
	for d := differs(); d != ""; d = differs() {
		if time.Now().After(deadline) {
			c.t.Fatalf("voters %v in every partition: not reached in 20s: %s", want, d)
		}
		runtime.Gosched()
	}
}

// TestGrowThreeToFiveAndShrinkBackUnderWriteLoad (S27): two nodes join a running cluster,
// each through a different member, become voters of every partition, and are removed again,
// while writes go on; nothing acknowledged is lost, every node applies one log, the
// removed nodes stop with ErrRemoved and their traffic is refused.
func TestGrowThreeToFiveAndShrinkBackUnderWriteLoad(t *testing.T) {
	c := newGrowingCluster(t, 3, 5, 4)
	c.leaders()
	defer c.pump()()
	w := c.startWriters(0, 1, 2)
	ctx := ctxT(t)

	c.start(3)
	c.start(4)
	if err := c.nodes[1].AddNode(ctx, "n4", "n4"); err != nil {
		t.Fatalf("AddNode n4 through n2: %v", err)
	}
	if err := c.nodes[2].AddNode(ctx, "n5", "n5"); err != nil {
		t.Fatalf("AddNode n5 through n3: %v", err)
	}
	c.membersEverywhere(c.ids, 0, 1, 2, 3, 4)
	c.await("more writes", func() bool { return w.acks() > 50 })

	if err := c.nodes[0].RemoveNode(ctx, "n4"); err != nil {
		t.Fatalf("RemoveNode n4: %v", err)
	}
	if err := c.nodes[1].RemoveNode(ctx, "n5"); err != nil {
		t.Fatalf("RemoveNode n5: %v", err)
	}
	c.membersEverywhere(c.ids[:3], 0, 1, 2)
	for _, i := range []int{3, 4} {
		c.await(c.ids[i]+" removed", func() bool { return errors.Is(c.nodes[i].Err(), ErrRemoved) })
		if _, err := c.nodes[i].Replicate(ctx, 0, "put", put("x", "y")); !errors.Is(err, ErrRemoved) {
			t.Fatalf("Replicate on the removed %s: %v, want ErrRemoved", c.ids[i], err)
		}
	}
	w.finishHeld(100, 0, 1, 2)
}

// TestReplaceANodeByANewIncarnationOfItsID (S36): a node whose disk was replaced is removed
// under its ID, which the members then forget, and joins again on its new data directory
// as a new member; writes go on and it ends with every acknowledged one.
func TestReplaceANodeByANewIncarnationOfItsID(t *testing.T) {
	c := newNodeCluster(t, 3, 2, false)
	c.useWAL()
	c.startAll()
	c.leaders()
	defer c.pump()()
	w := c.startWriters(0, 1)
	ctx := ctxT(t)

	c.stop(2)
	c.dataDirs[2], c.sms[2] = t.TempDir(), newKVSM(c.partitions, false) // a new disk
	if err := c.nodes[0].RemoveNode(ctx, "n3"); err != nil {
		t.Fatalf("RemoveNode n3: %v", err)
	}
	c.membersEverywhere(c.ids[:2], 0, 1)
	c.cfg = func(i int, cfg *Config) { cfg.Join = i == 2 }
	c.start(2)
	if err := c.nodes[1].AddNode(ctx, "n3", "n3"); err != nil {
		t.Fatalf("AddNode n3 on its new disk: %v", err)
	}
	c.membersEverywhere(c.ids, 0, 1, 2)
	w.finishHeld(60, 0, 1, 2)
	if err := c.nodes[2].Err(); err != nil {
		t.Fatalf("the new incarnation of n3: %v", err)
	}
	// The new n3 votes: without n1, n2 and n3 elect leaders (a node still refused by a
	// member that knew its old disk would stay passive, and n2 would win no election).
	c.net.Isolate("n1")
	c.await("n2 or n3 leads every partition without n1", func() bool {
		for p := 0; p < c.partitions; p++ {
			l, _ := c.nodes[1].Leader(p)
			if l != "n2" && l != "n3" || !c.nodes[c.index(l)].IsLeader(p) {
				return false
			}
		}
		return true
	})
}

// TestReplaceANodeByANewOne (S27): a new node is added, then the one it replaces removed,
// under write load; the new node ends with every acknowledged write.
func TestReplaceANodeByANewOne(t *testing.T) {
	c := newGrowingCluster(t, 3, 4, 3)
	c.leaders()
	defer c.pump()()
	w := c.startWriters(0, 1)
	ctx := ctxT(t)
	c.start(3)
	if err := c.nodes[0].AddNode(ctx, "n4", "n4"); err != nil {
		t.Fatalf("AddNode n4: %v", err)
	}
	if err := c.nodes[1].RemoveNode(ctx, "n3"); err != nil {
		t.Fatalf("RemoveNode n3: %v", err)
	}
	c.membersEverywhere([]string{"n1", "n2", "n4"}, 0, 1, 3)
	c.await("n3 removed", func() bool { return errors.Is(c.nodes[2].Err(), ErrRemoved) })
	w.finishHeld(60, 0, 1, 3)
}

// TestStopHandsOffEveryLeadershipWithoutFailingAWrite: TransferLeadership moves a
// partition's leadership where it is asked to, and Stop hands every partition its node
// leads to another voter before it stops, so that the writes of the other nodes (all
// forwarded to the leaders) see no failure at all, only a short pause.
func TestStopHandsOffEveryLeadershipWithoutFailingAWrite(t *testing.T) {
	c := newNodeCluster(t, 3, 6, false)
	c.cfg = func(i int, cfg *Config) { cfg.DisableLeaderBalancing = true }
	c.startAll()
	c.leaders()
	defer c.pump()()
	ctx := ctxT(t)
	for p := 0; p < c.partitions; p++ { // n1 leads every partition
		lead, _ := c.nodes[0].Leader(p)
		if lead != "n1" {
			if err := c.nodes[c.index(lead)].TransferLeadership(ctx, p, "n1"); err != nil {
				t.Fatalf("transfer partition %d from %s to n1: %v", p, lead, err)
			}
		}
	}
	c.await("n1 leads every partition", func() bool { return c.nodes[0].Metrics().Leaders == c.partitions })
	w := c.startWritersEach(8, 1, 2) // so that forwards are in flight when the leadership moves
	c.await("writes", func() bool { return w.acks() > 100 })
	before := w.acks()
	c.stop(0)
	c.await("every partition led by n2 or n3", func() bool {
		for p := 0; p < c.partitions; p++ {
			if l, _ := c.nodes[1].Leader(p); l == "n1" || l == "" {
				return false
			}
		}
		return true
	})
	c.await("writes after the stop", func() bool { return w.acks() > before+100 })
	if errs := w.finish(); len(errs) > 0 {
		t.Fatalf("%d writes failed, the first: %v", len(errs), errs[0])
	}
	t.Logf("longest acknowledged write: %v of fake time (election timeout %v)", w.worst, 10*c.tick)
	w.checkHeld(1, 2)
}

// TestLeadersRebalanceAfterARestart: a node that restarts leads nothing; the balancer
// hands it its share, until the 32 partitions are led 11/11/10.
func TestLeadersRebalanceAfterARestart(t *testing.T) {
	c := newNodeCluster(t, 3, 32, false)
	c.startAll()
	c.leaders()
	c.stop(2)
	c.leaders()
	c.start(2)
	spread := func() []int {
		counts := make([]int, 3)
		for p := 0; p < c.partitions; p++ {
			if l, ok := c.nodes[0].Leader(p); ok {
				counts[c.index(l)]++
			}
		}
		return counts
	}
	before := spread()
	c.waitFor("leaders 11/11/10", 400*c.partitions, func() bool {
		s := spread()
		slices.Sort(s)
		return slices.Equal(s, []int{10, 11, 11})
	})
	t.Logf("leaders per node: %v after the restart, %v once balanced", before, spread())
}

// TestRemovedNodeIsRefused (S5): once a node is removed, the members refuse its traffic:
// a heartbeat it sends in a far higher term moves no member's term.
func TestRemovedNodeIsRefused(t *testing.T) {
	c := newNodeCluster(t, 3, 1, false)
	c.startAll()
	c.leaders()
	defer c.pump()()
	if err := c.nodes[0].RemoveNode(ctxT(t), "n3"); err != nil {
		t.Fatalf("RemoveNode n3: %v", err)
	}
	c.membersEverywhere(c.ids[:2], 0, 1)
	c.await("n3 told it was removed", func() bool { return errors.Is(c.nodes[2].Err(), ErrRemoved) })
	// The members drop it an election timeout after they commit its removal.
	since := c.clock.Now()
	c.await("three election timeouts", func() bool { return c.clock.Now().Sub(since) > 30*c.tick })
	term := c.nodes[0].Status().Partitions[0].Term
	c.nodes[2].transport.Send("n1", []Message{{Type: MsgHeartbeat, From: "n3", To: "n1", Term: term + 100}})
	c.nodes[2].transport.Send("n2", []Message{{Type: MsgHeartbeat, From: "n3", To: "n2", Term: term + 100}})
	if _, err := c.nodes[0].Replicate(ctxT(t), 0, "put", put("k", "v")); err != nil {
		t.Fatalf("write after the forged heartbeats: %v", err)
	}
	for i := 0; i < 2; i++ {
		if got := c.nodes[i].Status().Partitions[0].Term; got >= term+100 {
			t.Fatalf("%s moved to term %d on the removed node's heartbeat", c.ids[i], got)
		}
	}
}

// TestForgedMembershipChangesChangeNothing: a change forwarded by a node that is no
// member, or one that does not decode, is not taken; asking for changes that make no sense
// fails with ErrInvalidConfig and changes nothing.
func TestForgedMembershipChangesChangeNothing(t *testing.T) {
	c := newNodeCluster(t, 3, 1, false)
	c.startAll()
	lead := c.leaders()[0]
	defer c.pump()()
	ctx := ctxT(t)
	term := c.nodes[lead].Status().Partitions[0].Term
	stranger := c.net.Transport("x9")
	stranger.SetPeer(c.ids[lead], c.ids[lead])
	stranger.Send(c.ids[lead], []Message{{Type: MsgForward, From: "x9", To: c.ids[lead], Term: term,
		Entries: []Entry{{Kind: entryConfig, ID: 1 << 50, Data: encodeConfChange(confChange{Type: confRemove, Node: c.ids[(lead+1)%3]})}}}})
	other := (lead + 1) % 3
	c.nodes[other].transport.Send(c.ids[lead], []Message{{Type: MsgForward, From: c.ids[other], To: c.ids[lead], Term: term,
		Entries: []Entry{{Kind: entryConfig, ID: 1 << 51, Data: []byte{0xff, 0xff, 0xff}}}}})
	if err := c.nodes[0].RemoveNode(ctx, ""); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("RemoveNode of an empty ID: %v, want ErrInvalidConfig", err)
	}
	if err := c.nodes[0].RemoveNode(ctx, "nobody"); err != nil {
		t.Fatalf("RemoveNode of a node that is no member: %v, want nil (nothing to do)", err)
	}
	if _, err := c.nodes[lead].Replicate(ctx, 0, "put", put("k", "v")); err != nil {
		t.Fatalf("write: %v", err)
	}
	c.membersEverywhere(c.ids, 0, 1, 2)
}
