package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kommander-go/kommander"
)

// The `bench` subcommand: the standard benchmark. A cluster runs in this process on
// loopback with real WALs; clients replicate fixed-size entries through each partition's
// leader for a fixed time after a warm-up. With -reads they call ReadBarrier instead, on the
// leader or on a follower, and the result counts the fsyncs the reads cost (none).

// benchOptions are the flags of `kommander bench`.
type benchOptions struct {
	nodes, parts, clients, size int
	duration, warmup, election  time.Duration
	transport                   kommander.TransportKind
	noSync, json                bool
	dir, cpuProfile, memProfile string
	trace                       string
	// reads is "" (clients write), "leader" or "follower" (clients call ReadBarrier there);
	// lease makes them call ReadBarrierLease, with lease reads on.
	reads string
	lease bool
	// idle measures what idle partitions cost instead (bench_idle.go); noQuiesce turns
	// quiescence off, failover stops a node after the idle time.
	idle, noQuiesce, failover bool
	// fsyncSamples is the number of samples of the disk probe run before the load (0: none).
	fsyncSamples int
	// memEvery, when positive, samples memory, goroutines and disk use at this interval
	// through the measured time (bench_memory.go).
	memEvery time.Duration
}

// benchResult is what one run measured; -json prints it as is.
type benchResult struct {
	Nodes           int     `json:"nodes"`
	Partitions      int     `json:"partitions"`
	Clients         int     `json:"clients"`
	Size            int     `json:"size_bytes"`
	Mode            string  `json:"mode"`
	Transport       string  `json:"transport"`
	Fsync           bool    `json:"fsync"`
	Unsafe          bool    `json:"unsafe_nosync"`
	GOMAXPROCS      int     `json:"gomaxprocs"`
	Seconds         float64 `json:"seconds"`
	Ops             uint64  `json:"ops"`
	Errors          uint64  `json:"errors"`
	OpsPerSec       float64 `json:"ops_per_sec"`
	MBPerSec        float64 `json:"mb_per_sec"`
	P50Ms           float64 `json:"p50_ms"`
	P99Ms           float64 `json:"p99_ms"`
	P999Ms          float64 `json:"p999_ms"`
	CPUSeconds      float64 `json:"cpu_seconds"`
	CPUPer10kOps    float64 `json:"cpu_seconds_per_10k_ops"`
	OpsPerCPUSecond float64 `json:"ops_per_cpu_second"`
	EntriesPerFsync float64 `json:"entries_per_fsync"`
	Fsyncs          uint64  `json:"fsyncs"`
	// MessagesPerOp is the Raft messages all nodes sent in the measured time per
	// operation: what each costs in writes, reads and steps beside the fsyncs.
	MessagesPerOp float64 `json:"messages_per_op"`
	// NodeEntriesPerFsync is entries per fsync on each node, n1 first: the leader of a
	// single partition batches differently from its followers.
	NodeEntriesPerFsync []float64 `json:"node_entries_per_fsync"`
	// LeaderEntriesPerFsync is NodeEntriesPerFsync of the node that led partition 0 at
	// the end: with one partition, the batching of the leader's own fsyncs.
	LeaderEntriesPerFsync float64 `json:"leader_entries_per_fsync"`
	// FsyncP50Ms is the median of a 4 KiB append plus fdatasync on the data directory's
	// disk, measured just before the load; P50OverFsync is the p50 latency over it.
	FsyncP50Ms   float64 `json:"fsync_p50_ms"`
	P50OverFsync float64 `json:"p50_over_fsync"`
	// QuorumFsyncP50Ms is the median time of as many such appends, on as many files, as a
	// quorum of the cluster has nodes, issued at once: the disk's floor under a commit
	// when the nodes' WALs share it. P50OverQuorumFsync is the latency p50 over it.
	QuorumFsyncP50Ms   float64 `json:"quorum_fsync_p50_ms"`
	P50OverQuorumFsync float64 `json:"p50_over_quorum_fsync"`
	// MemorySamples are the samples of -mem-every, the first at the start of the measured
	// time and the last at its end.
	MemorySamples []memSample `json:"memory_samples,omitempty"`
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o benchOptions
	fs.IntVar(&o.nodes, "nodes", 3, "nodes in the cluster")
	fs.IntVar(&o.parts, "partitions", 1, "partitions (Raft groups)")
	fs.IntVar(&o.clients, "clients", 64, "concurrent clients, each with one request in flight")
	fs.IntVar(&o.size, "size", 128, "payload bytes per entry")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured time")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured time before it")
	fs.DurationVar(&o.election, "election-timeout", kommander.DefaultElectionTimeout, "election timeout")
	transport := fs.String("transport", "tcp", "tcp or http")
	fs.BoolVar(&o.noSync, "nosync", false, "UNSAFE: skip fsync (the figures then say nothing about a durable setup)")
	fs.BoolVar(&o.json, "json", false, "print the result as one JSON object")
	fs.StringVar(&o.dir, "dir", "", "directory for the WALs (default: a new temporary directory, removed after)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the measured time to this file")
	fs.StringVar(&o.memProfile, "memprofile", "", "write a heap profile at the end of the measured time to this file")
	fs.StringVar(&o.reads, "reads", "", "measure linearizable reads instead of writes: ReadBarrier on the \"leader\" or on a \"follower\"")
	fs.BoolVar(&o.lease, "lease", false, "with -reads: ReadBarrierLease, lease reads on (see -lease-reads of kommander node)")
	fs.BoolVar(&o.idle, "idle", false, "measure idle partitions instead: CPU, memory and messages per node while nothing is written")
	fs.BoolVar(&o.noQuiesce, "no-quiesce", false, "turn quiescence off (idle partitions keep heartbeating)")
	fs.BoolVar(&o.failover, "failover", false, "with -idle: then stop the node that leads the most partitions and time the failover")
	fs.StringVar(&o.trace, "trace", "", "write a runtime execution trace of the measured time to this file (go tool trace)")
	fs.IntVar(&o.fsyncSamples, "fsync-samples", 200, "samples of the disk probe (4 KiB append + fdatasync) before the load; 0 skips it")
	fs.DurationVar(&o.memEvery, "mem-every", 0, "sample the live heap, RSS, goroutines and WAL bytes on disk at this interval through the measured time (0: off)")
	var m matrixOptions
	m.flags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if o.transport, err = parseTransport(*transport); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case o.fsyncSamples < 0:
		return errors.New("-fsync-samples must not be negative")
	case o.nodes < 1 || o.parts < 1 || o.clients < 1 || o.size < 0:
		return errors.New("-nodes, -partitions and -clients must be at least 1, -size at least 0")
	case o.duration <= 0 || o.warmup < 0:
		return errors.New("-duration must be positive and -warmup not negative")
	case o.memEvery < 0 || (o.memEvery > 0 && o.memEvery < 10*time.Millisecond):
		return errors.New("-mem-every must be 0 (off) or at least 10ms")
	case o.reads != "" && o.reads != "leader" && o.reads != "follower":
		return fmt.Errorf("-reads %q: want leader or follower", o.reads)
	case o.lease && o.reads == "":
		return errors.New("-lease needs -reads")
	case o.reads == "follower" && o.nodes < 2:
		return errors.New("-reads follower needs -nodes 2 or more")
	case o.idle && o.reads != "":
		return errors.New("-idle and -reads do not go together")
	case o.failover && (!o.idle || o.nodes < 3):
		return errors.New("-failover needs -idle and -nodes 3 or more")
	}
	if o.idle {
		return benchIdle(ctx, o, stdout)
	}
	if m.on {
		return runMatrix(ctx, o, m, stdout, stderr)
	}
	res, err := bench(ctx, o)
	if err != nil {
		return err
	}
	if o.json {
		b, _ := json.Marshal(res)
		_, err = fmt.Fprintf(stdout, "%s\n", b)
		return err
	}
	printBench(stdout, res)
	return nil
}

