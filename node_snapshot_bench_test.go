package kommander

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// These benchmarks measure what snapshots are for, by hand (each runs once):
//
//	go test -run XXX -bench 'BenchmarkSnapshot' -benchtime 1x -timeout 1h .
//
// BenchmarkSnapshotRestart writes entries of 100-byte values over 16 partitions to a node
// with a real WAL (fsynced) in a temporary directory, with and without snapshots, and
// reports the data directory's size and the time a restart takes until the node applied
// again what it had. BenchmarkSnapshotCatchUp reports the time a follower 100,000 entries
// behind takes to catch up by snapshot.

func BenchmarkSnapshotRestart(b *testing.B) {
	for _, entries := range []int{100000, 1000000, 10000000} {
		for _, snap := range []bool{false, true} {
			b.Run(fmt.Sprintf("entries=%d/snapshots=%v", entries, snap), func(b *testing.B) {
				for range b.N {
					benchRestart(b, entries, snap)
				}
			})
		}
	}
}

func benchRestart(b *testing.B, entries int, snapshots bool) {
	const partitions = 16
	c := newNodeCluster(b, 1, partitions, false)
	c.dataDirs = []string{b.TempDir()}
	c.stores[0] = nil
	if snapshots {
		c.useSnapshots(DefaultSnapshotEntries, DefaultSnapshotTrailing)
	}
	c.startAll()
	defer c.stopAll()
	stop := c.pump()
	c.leaders()
	value := strings.Repeat("v", 100)
	for done := 0; done < entries/partitions; done += 1000 {
		for p := range partitions {
			cmds := make([]Command, 1000)
			for j := range cmds {
				cmds[j] = Command{Type: "put", Data: put(fmt.Sprint("k", (done+j)%10000), value)}
			}
			if _, err := c.nodes[0].ReplicateBatch(ctxT(c.t), p, cmds); err != nil {
				b.Fatal(err)
			}
		}
	}
	disk := treeBytes(c.t, c.dataDirs[0])
	snaps := treeBytes(c.t, filepath.Join(c.dataDirs[0], "snapshots"))
	stop()
	restart := c.restartTime()
	b.ReportMetric(float64(disk)/(1<<20), "MB-on-disk")
	b.ReportMetric(float64(snaps)/(1<<20), "MB-snapshots")
	b.ReportMetric(restart.Seconds(), "s-restart")
}

func BenchmarkSnapshotCatchUp(b *testing.B) {
	for range b.N {
		c := newNodeCluster(b, 3, 1, false)
		c.useSnapshots(DefaultSnapshotEntries, DefaultSnapshotTrailing)
		c.startAll()
		stop := c.pump()
		lead := c.leaders()[0]
		lag := (lead + 1) % 3
		c.stop(lag)
		c.writeBatches(lead, 0, 100000, "k")
		start := time.Now()
		c.start(lag)
		c.waitCaughtUp(lead, 0)
		b.ReportMetric(time.Since(start).Seconds(), "s-catch-up")
		stop()
		c.stopAll()
	}
}
