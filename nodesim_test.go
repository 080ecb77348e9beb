package kommander

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// The node-level deterministic simulation: whole Nodes (the real loop, apply and
// proposal code, driven step by step with no goroutines), a FakeClock, a MemoryNetwork
// that drops, duplicates, delays and reorders messages and partitions nodes, and
// MemoryStorage whose crash loses unsynced writes. Clients run a key-value register
// workload (writes; reads that go through the log; and ReadBarrier, or with lease reads on
// ReadBarrierLease, followed by a read of the local state machine) against random nodes; the history
// is checked for linearizability, and every (partition, index) must hold the same entry
// on every node that applied it, in every lifetime (state machine safety, S12, S15, S17).
//
// With a replication factor (a third of the seeds), a client on a node that hosts no
// replica of its partition sends its write or log read through a node that hosts one
// (node_proxy.go), and the answer, or its absence, goes into the history the same way.
//
// Everything comes from one seed; a failure prints it with the command that replays it.

var (
	nodeSimSeed  = flag.Int64("nodesim.seed", 0, "run the node simulation for this seed only")
	nodeSimSeeds = flag.Int("nodesim.seeds", 0, "number of node simulation seeds (default 200, 50 with -short)")
)

// nodeSimOptions shape one simulation run.
type nodeSimOptions struct {
	seed       int64
	nodes      int
	partitions int
	steps      int
	// ackBeforeFsync plants the bug the simulation must catch: storage that acknowledges
	// saves before they are durable, so a node acknowledges writes before their fsync.
	ackBeforeFsync bool
	// leaseReads turns Config.LeaseReads on and makes some reads lease reads; crashed
	// nodes then stay down longer than an election timeout, as the lease assumes.
	leaseReads bool
	// factor is Config.ReplicationFactor: the writes and log reads of a client on a node
	// that hosts no replica of their partition are proxied to one that does.
	factor int
}

type nodeSim struct {
	t      testing.TB
	o      nodeSimOptions
	rnd    *rand.Rand
	clock  *FakeClock
	net    *MemoryNetwork
	ids    []string
	nodes  []*Node // nil while crashed
	stores []*MemoryStorage
	sms    []*kvSM
	gen    []int // incarnation per node
	downAt []int // step at which a crashed node restarts
	// pausedUntil is the step at which a paused node (SIGSTOP: no ticks, no passes, its
	// inbox filling up) resumes.
	pausedUntil []int
	healAt      int // step at which a network partition heals (0: none)
	step        int
	now         int64 // logical time of the history

	clients []*simClient
	history []kvOp
	// applied records, per partition and index, the entry some node applied first.
	applied []map[uint64]Entry
	errs    []string
	acked   int
	unknown int
	reads   int // ReadBarrier reads acknowledged
}

type simClient struct {
	id      int
	op      *kvOp
	node    int
	gen     int
	pr      *proposal
	pc      *proxyCall // a write or log read proxied to a node that hosts the partition
	part    int
	startAt int
	rd      *readWait // a ReadBarrier (or lease) read, followed by a read of the local state
}

const simTick = 10 * time.Millisecond

var simKeys = []string{"a", "b", "c", "d"}