// bench runs one benchmark.
func bench(ctx context.Context, o benchOptions) (benchResult, error) {
	var fsyncP50, quorumP50 time.Duration
	var dataDir string
	nodes, cleanup, err := startBenchCluster(ctx, o, func(dir string) error {
		dataDir = dir
		if o.fsyncSamples > 0 && !o.noSync {
			var err error
			if fsyncP50, err = probeFsync(probeDir(dir), o.fsyncSamples, 1); err != nil || o.nodes < 2 {
				return err
			}
			quorumP50, err = probeFsync(probeDir(dir), o.fsyncSamples, o.nodes/2+1)
			return err
		}
		return nil
	})
	if err != nil {
		return benchResult{}, err
	}
	defer cleanup()

	var (
		measuring atomic.Bool
		stop      atomic.Bool
		errs      atomic.Uint64
		wg        sync.WaitGroup
		lat       = make([]latencyHistogram, o.clients)
	)
	payload := make([]byte, o.size)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	for c := 0; c < o.clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			p := c % o.parts
			var target *kommander.Node
			for !stop.Load() {
				if target == nil {
					if target = benchTarget(nodes, p, o.reads); target == nil {
						runtime.Gosched()
						continue
					}
				}
				rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				start := time.Now()
				var err error
				switch {
				case o.reads == "":
					_, err = target.Replicate(rctx, p, "b", payload)
				case o.lease:
					err = target.ReadBarrierLease(rctx, p)
				default:
					err = target.ReadBarrier(rctx, p)
				}
				d := time.Since(start)
				cancel()
				if err != nil {
					errs.Add(1)
					target = nil
					continue
				}
				if measuring.Load() {
					lat[c].add(d)
				}
			}
		}(c)
	}
	wait := func(d time.Duration) {
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
	wait(o.warmup)
	errs.Store(0)
	before := nodeMetrics(nodes)
	stopRecording, err := record(o)
	if err != nil {
		stop.Store(true)
		wg.Wait()
		return benchResult{}, err
	}
	cpu0, cpuOK := processCPUTime()
	t0 := time.Now()
	measuring.Store(true)
	var samples <-chan []memSample
	stopSampling := make(chan struct{})
	if o.memEvery > 0 {
		samples = sampleMemoryEvery(o.memEvery, dataDir, stopSampling)
	}
	wait(o.duration)
	measuring.Store(false)
	close(stopSampling)
	if o.memProfile != "" {
		if err := writeHeapProfile(o.memProfile); err != nil {
			stop.Store(true)
			wg.Wait()
			return benchResult{}, err
		}
	}
	stopRecording()
	elapsed := time.Since(t0)
	cpu1, _ := processCPUTime()
	after := nodeMetrics(nodes)
	stop.Store(true)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return benchResult{}, err
	}

	var memSamples []memSample
	if samples != nil {
		memSamples = <-samples
	}
	var all latencyHistogram
	for i := range lat {
		all.merge(&lat[i])
	}
	mode := "write"
	if o.reads != "" {
		mode = "read on the " + o.reads
		if o.lease {
			mode += " (lease)"
		}
	}
	res := benchResult{
		Nodes: o.nodes, Partitions: o.parts, Clients: o.clients, Size: o.size, Mode: mode,
		Transport: o.transport.String(), Fsync: !o.noSync, Unsafe: o.noSync,
		GOMAXPROCS: runtime.GOMAXPROCS(0), Seconds: elapsed.Seconds(),
		Ops: all.n, Errors: errs.Load(),
		P50Ms: all.quantileMs(0.50), P99Ms: all.quantileMs(0.99), P999Ms: all.quantileMs(0.999),
		MemorySamples: memSamples,
	}
	res.OpsPerSec = float64(res.Ops) / res.Seconds
	if o.reads == "" {
		res.MBPerSec = res.OpsPerSec * float64(o.size) / 1e6
	}
	if cpuOK {
		res.CPUSeconds = (cpu1 - cpu0).Seconds()
		if res.Ops > 0 && res.CPUSeconds > 0 {
			res.CPUPer10kOps = res.CPUSeconds / float64(res.Ops) * 10000
			res.OpsPerCPUSecond = float64(res.Ops) / res.CPUSeconds
		}
	}
	var fsyncs, saved, sent uint64
	for i := range after {
		f, e := after[i].Fsyncs-before[i].Fsyncs, after[i].EntriesSaved-before[i].EntriesSaved
		fsyncs, saved = fsyncs+f, saved+e
		sent += after[i].MessagesSent - before[i].MessagesSent
		res.NodeEntriesPerFsync = append(res.NodeEntriesPerFsync, ratio(e, f))
	}
	res.Fsyncs, res.EntriesPerFsync = fsyncs, ratio(saved, fsyncs)
	res.MessagesPerOp = ratio(sent, res.Ops)
	for i, n := range nodes {
		if n.node != nil && n.node == leaderOf(nodes, 0) {
			res.LeaderEntriesPerFsync = res.NodeEntriesPerFsync[i]
		}
	}
	if fsyncP50 > 0 {
		res.FsyncP50Ms = float64(fsyncP50) / float64(time.Millisecond)
		res.P50OverFsync = res.P50Ms / res.FsyncP50Ms
	}
	if quorumP50 > 0 {
		res.QuorumFsyncP50Ms = float64(quorumP50) / float64(time.Millisecond)
		res.P50OverQuorumFsync = res.P50Ms / res.QuorumFsyncP50Ms
	}
	return res, nil
}

