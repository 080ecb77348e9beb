package kommander

import (
	"context"
	"runtime"
	"testing"
)

// These benchmarks measure memory rather than time: what an idle partition and a pending
// proposal cost a node, as heap in use after a collection. Run them with
// go test -run '^$' -bench 'Memory' -benchtime 1x .

// heapInUse returns the heap in use after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// BenchmarkIdlePartitionMemory reports the heap each quiesced partition costs each node of
// a three-node cluster.
func BenchmarkIdlePartitionMemory(b *testing.B) {
	const partitions = 2000
	for range b.N {
		before := heapInUse()
		c := newNodeCluster(b, 3, partitions, false)
		c.startAll()
		c.leaders()
		c.waitFor("every partition quiesced", 1000, func() bool { return c.allQuiesced() })
		for range 3 { // the sweep at the next ticks gives back the idle buffers
			c.clock.Advance(c.tick)
		}
		after := heapInUse()
		b.ReportMetric(float64(after-before)/3/partitions, "bytes/partition")
		c.stopAll()
	}
}

// BenchmarkPendingProposalMemory reports the heap a proposal costs its leader while it
// waits for a quorum that never comes (its followers are cut off): the proposal, its
// waiter and its entry in the log. The caller's goroutine stack is not counted.
func BenchmarkPendingProposalMemory(b *testing.B) {
	const proposals = 2000
	for range b.N {
		c := newNodeCluster(b, 3, 1, false)
		c.startAll()
		lead := c.leaders()[0]
		for i, id := range c.ids {
			if i != lead {
				c.net.Isolate(id)
			}
		}
		n := c.nodes[lead]
		ctx, cancel := context.WithCancel(context.Background())
		before := heapInUse()
		data := []byte("0123456789abcdef0123456789abcdef") // 32 bytes, shared
		for range proposals {
			go func() { _, _ = n.Replicate(ctx, 0, "put", data) }()
		}
		c.await("every proposal pending", func() bool { return n.Metrics().PendingProposals >= proposals })
		c.clock.Advance(c.tick) // handed to Raft, appended and saved
		after := heapInUse()
		b.ReportMetric(float64(after-before)/proposals, "bytes/proposal")
		cancel()
		c.stopAll()
	}
}

// BenchmarkReplicateBesideIdlePartitions measures one write at a time to one partition of
// a three-node cluster that hosts 5,000 quiesced ones beside it: what each commit's wake
// of the applier costs must not grow with the partitions that have nothing to apply.
func BenchmarkReplicateBesideIdlePartitions(b *testing.B) {
	const partitions = 5000
	c := newNodeCluster(b, 3, partitions, false)
	c.startAll()
	c.leaders()
	c.waitFor("every partition quiesced", 1000, func() bool { return c.allQuiesced() })
	p := 0
	var n *Node
	for _, node := range c.nodes {
		if node.IsLeader(p) {
			n = node
		}
	}
	data := make([]byte, 128)
	b.ResetTimer()
	for range b.N {
		if _, err := n.Replicate(context.Background(), p, "put", data); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	c.stopAll()
}
