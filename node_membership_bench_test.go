package kommander

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkAddNodeCatchUp100k measures AddNode on a partition whose log holds 100,000
// entries: from the call to a committed promotion, the time the new node takes to receive
// the log as a learner and catch up within MaxLearnerLag (in-memory network and storage,
// the fake clock pumped as fast as the loops take it). It reports the wall time per
// AddNode and the fake time it spanned.
//
//	go test -run '^$' -bench BenchmarkAddNodeCatchUp100k -benchtime 1x .
func BenchmarkAddNodeCatchUp100k(b *testing.B) {
	const entries, batch = 100_000, 1000
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		c := newNodeCluster(b, 4, 1, false)
		c.cfg = func(i int, cfg *Config) {
			if i < 3 {
				cfg.Peers = cfg.Peers[:3]
			} else {
				cfg.Join = true
			}
		}
		for j := 0; j < 3; j++ {
			c.start(j)
		}
		lead := c.leaders()[0]
		stop := c.pump()
		cmds := make([]Command, batch)
		for k := 0; k < entries; k += batch {
			for j := range cmds {
				cmds[j] = Command{Type: "put", Data: put(fmt.Sprint(k+j), "0123456789abcdef0123456789abcdef")}
			}
			if _, err := c.nodes[lead].ReplicateBatch(ctxT(b), 0, cmds); err != nil {
				b.Fatalf("fill: %v", err)
			}
		}
		c.start(3)
		b.StartTimer()
		start, fake := time.Now(), c.clock.Now()
		if err := c.nodes[0].AddNode(ctxT(b), "n4", "n4"); err != nil {
			b.Fatalf("AddNode: %v", err)
		}
		took, fakeTook := time.Since(start), c.clock.Now().Sub(fake)
		b.StopTimer()
		if last := c.nodes[3].Status().Partitions[0].LastIndex; last+uint64(DefaultMaxLearnerLag) < entries {
			b.Fatalf("n4 became a voter with a log that ends at %d of %d entries", last, entries)
		}
		stop()
		b.ReportMetric(float64(took.Milliseconds()), "ms/addnode")
		b.ReportMetric(float64(fakeTook/c.tick), "ticks/addnode")
		c.stopAll()
	}
}