// startBenchCluster starts the cluster a benchmark runs on, in o.dir or a new temporary
// directory, and waits until every partition has a leader. before, when not nil, runs on
// that directory before any node starts (the disk probe). cleanup stops the nodes that
// still run and removes the temporary directory.
func startBenchCluster(ctx context.Context, o benchOptions, before func(dir string) error) (nodes []*liveNode, cleanup func(), err error) {
	dir, removeDir := o.dir, func() {}
	if dir == "" {
		d, err := os.MkdirTemp("", "kommander-bench-")
		if err != nil {
			return nil, nil, err
		}
		dir, removeDir = d, func() { os.RemoveAll(d) }
	}
	if before != nil {
		if err := before(dir); err != nil {
			removeDir()
			return nil, nil, err
		}
	}
	specs := make([]nodeSpec, o.nodes)
	for i := range specs {
		specs[i] = nodeSpec{
			id: fmt.Sprintf("n%d", i+1), listener: "127.0.0.1:0",
			dataDir: fmt.Sprintf("%s/n%d", dir, i+1), parts: o.parts, transport: o.transport,
			noSync: o.noSync, sm: snapshotCounterSM{newCounterSM(o.parts)}, election: o.election,
			heartbeat: o.election / 10, lease: o.lease, noQuiesce: o.noQuiesce,
		}
	}
	nodes, err = startCluster(ctx, specs)
	if err != nil {
		removeDir()
		return nil, nil, err
	}
	cleanup = func() {
		for _, n := range nodes {
			if n.node != nil {
				_ = n.stop(context.Background())
			}
		}
		removeDir()
	}
	// Thousands of partitions take a while to elect their leaders.
	wctx, cancel := context.WithTimeout(ctx, 10*o.election+time.Duration(o.parts)*time.Millisecond+10*time.Second)
	_, err = waitForLeaders(wctx, nodes, o.parts)
	cancel()
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	return nodes, cleanup, nil

}

