package kommander

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// The bootstrap simulation: brand-new nodes with BootstrapExpect, started in random order
// and at random times, each with a view of discovery of its own that flaps (random
// subsets of the started nodes, changing every few ticks) before it settles; a network
// that loses, duplicates and reorders messages; nodes that crash and restart with what
// they recorded. Every step, every set any node recorded as formed must be the same one
// (one cluster, never two); at the end, with everything healed and every view complete,
// one set must have formed, on all its members, with a leader, and the other nodes must
// know that a cluster exists. Whole Nodes run, driven by hand as in nodesim_test.go.

var (
	bootSimSeed  = flag.Int64("bootsim.seed", 0, "run the bootstrap simulation for this seed only")
	bootSimSeeds = flag.Int("bootsim.seeds", 0, "number of bootstrap simulation seeds (default 200, 50 with -short)")
)

type bootSim struct {
	t       testing.TB
	seed    int64
	expect  int
	rnd     *rand.Rand
	clock   *FakeClock
	net     *MemoryNetwork
	ids     []string
	nodes   []*Node
	stores  []*MemoryStorage
	boots   []*memoryBootstrapStore
	gen     []int
	startAt []int // step at which a node (re)starts; -1 running
	views   [][]Peer
	settled bool // views are complete from now on
	seen    int  // a node discovers another one with probability 1/seen per step
	forget  int  // and forgets one with probability 1/forget
	bug     bool // plants secondPromise
	step    int
	errs    []string
}

func newBootSim(t testing.TB, seed int64, nodes, expect int) *bootSim {
	s := &bootSim{t: t, seed: seed, expect: expect, rnd: rand.New(rand.NewPCG(uint64(seed), 0xb0075)),
		clock: NewFakeClock(time.Time{})}
	s.net = NewMemoryNetwork(seed)
	s.net.SetClock(s.clock)
	s.net.SetDefaultLink(LinkFaults{
		Loss:      []float64{0, 0.05, 0.2}[s.rnd.IntN(3)],
		Duplicate: []float64{0, 0.1, 0.3}[s.rnd.IntN(3)],
		Jitter:    []time.Duration{0, 4, 20, 60}[s.rnd.IntN(4)] * simTick, // up to six intervals: stale promises arrive late
	})
	s.seen = 3 + s.rnd.IntN(20)
	s.forget = []int{5, 10, 40, 1000}[s.rnd.IntN(4)]
	for i := 0; i < nodes; i++ {
		s.ids = append(s.ids, fmt.Sprintf("n%d", i+1))
		s.stores = append(s.stores, NewMemoryStorage())
		s.boots = append(s.boots, &memoryBootstrapStore{})
		s.startAt = append(s.startAt, s.rnd.IntN(150)) // random order and timing
	}
	s.nodes = make([]*Node, nodes)
	s.gen = make([]int, nodes)
	s.views = make([][]Peer, nodes)
	return s
}

// simDiscovery is a Discovery the simulation drives: it sets each node's view itself.
type simDiscovery struct{}

func (simDiscovery) Peers(context.Context) ([]Peer, error) { return nil, nil }
func (simDiscovery) Watch(context.Context) <-chan []Peer {
	ch := make(chan []Peer)
	close(ch)
	return ch
}
func (simDiscovery) Announce(context.Context, Announcement) error { return nil }
func (simDiscovery) Close() error                                 { return nil }

func (s *bootSim) fail(format string, args ...any) {
	if len(s.errs) < 5 {
		s.errs = append(s.errs, fmt.Sprintf("step %d: ", s.step)+fmt.Sprintf(format, args...))
	}
}

func (s *bootSim) start(i int) {
	s.gen[i]++
	n, err := newNodeForTest(Config{
		NodeID: s.ids[i], Partitions: 2, Discovery: simDiscovery{}, BootstrapExpect: s.expect,
		StateMachine: newKVSM(2, false), CustomTransport: s.net.Transport(s.ids[i]), Storage: s.stores[i],
		ElectionTimeout: 10 * simTick, HeartbeatInterval: simTick, Clock: s.clock, Logger: discardLogger(),
		RandSeed: s.seed*1000 + int64(i*100+s.gen[i]), bootstrapStore: s.boots[i],
		DisableAutoJoin: true, // its goroutine would make the run depend on scheduling
	}, testNodeOptions{manual: true})
	if err != nil {
		s.fail("start %s: %v", s.ids[i], err)
		return
	}
	if err := n.Start(context.Background()); err != nil {
		s.fail("start %s: %v", s.ids[i], err)
		return
	}
	n.boot.secondPromise = s.bug
	s.nodes[i] = n
	s.startAt[i] = -1
	s.views[i] = nil // a restarted node's discovery knows nothing yet
}

