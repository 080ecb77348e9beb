package kommander

import (
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

// benchGroup is a 3-node group driven in one goroutine with in-memory storage and no I/O:
// what the benchmarks measure is the Raft core itself.
type benchGroup struct {
	nodes []*testNode
	byID  map[string]*testNode
	queue []Message
	next  []Message
	msgs  int
}

func newBenchGroup(b *testing.B) *benchGroup {
	g := &benchGroup{byID: map[string]*testNode{}}
	for i, id := range voters3 {
		cfg := testConfig(id, voters3)
		cfg.rand = rand.New(rand.NewPCG(uint64(i), 1))
		cfg.checkQuorum, cfg.preVote = true, true
		n := newTestNode(b, cfg, nil)
		g.nodes = append(g.nodes, n)
		g.byID[id] = n
	}
	for g.leader() == nil {
		for _, n := range g.nodes {
			n.r.tick()
		}
		g.pass(b)
	}
	return g
}

func (g *benchGroup) leader() *testNode {
	for _, n := range g.nodes {
		if n.r.role == roleLeader {
			return n
		}
	}
	return nil
}

// pass runs raftReady rounds and delivers messages until the group is quiet, like the node's
// loop: send, persist, send after persist, apply, advance.
func (g *benchGroup) pass(b *testing.B) {
	for {
		for _, n := range g.nodes {
			for n.r.hasReady() {
				rd := n.r.ready()
				g.queue = append(g.queue, rd.Messages...)
				n.log.save(rd)
				g.queue = append(g.queue, rd.MessagesAfterPersist...)
				n.r.advance(rd)
			}
		}
		if len(g.queue) == 0 {
			return
		}
		g.queue, g.next = g.next[:0], g.queue
		for i := range g.next {
			if err := g.byID[g.next[i].To].r.step(g.next[i]); err != nil {
				b.Fatal(err)
			}
			g.msgs++
		}
		clear(g.next)
	}
}

func benchmarkRaftGroup(b *testing.B, batch int) {
	g := newBenchGroup(b)
	l := g.leader()
	data := make([]byte, 128)
	prop := make([]Entry, 1)
	b.ReportAllocs()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	mallocs := ms.Mallocs
	b.ResetTimer()
	start := time.Now()
	g.msgs = 0
	for i := 0; i < b.N; i++ {
		prop[0] = Entry{ID: uint64(i + 1), Type: "set", Data: data}
		if _, _, err := l.r.propose(prop); err != nil {
			b.Fatal(err)
		}
		if (i+1)%batch == 0 {
			g.pass(b)
			if (i+1)%1024 < batch {
				// Keep the stores small, as snapshots would: the benchmark measures the
				// core, not a growing in-memory log.
				for _, n := range g.nodes {
					n.log.compact(n.r.log.applied - min(n.r.log.applied, 64))
				}
			}
		}
	}
	g.pass(b)
	elapsed := time.Since(start)
	b.StopTimer()
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.Mallocs-mallocs)/float64(b.N), "allocs/proposal")
	if l.r.log.committed < uint64(b.N) {
		b.Fatalf("committed %d of %d", l.r.log.committed, b.N)
	}
	b.ReportMetric(float64(g.msgs)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "entries/s")
}

// BenchmarkRaftThreeNodesUnbatched: one proposal per loop pass; every entry costs a round of
// appends, acks, persistence and apply on all three nodes.
func BenchmarkRaftThreeNodesUnbatched(b *testing.B) { benchmarkRaftGroup(b, 1) }

// BenchmarkRaftThreeNodesBatch64: 64 proposals per loop pass, as the node batches them.
func BenchmarkRaftThreeNodesBatch64(b *testing.B) { benchmarkRaftGroup(b, 64) }
