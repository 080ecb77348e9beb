package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"time"
)

// `kommander bench -idle`: what idle partitions cost. The cluster starts, every partition
// elects a leader, and then nothing is written for the measured time: the figures are the
// CPU, memory and messages the nodes spend doing nothing. After it, one write goes to an
// idle partition (it must commit at once, without waiting for a timer), and with
// -failover the node that leads the most partitions stops, and the time until every one
// of its partitions has a new leader is measured. All nodes run in this process: CPU and
// memory per node are the process's divided by the nodes.

// idleWrites is how many idle partitions get one write each after the idle time.
const idleWrites = 21

// idleResult is what one idle run measured; -json prints it as is.
type idleResult struct {
	Nodes           int     `json:"nodes"`
	Partitions      int     `json:"partitions"`
	Quiescence      bool    `json:"quiescence"`
	Seconds         float64 `json:"seconds"`
	QuiescedStart   float64 `json:"quiesced_fraction_start"`
	QuiescedEnd     float64 `json:"quiesced_fraction_end"`
	CPUPercentNode  float64 `json:"cpu_percent_per_node"`
	RSSMBNode       float64 `json:"rss_mb_per_node"`
	RSSFreedMBNode  float64 `json:"rss_mb_per_node_after_free_os_memory"`
	HeapMBNode      float64 `json:"heap_mb_per_node"`
	HeapBytesPart   float64 `json:"heap_bytes_per_partition_replica"`
	MsgsPerMinNode  float64 `json:"messages_per_minute_per_node"`
	WriteMs         float64 `json:"idle_write_ms"` // the median
	WriteMaxMs      float64 `json:"idle_write_max_ms"`
	WriteFirstMs    float64 `json:"idle_write_first_ms"`
	Writes          int     `json:"idle_writes"`
	FailoverMs      float64 `json:"failover_ms,omitempty"`
	FailoverParts   int     `json:"failover_partitions,omitempty"`
	ElectionTimeout float64 `json:"election_timeout_ms"`
}