func (s *bootSim) crash(i int) {
	if s.nodes[i] == nil {
		return
	}
	_ = s.nodes[i].transport.Close()
	s.nodes[i] = nil
	s.stores[i].Crash()
	s.startAt[i] = s.step + 5 + s.rnd.IntN(60)
}

// refreshViews changes the views of discovery: while unsettled each node discovers the
// started nodes one by one, in an order of its own, and now and then forgets one (an
// expired registration); once settled every view shows every node that ever started.
func (s *bootSim) refreshViews() {
	for i, n := range s.nodes {
		if n == nil {
			continue
		}
		view := slices.Clone(s.views[i])
		switch {
		case s.settled:
			view = nil
			for j, id := range s.ids {
				if j == i || s.gen[j] > 0 {
					view = append(view, Peer{ID: id, Addr: id})
				}
			}
		case len(view) == 0:
			view = []Peer{{ID: s.ids[i], Addr: s.ids[i]}}
		case s.rnd.IntN(s.seen) == 0:
			j := s.rnd.IntN(len(s.ids))
			if p := (Peer{ID: s.ids[j], Addr: s.ids[j]}); s.gen[j] > 0 && !slices.Contains(view, p) {
				view = sortedPeers(append(view, p))
			}
		case s.rnd.IntN(s.forget) == 0 && len(view) > 1:
			k := s.rnd.IntN(len(view))
			if view[k].ID != s.ids[i] {
				view = slices.Delete(view, k, k+1)
			}
		}
		if !slices.Equal(view, s.views[i]) {
			s.views[i] = view
			n.disc.set(view)
		}
	}
}

// check fails when two different sets formed.
func (s *bootSim) check() {
	var formed []string
	var by string
	for i, b := range s.boots {
		st, _ := b.load()
		if !st.Formed {
			continue
		}
		if formed == nil {
			formed, by = st.Set, s.ids[i]
		} else if !slices.Equal(formed, st.Set) {
			s.fail("two clusters formed: %s has %v, %s has %v", by, formed, s.ids[i], st.Set)
		}
	}
}

func (s *bootSim) advance() {
	s.clock.Advance(simTick)
	for _, n := range s.nodes {
		if n != nil {
			n.addTick()
		}
	}
	for round := 0; round < 100; round++ {
		busy := false
		for _, n := range s.nodes {
			if n == nil {
				continue
			}
			for k := 0; k < 50 && n.runPass(); k++ {
				busy = true
			}
			if n.persist.inFlight() {
				busy = true
				n.completePersist()
			}
			n.applyPending()
		}
		if !busy {
			return
		}
	}
}

func (s *bootSim) run(steps int) []string {
	for s.step = 1; s.step <= steps+600 && len(s.errs) == 0; s.step++ {
		if s.step == steps {
			s.settled = true
			s.net.HealAll()
			s.net.SetDefaultLink(LinkFaults{})
		}
		for i := range s.nodes {
			if s.nodes[i] == nil && s.startAt[i] >= 0 && s.step >= s.startAt[i] {
				s.start(i)
			}
		}
		if !s.settled {
			if x := s.rnd.Float64(); x < 0.02 {
				s.crash(s.rnd.IntN(len(s.nodes)))
			} else if x < 0.03 {
				a, b := s.rnd.IntN(len(s.ids)), s.rnd.IntN(len(s.ids))
				s.net.Cut(s.ids[a], s.ids[b])
			}
		}
		s.refreshViews()
		s.advance()
		s.check()
	}
	if len(s.errs) == 0 {
		s.checkFormed()
	}
	return s.errs
}