// record starts the CPU profile and the execution trace that o asks for, and returns the
// function that stops them and closes their files.
func record(o benchOptions) (stop func(), err error) {
	var stops []func()
	stop = func() {
		for _, f := range slices.Backward(stops) {
			f()
		}
	}
	start := func(path string, begin func(io.Writer) error, end func()) error {
		if path == "" {
			return nil
		}
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		if err := begin(f); err != nil {
			f.Close()
			return err
		}
		stops = append(stops, func() { end(); f.Close() })
		return nil
	}
	if err := start(o.cpuProfile, pprof.StartCPUProfile, pprof.StopCPUProfile); err != nil {
		stop()
		return nil, err
	}
	if err := start(o.trace, trace.Start, trace.Stop); err != nil {
		stop()
		return nil, err
	}
	return stop, nil
}

// benchTarget returns the node clients of partition p call: its leader, or with reads
// "follower" a running node that does not lead it; nil while there is none.
func benchTarget(nodes []*liveNode, p int, reads string) *kommander.Node {
	leader := leaderOf(nodes, p)
	if reads != "follower" || leader == nil {
		return leader
	}
	for _, n := range nodes {
		if n.node != nil && n.node != leader {
			return n.node
		}
	}
	return nil
}

// leaderOf returns the running node that leads partition p, or nil.
func leaderOf(nodes []*liveNode, p int) *kommander.Node {
	for _, n := range nodes {
		if n.node != nil && n.node.IsLeader(p) {
			return n.node
		}
	}
	return nil
}