func newNodeSim(t testing.TB, o nodeSimOptions) *nodeSim {
	s := &nodeSim{t: t, o: o, rnd: rand.New(rand.NewPCG(uint64(o.seed), 0x51e5)), clock: NewFakeClock(time.Time{})}
	s.net = NewMemoryNetwork(o.seed)
	s.net.SetClock(s.clock)
	s.applied = make([]map[uint64]Entry, o.partitions)
	for p := range s.applied {
		s.applied[p] = map[uint64]Entry{}
	}
	durableSM := s.rnd.IntN(2) == 0 && !o.ackBeforeFsync
	for i := 0; i < o.nodes; i++ {
		s.ids = append(s.ids, fmt.Sprintf("n%d", i+1))
		st := NewMemoryStorage()
		if o.ackBeforeFsync {
			st.SetNoSync(true)
		}
		s.stores = append(s.stores, st)
		s.sms = append(s.sms, newKVSM(o.partitions, durableSM))
	}
	s.nodes = make([]*Node, o.nodes)
	s.gen = make([]int, o.nodes)
	s.downAt = make([]int, o.nodes)
	s.pausedUntil = make([]int, o.nodes)
	for i := 0; i < 5; i++ {
		s.clients = append(s.clients, &simClient{id: i})
	}
	// Message faults for the whole run, drawn from the seed.
	s.net.SetDefaultLink(LinkFaults{
		Loss:      []float64{0, 0.01, 0.05, 0.1}[s.rnd.IntN(4)],
		Duplicate: []float64{0, 0.02, 0.1}[s.rnd.IntN(3)],
		Jitter:    time.Duration(s.rnd.IntN(4)) * simTick,
	})
	for i := range s.ids {
		s.startNode(i)
	}
	return s
}

func (s *nodeSim) startNode(i int) {
	var peers []Peer
	for _, id := range s.ids {
		peers = append(peers, Peer{ID: id, Addr: id})
	}
	s.gen[i]++
	sm := s.sms[i]
	sm.onApply = func(p int, e Entry) { s.recordApply(i, p, e) }
	n, err := newNodeForTest(Config{
		NodeID:            s.ids[i],
		Partitions:        s.o.partitions,
		Peers:             peers,
		StateMachine:      sm,
		CustomTransport:   s.net.Transport(s.ids[i]),
		Storage:           s.stores[i],
		ElectionTimeout:   10 * simTick,
		HeartbeatInterval: simTick,
		Clock:             s.clock,
		Logger:            discardLogger(),
		LeaseReads:        s.o.leaseReads,
		ReplicationFactor: s.o.factor,
		RandSeed:          s.o.seed*1000 + int64(i*100+s.gen[i]),
	}, testNodeOptions{manual: true})
	if err != nil {
		s.fail("step %d: restart %s: %v", s.step, s.ids[i], err)
		return
	}
	if err := n.Start(context.Background()); err != nil {
		s.fail("step %d: start %s: %v", s.step, s.ids[i], err)
		return
	}
	s.nodes[i] = n
}

func (s *nodeSim) fail(format string, args ...any) {
	if len(s.errs) < 5 {
		s.errs = append(s.errs, fmt.Sprintf(format, args...))
	}
}

// recordApply checks state machine safety: one entry per (partition, index), ever.
func (s *nodeSim) recordApply(node, p int, e Entry) {
	if o, ok := s.applied[p][e.Index]; ok {
		if o.ID != e.ID || o.Term != e.Term || o.Type != e.Type || string(o.Data) != string(e.Data) {
			s.fail("step %d: %s applied %s %q (term %d) at partition %d index %d, where %s %q (term %d) was applied before",
				s.step, s.ids[node], e.Type, e.Data, e.Term, p, e.Index, o.Type, o.Data, o.Term)
		}
		return
	}
	s.applied[p][e.Index] = e
}

// crash stops a node dead: its transport goes, its storage loses unsynced writes, and its
// callers never hear back (their operations' outcome stays unknown).
func (s *nodeSim) crash(i int) {
	if s.nodes[i] == nil {
		return
	}
	_ = s.nodes[i].transport.Close()
	s.nodes[i] = nil
	s.stores[i].Crash()
	s.sms[i] = s.sms[i].restarted()
	s.downAt[i] = s.step + 5 + s.rnd.IntN(60)
	if s.o.leaseReads {
		s.downAt[i] += 10 // an election timeout: see Config.LeaseReads
	}
}

// running returns the live nodes that are not paused.
func (s *nodeSim) running() []int {
	var r []int
	for _, i := range s.live() {
		if s.step >= s.pausedUntil[i] {
			r = append(r, i)
		}
	}
	return r
}