// benchIdle runs the idle benchmark.
func benchIdle(ctx context.Context, o benchOptions, stdout io.Writer) error {
	nodes, cleanup, err := startBenchCluster(ctx, o, nil)
	if err != nil {
		return err
	}
	defer cleanup()
	wait := func(d time.Duration) {
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
	wait(o.warmup)

	res := idleResult{Nodes: o.nodes, Partitions: o.parts, Quiescence: !o.noQuiesce,
		ElectionTimeout: float64(o.election) / float64(time.Millisecond)}
	res.QuiescedStart = quiescedFraction(nodes)
	sent0 := messagesSent(nodes)
	stopProfile, err := startCPUProfile(o.cpuProfile)
	if err != nil {
		return err
	}
	cpu0, cpuOK := processCPUTime()
	t0 := time.Now()
	wait(o.duration)
	elapsed := time.Since(t0)
	cpu1, _ := processCPUTime()
	stopProfile()
	sent1 := messagesSent(nodes)
	if err := ctx.Err(); err != nil {
		return err
	}
	res.Seconds = elapsed.Seconds()
	res.QuiescedEnd = quiescedFraction(nodes)
	nn := float64(o.nodes)
	if cpuOK {
		res.CPUPercentNode = (cpu1 - cpu0).Seconds() / res.Seconds / nn * 100
	}
	if rss, ok := processRSS(); ok {
		res.RSSMBNode = float64(rss) / nn / (1 << 20)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.HeapMBNode = float64(ms.HeapInuse) / nn / (1 << 20)
	res.HeapBytesPart = float64(ms.HeapInuse) / nn / float64(o.parts)
	res.MsgsPerMinNode = float64(sent1-sent0) / nn / elapsed.Minutes()
	// What the process holds once the runtime returned the memory it keeps free (the
	// election storm of the start leaves much of it): the RSS an idle node settles to.
	debug.FreeOSMemory()
	if rss, ok := processRSS(); ok {
		res.RSSFreedMBNode = float64(rss) / nn / (1 << 20)
	}
	if o.memProfile != "" {
		if err := writeHeapProfile(o.memProfile); err != nil {
			return err
		}
	}

	// One write to each of a few idle partitions, one after the other, through their
	// leaders: the first runs right after the collection above, cold.
	var writes []float64
	for i := 0; i < min(idleWrites, o.parts); i++ {
		p := (i*o.parts/idleWrites + o.parts/(2*idleWrites)) % o.parts
		leader := leaderOf(nodes, p)
		if leader == nil {
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, 10*o.election)
		start := time.Now()
		_, err := leader.Replicate(wctx, p, "b", []byte("wake"))
		cancel()
		if err != nil {
			return fmt.Errorf("write to idle partition %d: %w", p, err)
		}
		writes = append(writes, float64(time.Since(start))/float64(time.Millisecond))
	}
	if len(writes) > 0 {
		res.WriteFirstMs = writes[0]
		slices.Sort(writes)
		res.WriteMs, res.WriteMaxMs, res.Writes = writes[len(writes)/2], writes[len(writes)-1], len(writes)
	}
	if o.failover {
		if err := idleFailover(ctx, nodes, o, &res); err != nil {
			return err
		}
	}
	if o.json {
		b, _ := json.Marshal(res)
		_, err := fmt.Fprintf(stdout, "%s\n", b)
		return err
	}
	printIdle(stdout, res)
	return nil
}

// idleFailover stops the node that leads the most partitions and measures the time until
// every one of them has a new leader on the others.
func idleFailover(ctx context.Context, nodes []*liveNode, o benchOptions, res *idleResult) error {
	victim, most := 0, -1
	for i, n := range nodes {
		k := 0
		for p := 0; p < o.parts; p++ {
			if n.node.IsLeader(p) {
				k++
			}
		}
		if k > most {
			victim, most = i, k
		}
	}
	res.FailoverParts = most
	start := time.Now()
	if err := nodes[victim].stop(ctx); err != nil {
		return fmt.Errorf("stop %s: %w", nodes[victim].spec.id, err)
	}
	nodes[victim].node = nil
	wctx, cancel := context.WithTimeout(ctx, 20*o.election+10*time.Second)
	defer cancel()
	if _, err := waitForLeaders(wctx, nodes, o.parts); err != nil {
		return fmt.Errorf("failover: %w", err)
	}
	res.FailoverMs = float64(time.Since(start)) / float64(time.Millisecond)
	return nil
}

// quiescedFraction returns the fraction of partition replicas that are quiesced.
func quiescedFraction(nodes []*liveNode) float64 {
	total, quiet := 0, 0
	for _, n := range nodes {
		if n.node == nil {
			continue
		}
		for _, ps := range n.node.Status().Partitions {
			total++
			if ps.Quiesced {
				quiet++
			}
		}
	}
	if total == 0 {
		return 0
	}
	return float64(quiet) / float64(total)
}

// messagesSent sums the messages the running nodes handed to their transports.
func messagesSent(nodes []*liveNode) uint64 {
	var sent uint64
	for _, n := range nodes {
		if n.node != nil {
			sent += n.node.Metrics().MessagesSent
		}
	}
	return sent
}

func printIdle(w io.Writer, r idleResult) {
	q := "on"
	if !r.Quiescence {
		q = "OFF"
	}
	fmt.Fprintf(w, "kommander bench -idle: %d nodes, %d partitions, quiescence %s, election timeout %.0f ms, GOMAXPROCS %d\n",
		r.Nodes, r.Partitions, q, r.ElectionTimeout, runtime.GOMAXPROCS(0))
	fmt.Fprintf(w, "  measured     %.1f s idle; quiesced replicas %.1f%% at the start, %.1f%% at the end\n",
		r.Seconds, 100*r.QuiescedStart, 100*r.QuiescedEnd)
	fmt.Fprintf(w, "  per node     %.2f%% CPU (of one core), %.0f messages per minute\n", r.CPUPercentNode, r.MsgsPerMinNode)
	fmt.Fprintf(w, "  memory       %.0f MB RSS per node (%.0f MB once the runtime returned its free memory), %.0f MB heap in use (%.0f bytes per partition)\n",
		r.RSSMBNode, r.RSSFreedMBNode, r.HeapMBNode, r.HeapBytesPart)
	fmt.Fprintf(w, "  idle write   p50 %.2f ms, max %.2f ms, first %.2f ms (%d Replicates, one each to as many idle partitions, on their leaders)\n",
		r.WriteMs, r.WriteMaxMs, r.WriteFirstMs, r.Writes)
	if r.FailoverParts > 0 {
		fmt.Fprintf(w, "  failover     %.0f ms until the %d partitions of the stopped node had new leaders (%.1f election timeouts)\n",
			r.FailoverMs, r.FailoverParts, r.FailoverMs/r.ElectionTimeout)
	}
	fmt.Fprintf(w, "  (all nodes run in this process: CPU and memory per node are the process's divided by the nodes)\n")
}

// startCPUProfile starts a CPU profile into path ("" for none) and returns what stops it.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// writeHeapProfile writes a heap profile to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return pprof.WriteHeapProfile(f)
}