// checkFormed is the liveness check once everything healed: one set formed on all its
// members, partition 0 has a leader among them, and every other node knows the cluster
// exists.
func (s *bootSim) checkFormed() {
	var set []string
	for _, b := range s.boots {
		if st, _ := b.load(); st.Formed {
			set = st.Set
		}
	}
	if set == nil {
		s.fail("no cluster formed after healing")
		return
	}
	leader := ""
	for i, n := range s.nodes {
		st, _ := s.boots[i].load()
		member := slices.Contains(set, s.ids[i])
		switch {
		case member && !st.Formed:
			s.fail("%s is a member of %v but did not form it", s.ids[i], set)
		case !member && !st.Exists:
			s.fail("%s is not a member of %v and does not know a cluster exists (state %+v)", s.ids[i], set, st)
		case member && n.parts[0].raft.role == roleLeader:
			leader = s.ids[i]
		}
		for p, part := range n.parts {
			switch v := part.raft.membership().Voters; {
			case member && !slices.Equal(v, set):
				s.fail("%s formed %v but partition %d has voters %v", s.ids[i], set, p, v)
			case !member && (len(v) > 0 || part.raft.role != roleFollower):
				s.fail("%s waits to be added but partition %d is a %v with voters %v", s.ids[i], p, part.raft.role, v)
			}
		}
	}
	if leader == "" {
		s.fail("cluster %v formed but partition 0 has no leader", set)
	}
}

func bootSimReplay(test string, seed int64) string {
	return fmt.Sprintf("go test -run '%s' -bootsim.seed=%d -v .", test, seed)
}

func bootSimSeedList(n int) []int64 {
	if *bootSimSeed != 0 {
		return []int64{*bootSimSeed}
	}
	if *bootSimSeeds != 0 {
		n = *bootSimSeeds
	} else if testing.Short() {
		n /= 4
	}
	seeds := make([]int64, n)
	for i := range seeds {
		seeds[i] = int64(i + 1)
	}
	return seeds
}

// TestBootstrapSimFormsOneCluster: 5 brand-new nodes with BootstrapExpect 3, started in
// random order and timing, with flapping discovery views, lossy, duplicating and
// reordering links, cuts and crashes, never form two clusters, and form one once things
// settle.
func TestBootstrapSimFormsOneCluster(t *testing.T) {
	for _, seed := range bootSimSeedList(200) {
		nodes, expect := 5, 3
		if seed%3 == 0 {
			nodes, expect = 3, 2
		}
		s := newBootSim(t, seed, nodes, expect)
		if errs := s.run(400); len(errs) > 0 {
			t.Fatalf("bootstrap simulation failed with seed %d (%d nodes, BootstrapExpect %d):\n%s\nreplay: %s",
				seed, nodes, expect, strings.Join(errs, "\n"), bootSimReplay(t.Name(), seed))
		}
	}
}

// TestBootstrapSimCatchesTooSmallExpect breaks the rule the agreement's safety rests on
// (BootstrapExpect more than half of the nodes that start together: here 2 of 5, so two
// sets need not share a node) and requires the simulation to see two clusters form within
// a few seeds: the check that guards TestBootstrapSimFormsOneCluster can fail.
func TestBootstrapSimCatchesTooSmallExpect(t *testing.T) {
	for _, seed := range bootSimSeedList(100) {
		s := newBootSim(t, seed, 5, 2)
		for _, e := range s.run(400) {
			if strings.Contains(e, "two clusters") {
				t.Logf("seed %d: caught two clusters: %s (replay: %s)", seed, e, bootSimReplay(t.Name(), seed))
				return
			}
		}
	}
	t.Fatal("5 nodes with BootstrapExpect 2 never formed two clusters: the simulation cannot see the failure it guards against")
}

// TestBootstrapSimCatchesSecondPromise plants the bug the promises exist to prevent (a
// node that holds a promise makes another when its view changes) and requires the
// simulation to see two clusters form within a few seeds.
func TestBootstrapSimCatchesSecondPromise(t *testing.T) {
	for _, seed := range bootSimSeedList(200) {
		s := newBootSim(t, seed, 3, 2)
		s.bug = true
		for _, e := range s.run(400) {
			if strings.Contains(e, "two clusters") {
				t.Logf("seed %d: caught two clusters: %s (replay: %s)", seed, e, bootSimReplay(t.Name(), seed))
				return
			}
		}
	}
	t.Fatal("a node promising twice never formed two clusters")
}