func (s *nodeSim) live() []int {
	var l []int
	for i, n := range s.nodes {
		if n != nil {
			l = append(l, i)
		}
	}
	return l
}

// run executes the simulation and returns the problems found ("" if none).
func (s *nodeSim) run() []string {
	for s.step = 1; s.step <= s.o.steps; s.step++ {
		s.faults(true)
		s.clientsAct()
		s.advance()
	}
	// Heal everything and let the cluster settle: pending operations finish or time out,
	// and a final write through every partition must succeed (liveness after healing).
	s.net.HealAll()
	for i := range s.nodes {
		if s.nodes[i] == nil {
			s.startNode(i)
		}
		s.pausedUntil[i] = 0
	}
	s.healAt = 0
	for k := 0; k < 400; k++ {
		s.step++
		s.advance()
		if k > 200 && s.idle() {
			break
		}
	}
	s.finalWrites()
	for _, c := range s.clients {
		if c.op != nil {
			s.finish(c, math.MaxInt64, "")
		}
	}
	// The history is checked even after other violations, so that a planted bug shows
	// which checks catch it.
	if msg := checkLinearizable(s.history); msg != "" {
		s.fail("history of %d operations is not linearizable: %s", len(s.history), msg)
	}
	return s.errs
}

func (s *nodeSim) idle() bool {
	for _, c := range s.clients {
		if c.op != nil {
			return false
		}
	}
	return true
}

// faults injects crashes, restarts, partitions and heals.
func (s *nodeSim) faults(allowNew bool) {
	for i := range s.nodes {
		if s.nodes[i] == nil && s.step >= s.downAt[i] {
			s.startNode(i)
		}
	}
	if s.healAt != 0 && s.step >= s.healAt {
		s.net.Partition(s.ids)
		s.healAt = 0
	}
	if !allowNew {
		return
	}
	switch x := s.rnd.Float64(); {
	case x < 0.004:
		// A power failure takes the whole cluster down at once: only what was synced
		// survives, and every acknowledged write must be among it.
		for i := range s.nodes {
			s.crash(i)
		}
	case x < 0.015:
		s.crash(s.rnd.IntN(len(s.ids)))
	case x < 0.02:
		// S19: a paused node, often a leader, resumes after others moved on.
		i := s.rnd.IntN(len(s.ids))
		s.pausedUntil[i] = s.step + 10 + s.rnd.IntN(80)
	case x < 0.025 && s.healAt == 0:
		// Split the nodes in two random groups, or cut one node off one way.
		if s.rnd.IntN(3) == 0 {
			a, b := s.rnd.IntN(len(s.ids)), s.rnd.IntN(len(s.ids))
			if a != b {
				s.net.CutOneWay(s.ids[a], s.ids[b])
			}
		} else {
			var g1, g2 []string
			for _, id := range s.ids {
				if s.rnd.IntN(2) == 0 {
					g1 = append(g1, id)
				} else {
					g2 = append(g2, id)
				}
			}
			s.net.Partition(g1, g2)
		}
		s.healAt = s.step + 10 + s.rnd.IntN(80)
	}
	if s.o.ackBeforeFsync && s.rnd.IntN(10) == 0 {
		// The page cache is flushed at random moments.
		s.stores[s.rnd.IntN(len(s.stores))].Sync()
	}
}

