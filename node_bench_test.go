package kommander

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"
)

// nopSM applies nothing: the benchmarks measure the node, not a state machine.
type nopSM struct{}

func (nopSM) Apply(int, []Entry, []any) error { return nil }
func (nopSM) Applied(int) uint64              { return 0 }

// BenchmarkNodeReplicate measures the whole write path: 3 nodes in one process over the
// memory network, each with a real WAL (fsync on) in a temporary directory, 128-byte
// entries, clients calling Replicate on each partition's leader. It reports ops/s,
// latency percentiles, how many fsyncs each saved entry cost (below 1 means batching), the
// Raft messages sent per operation (all nodes) and
// operations per CPU-second of the whole process (three nodes, clients, WALs).
// The three WALs share one disk, so the leader's and a follower's fsyncs, which overlap on
// separate machines, queue behind each other here: a lone client waits about two fsyncs.
//
//	go test -run '^$' -bench BenchmarkNodeReplicate -benchtime 20000x .
func BenchmarkNodeReplicate(b *testing.B) {
	for _, partitions := range []int{1, 16} {
		for _, clients := range []int{1, 64} {
			b.Run(fmt.Sprintf("partitions=%d/clients=%d", partitions, clients), func(b *testing.B) {
				benchReplicate(b, partitions, clients)
			})
		}
	}
}

// BenchmarkNodeReplicateTCP is BenchmarkNodeReplicate over the TCP transport on
// 127.0.0.1, for one partition.
//
//	go test -run '^$' -bench BenchmarkNodeReplicateTCP -benchtime 20000x .
func BenchmarkNodeReplicateTCP(b *testing.B) {
	for _, clients := range []int{1, 64} {
		b.Run(fmt.Sprintf("partitions=1/clients=%d", clients), func(b *testing.B) {
			benchReplicateOver(b, 1, clients, true)
		})
	}
}

func benchReplicate(b *testing.B, partitions, clients int) {
	benchReplicateOver(b, partitions, clients, false)
}

func benchReplicateOver(b *testing.B, partitions, clients int, tcp bool) {
	net := NewMemoryNetwork(1)
	ids := []string{"n1", "n2", "n3"}
	transports := make([]Transport, len(ids))
	var peers []Peer
	for i, id := range ids {
		addr := id
		if tcp {
			cfg := transportTestConfig(id)
			cfg.KeepAlive, cfg.PeerTimeout = time.Second, 10*time.Second
			t, err := NewTCPTransport(cfg)
			if err != nil {
				b.Fatal(err)
			}
			transports[i], addr = t, t.Addr()
		} else {
			transports[i] = net.Transport(id)
		}
		peers = append(peers, Peer{ID: id, Addr: addr})
	}
	nodes := make([]*Node, len(ids))
	for i, id := range ids {
		n, err := NewNode(Config{
			NodeID: id, DataDir: b.TempDir(), Partitions: partitions, Peers: peers,
			StateMachine: nopSM{}, CustomTransport: transports[i], Logger: discardLogger(),
			ElectionTimeout: 500 * time.Millisecond, HeartbeatInterval: 50 * time.Millisecond,
			MaxPendingProposals: 1 << 16,
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := n.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		nodes[i] = n
	}
	defer func() {
		for _, n := range nodes {
			_ = n.Stop(context.Background())
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	leaderOf := func(p int) *Node {
		for {
			l, err := nodes[0].WaitForLeader(ctx, p)
			if err != nil {
				b.Fatal(err)
			}
			for i, id := range ids {
				if id == l && nodes[i].IsLeader(p) {
					return nodes[i]
				}
			}
		}
	}
	leaders := make([]*Node, partitions)
	for p := range leaders {
		leaders[p] = leaderOf(p)
	}
	payload := make([]byte, 128)
	before := make([]Metrics, len(nodes))
	for i, n := range nodes {
		before[i] = n.Metrics()
	}
	lat := make([][]time.Duration, clients)
	var wg sync.WaitGroup
	var next sync.Mutex
	issued := 0
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), processCPU()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ; k++ {
				next.Lock()
				if issued >= b.N {
					next.Unlock()
					return
				}
				issued++
				next.Unlock()
				p := (c + k*clients) % partitions
				t0 := time.Now()
				if _, err := leaders[p].Replicate(ctx, p, "put", payload); err != nil {
					b.Error(err)
					return
				}
				lat[c] = append(lat[c], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed, cpu := time.Since(start), processCPU()-cpu0
	b.StopTimer()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	if len(all) == 0 {
		return
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	var fsyncs, saved, sent uint64
	for i, n := range nodes {
		m := n.Metrics()
		fsyncs += m.Fsyncs - before[i].Fsyncs
		saved += m.EntriesSaved - before[i].EntriesSaved
		sent += m.MessagesSent - before[i].MessagesSent
	}
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "ops/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
	if saved > 0 {
		b.ReportMetric(float64(fsyncs)/float64(saved), "fsyncs/entry")
	}
	// Raft messages of all three nodes per operation.
	b.ReportMetric(float64(sent)/float64(len(all)), "msgs/op")
	if cpu > 0 {
		// The CPU of the whole process: all three nodes, the clients and the WALs.
		b.ReportMetric(float64(len(all))/cpu.Seconds(), "ops/cpu-s")
	}
}

// BenchmarkPartitionQueues measures a partition's queues on the commit path in steady
// state, 64 proposals per pass: admitted, handed to Raft (dequeued), their entries queued
// for the applier and taken by it. Its allocs/op must stay 0: the queues keep their arrays
// from pass to pass.
func BenchmarkPartitionQueues(b *testing.B) {
	const perPass = 64
	p := newPartition(0, nil, HardState{}, 0)
	prs := make([]*proposal, perPass)
	for i := range prs {
		prs[i] = &proposal{cmds: []Command{{Type: "put", Data: make([]byte, 128)}}}
	}
	ents := make([]Entry, perPass)
	var spare []Entry
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		p.mu.Lock()
		for _, pr := range prs {
			if err := p.admit(pr, 1<<20); err != nil {
				b.Fatal(err)
			}
		}
		p.dequeue(len(p.queued()))
		p.pending = 0
		p.mu.Unlock()
		p.pushApply(ents)
		spare, _, _ = p.popApply(spare[:0], maxApplyBatch)
	}
}