// nodeMetrics returns the metrics of every node, in order (zero for a node not running).
func nodeMetrics(nodes []*liveNode) []kommander.Metrics {
	ms := make([]kommander.Metrics, len(nodes))
	for i, n := range nodes {
		if n.node != nil {
			ms[i] = n.node.Metrics()
		}
	}
	return ms
}

// ratio is a/b, or 0 when b is 0.
func ratio(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func printBench(w io.Writer, r benchResult) {
	sync := "fsync on"
	if r.Unsafe {
		sync = "fsync OFF (UNSAFE -nosync: not a durable configuration)"
	}
	what := fmt.Sprintf("%d-byte entries", r.Size)
	if r.Mode != "write" {
		what = "linearizable reads: ReadBarrier " + r.Mode
	}
	fmt.Fprintf(w, "kommander bench: %d nodes, %d partitions, %d clients, %s, %s, %s, GOMAXPROCS %d\n",
		r.Nodes, r.Partitions, r.Clients, what, r.Transport, sync, r.GOMAXPROCS)
	fmt.Fprintf(w, "  measured     %.1f s, %d ops, %d errors\n", r.Seconds, r.Ops, r.Errors)
	if r.Mode == "write" {
		fmt.Fprintf(w, "  throughput   %.0f ops/s, %.2f MB/s\n", r.OpsPerSec, r.MBPerSec)
	} else {
		fmt.Fprintf(w, "  throughput   %.0f reads/s\n", r.OpsPerSec)
	}
	fmt.Fprintf(w, "  latency      p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms\n", r.P50Ms, r.P99Ms, r.P999Ms)
	if r.FsyncP50Ms > 0 {
		fmt.Fprintf(w, "  disk         fsync p50 %.3f ms (4 KiB append + fdatasync, before the load); latency p50 is %.2fx that\n", r.FsyncP50Ms, r.P50OverFsync)
	}
	if r.QuorumFsyncP50Ms > 0 {
		fmt.Fprintf(w, "               %d such fsyncs at once on %d files (a quorum's WALs on this disk): p50 %.3f ms; latency p50 is %.2fx that\n",
			r.Nodes/2+1, r.Nodes/2+1, r.QuorumFsyncP50Ms, r.P50OverQuorumFsync)
	}
	if r.OpsPerCPUSecond > 0 {
		fmt.Fprintf(w, "  cpu          %.3f s per 10,000 ops (%.0f ops per CPU-second; whole process: %d nodes and the clients)\n",
			r.CPUPer10kOps, r.OpsPerCPUSecond, r.Nodes)
	} else {
		fmt.Fprintf(w, "  cpu          not measured on this platform\n")
	}
	fmt.Fprintf(w, "  batching     %.1f entries per fsync, %d fsyncs in the measured time (all nodes); per node:", r.EntriesPerFsync, r.Fsyncs)
	for i, e := range r.NodeEntriesPerFsync {
		fmt.Fprintf(w, " n%d %.1f", i+1, e)
	}
	fmt.Fprintf(w, "; leader of partition 0: %.1f\n", r.LeaderEntriesPerFsync)
	fmt.Fprintf(w, "  messages     %.2f Raft messages per operation (all nodes)\n", r.MessagesPerOp)
	for _, m := range r.MemorySamples {
		fmt.Fprintf(w, "  memory       at %6.0f s: live heap %.1f MB, RSS %.1f MB, %d goroutines, %.1f MB on disk\n",
			m.Seconds, m.HeapLiveMB, m.RSSMB, m.Goroutines, m.DiskMB)
	}
}