// clientsAct lets idle clients start operations and impatient ones give up.
func (s *nodeSim) clientsAct() {
	for _, c := range s.clients {
		if c.op != nil {
			if s.step-c.startAt > 150 {
				s.giveUp(c)
			}
			continue
		}
		if s.rnd.IntN(3) != 0 {
			continue
		}
		live := s.live()
		if len(live) == 0 {
			return
		}
		node := live[s.rnd.IntN(len(live))]
		key := simKeys[s.rnd.IntN(len(simKeys))]
		p := KeyPartition([]byte(key), s.o.partitions)
		op := &kvOp{client: c.id, key: key, write: s.rnd.IntN(2) == 0}
		cmd := Command{Type: "get", Data: []byte(key)}
		if op.write {
			op.value = fmt.Sprintf("%d.%d", c.id, s.step)
			cmd = Command{Type: "put", Data: put(key, op.value)}
		}
		s.now++
		op.call = s.now
		if !op.write && s.rnd.IntN(3) != 0 {
			// A read of the local state machine after a ReadBarrier (or a lease read),
			// often on a node that believes it leads, deposed or not: where a read that
			// skipped its confirmation would go stale.
			for _, j := range live {
				if h := s.nodes[j].slots[p].Load(); h != nil && h.raft.role == roleLeader && s.rnd.IntN(2) == 0 {
					node = j
				}
			}
			rd, err := s.nodes[node].submitRead(p, s.o.leaseReads && s.rnd.IntN(2) == 0)
			if err != nil {
				continue
			}
			*c = simClient{id: c.id, op: op, node: node, gen: s.gen[node], rd: rd, part: p, startAt: s.step}
			continue
		}
		pr, err := s.nodes[node].submit(p, []Command{cmd})
		if errors.Is(err, ErrNotHosted) {
			x := &s.nodes[node].proxy
			pc, err := x.start(p, x.pick(p, nil), proxyOpReplicate, []Entry{{Type: cmd.Type, Data: cmd.Data}}, false)
			if err != nil {
				continue
			}
			*c = simClient{id: c.id, op: op, node: node, gen: s.gen[node], pc: pc, part: p, startAt: s.step}
			continue
		}
		if err != nil {
			continue // refused at once: certainly not applied, not part of the history
		}
		*c = simClient{id: c.id, op: op, node: node, gen: s.gen[node], pr: pr, part: p, startAt: s.step}
	}
}

// giveUp is a client whose context ended: the outcome is unknown unless the proposal had
// not been handed to Raft.
func (s *nodeSim) giveUp(c *simClient) {
	if c.rd != nil {
		// A read has no effect: one that ends without an answer is left out.
		if n := s.nodes[c.node]; n != nil && s.gen[c.node] == c.gen {
			p := n.slots[c.part].Load()
			p.mu.Lock()
			p.reads.finish(c.rd, context.DeadlineExceeded)
			p.mu.Unlock()
		}
		c.op = nil
		return
	}
	if c.pc != nil {
		s.finish(c, math.MaxInt64, "") // sent: its outcome is unknown
		return
	}
	if n := s.nodes[c.node]; n != nil && s.gen[c.node] == c.gen {
		n.slots[c.part].Load().abandon(c.pr, context.DeadlineExceeded)
		s.poll(c)
		if c.op == nil {
			return
		}
	}
	s.finish(c, math.MaxInt64, "")
}

// poll records the outcome of a client's operation if it has one.
func (s *nodeSim) poll(c *simClient) {
	if c.op == nil {
		return
	}
	if c.rd != nil {
		s.pollRead(c)
		return
	}
	if s.nodes[c.node] == nil || s.gen[c.node] != c.gen {
		s.finish(c, math.MaxInt64, "") // its node crashed: unknown forever
		return
	}
	if c.pc != nil {
		s.pollProxied(c)
		return
	}
	select {
	case <-c.pr.done:
	default:
		return
	}
	switch err := c.pr.err; {
	case err == nil:
		s.now++
		v, _ := c.pr.results[0].Value.(string)
		s.finish(c, s.now, v)
		s.acked++
	case errors.Is(err, ErrTimeout):
		s.finish(c, math.MaxInt64, "")
	default:
		c.op = nil // certainly not applied: not part of the history
	}
}

// pollProxied records the outcome of a proxied operation if it has one: the hosting
// node's answer, or unknown when none came.
func (s *nodeSim) pollProxied(c *simClient) {
	select {
	case <-c.pc.done:
	default:
		return
	}
	ans := c.pc.answer
	switch {
	case c.pc.outcome != proxyAnswered || (ans.Reject && ans.RejectHint == proxyErrUnknown):
		s.finish(c, math.MaxInt64, "")
	case ans.Reject:
		c.op = nil // certainly not applied: not part of the history
	case len(ans.Entries) != 1:
		s.fail("step %d: a proxied answer with %d results for one command", s.step, len(ans.Entries))
		c.op = nil
	default:
		s.now++
		v, _ := proxyValue(ans.Entries[0]).(string)
		s.finish(c, s.now, v)
		s.acked++
	}
}

// pollRead records a ReadBarrier's outcome: on success, what the node's state machine
// holds right then; a read that failed, or whose node crashed, had no effect and is left
// out of the history.
func (s *nodeSim) pollRead(c *simClient) {
	if s.nodes[c.node] == nil || s.gen[c.node] != c.gen {
		c.op = nil
		return
	}
	select {
	case <-c.rd.done:
	default:
		return
	}
	if c.rd.err != nil {
		c.op = nil
		return
	}
	s.now++
	v, _ := s.sms[c.node].get(c.part, c.op.key)
	s.finish(c, s.now, v)
	s.acked++
	s.reads++
}

func (s *nodeSim) finish(c *simClient, ret int64, readValue string) {
	op := *c.op
	op.ret = ret
	if ret == math.MaxInt64 {
		s.unknown++
	} else if !op.write {
		op.value = readValue
	}
	s.history = append(s.history, op)
	c.op = nil
}

// advance moves time by one tick and runs every live node until the cluster is quiet.
func (s *nodeSim) advance() {
	s.clock.Advance(simTick) // delayed messages arrive
	for _, i := range s.running() {
		s.nodes[i].addTick()
	}
	for round := 0; round < 200; round++ {
		busy := false
		for _, i := range s.running() {
			n := s.nodes[i]
			for k := 0; k < 100 && n.runPass(); k++ {
				busy = true
			}
			// An fsync in flight finishes now or in a later round: meanwhile the node
			// keeps stepping messages, and a crash loses the batch.
			if n.persist.inFlight() {
				busy = true
				if s.rnd.IntN(3) != 0 {
					n.completePersist()
				}
			}
			n.applyPending()
		}
		for _, c := range s.clients {
			s.poll(c)
		}
		if !busy {
			return
		}
	}
}

// finalWrites checks liveness: with the network healed and every node up, one write per
// partition through the first node succeeds within a bounded number of ticks.
func (s *nodeSim) finalWrites() {
	for p := 0; p < s.o.partitions; p++ {
		first := 0
		for first < len(s.nodes) && s.nodes[first].slots[p].Load() == nil {
			first++ // the first node that hosts the partition
		}
		pr, err := s.nodes[first].submit(p, []Command{{Type: "put", Data: put("final", "x")}})
		if err != nil {
			s.fail("final write to partition %d refused: %v", p, err)
			return
		}
		ok := false
		for k := 0; k < 600 && !ok; k++ {
			s.step++
			s.advance()
			select {
			case <-pr.done:
				ok = true
			default:
			}
		}
		if !ok || pr.err != nil {
			s.fail("final write to partition %d after healing: done=%v err=%v", p, ok, pr.err)
		}
	}
}

// fingerprint summarizes a run, to check that a seed replays identically.
func (s *nodeSim) fingerprint() uint64 {
	h := fnv.New64a()
	for _, o := range s.history {
		fmt.Fprintf(h, "%v;", o)
	}
	for p := range s.applied {
		fmt.Fprintf(h, "%d:%d;", p, len(s.applied[p]))
	}
	return h.Sum64()
}

func nodeSimReplay(seed int64, bug bool) string {
	if bug {
		return fmt.Sprintf("go test -run 'TestNodeSimCatchesAckBeforeFsync' -nodesim.seed=%d -v .", seed)
	}
	return fmt.Sprintf("go test -run 'TestNodeSimLinearizable' -nodesim.seed=%d -v .", seed)
}

func nodeSimSeedList() []int64 {
	if *nodeSimSeed != 0 {
		return []int64{*nodeSimSeed}
	}
	n := *nodeSimSeeds
	if n == 0 {
		n = 200
		if testing.Short() {
			n = 50
		}
	}
	seeds := make([]int64, n)
	for i := range seeds {
		seeds[i] = int64(i + 1)
	}
	return seeds
}

func simOptions(seed int64) nodeSimOptions {
	o := nodeSimOptions{seed: seed, nodes: 3, partitions: 2, steps: 500}
	if seed%4 == 0 {
		o.nodes = 5
	}
	if seed%5 == 0 {
		o.partitions = 8 // more groups than keys: idle partitions share every batch
	}
	o.leaseReads = seed%2 == 1
	if seed%3 == 0 {
		o.factor = o.nodes - 1 - (o.nodes-3)/2 // 2 of 3, 3 of 5: some clients ask a node that hosts none
	}
	return o
}

// TestNodeSimLinearizable runs the simulation over many seeds: crashes that lose unsynced
// writes (single nodes and whole-cluster power failures), paused nodes, partitions (also
// one-way), lossy, duplicating and reordering links, fsyncs that finish late. Every
// history must be linearizable, every index must hold one entry on all nodes, and writes
// must succeed again after healing (S1, S12, S14, S15, S16, S17, S18, S19, S22).
func TestNodeSimLinearizable(t *testing.T) {
	var ops, acked, unknown, reads int
	start := time.Now()
	seeds := nodeSimSeedList()
	for _, seed := range seeds {
		s := newNodeSim(t, simOptions(seed))
		if errs := s.run(); len(errs) > 0 {
			t.Fatalf("node simulation failed with seed %d:\n%s\nreplay: %s", seed, strings.Join(errs, "\n"), nodeSimReplay(seed, false))
		}
		ops += len(s.history)
		acked += s.acked
		unknown += s.unknown
		reads += s.reads
	}
	t.Logf("%d seeds, %d operations in histories (%d acknowledged, %d of them ReadBarrier reads, %d unknown) in %v", len(seeds), ops, acked, reads, unknown, time.Since(start).Round(time.Millisecond))
	if acked < len(seeds)*10 {
		t.Fatalf("only %d operations acknowledged over %d seeds: the workload made no progress", acked, len(seeds))
	}
}

// TestNodeSimIsDeterministic replays seeds and expects the same history.
func TestNodeSimIsDeterministic(t *testing.T) {
	for _, seed := range []int64{3, 4} {
		a := newNodeSim(t, simOptions(seed))
		a.run()
		b := newNodeSim(t, simOptions(seed))
		b.run()
		if a.fingerprint() != b.fingerprint() || len(a.history) == 0 {
			t.Fatalf("seed %d: two runs differ (%d vs %d operations)", seed, len(a.history), len(b.history))
		}
	}
}

// TestNodeSimCatchesAckBeforeFsync plants a bug (storage that acknowledges a save before
// it is durable, so the node acknowledges writes before their fsync) and requires the
// simulation to report it, through the linearizability checker, within a few seeds.
func TestNodeSimCatchesAckBeforeFsync(t *testing.T) {
	seeds := 60
	if *nodeSimSeed != 0 {
		seeds = 1
	}
	for k := 0; k < seeds; k++ {
		seed := int64(k + 1)
		if *nodeSimSeed != 0 {
			seed = *nodeSimSeed
		}
		o := simOptions(seed)
		o.ackBeforeFsync = true
		errs := newNodeSim(t, o).run()
		for _, e := range errs {
			if strings.Contains(e, "not linearizable") {
				t.Logf("seed %d: the linearizability checker caught the planted bug: %.400s", seed, e)
				return
			}
		}
		if len(errs) > 0 {
			t.Logf("seed %d: other checks caught the planted bug: %.200s", seed, errs[0])
		}
	}
	t.Fatalf("the planted bug (acknowledge before fsync) was not caught by the linearizability checker in %d seeds", seeds)
}
