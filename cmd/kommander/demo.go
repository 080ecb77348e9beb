package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kommander-go/kommander"
)

// The `demo` subcommand: a cluster in this process on loopback, with real WALs and a real
// transport, taken through elections, replication under load, the loss of a leader node,
// its restart and catch-up.

// demoOptions are the flags of `kommander demo`.
type demoOptions struct {
	nodes, parts, clients, size int
	replicate, election         time.Duration
	transport                   kommander.TransportKind
	dir                         string
	noSync, verbose             bool
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o demoOptions
	fs.IntVar(&o.nodes, "nodes", 3, "nodes in the cluster (at least 3, so one can fail)")
	fs.IntVar(&o.parts, "partitions", 8, "partitions (Raft groups)")
	fs.IntVar(&o.clients, "clients", 16, "concurrent clients writing")
	fs.IntVar(&o.size, "size", 128, "payload bytes per entry")
	fs.DurationVar(&o.replicate, "duration", 4*time.Second, "how long to replicate before a leader node is stopped")
	fs.DurationVar(&o.election, "election-timeout", kommander.DefaultElectionTimeout, "election timeout (failover takes one to two of them)")
	transport := fs.String("transport", "tcp", "tcp or http")
	fs.StringVar(&o.dir, "dir", "", "directory for the WALs (default: a new temporary directory, removed at the end)")
	fs.BoolVar(&o.noSync, "nosync", false, "UNSAFE: skip fsync")
	fs.BoolVar(&o.verbose, "v", false, "log the nodes' events to stderr")
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
	case o.nodes < 3:
		return errors.New("-nodes must be at least 3: with fewer, losing one node loses the quorum")
	case o.parts < 1 || o.clients < 1 || o.size < 0 || o.replicate <= 0 || o.election <= 0:
		return errors.New("-partitions, -clients, -duration and -election-timeout must be positive")
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if o.verbose {
		logger = slog.New(slog.NewTextHandler(stderr, nil))
	}
	d := &demo{o: o, out: stdout, log: logger}
	return d.run(ctx)
}

// demo is one run of the demo.
type demo struct {
	o     demoOptions
	out   io.Writer
	log   *slog.Logger
	dir   string
	start time.Time

	mu    sync.Mutex // guards nodes[i].node and sms[i] while clients run
	nodes []*liveNode
	sms   []*counterSM

	acked, failed atomic.Uint64
	stopClients   atomic.Bool
	clientsDone   sync.WaitGroup
}

func (d *demo) printf(format string, args ...any) { fmt.Fprintf(d.out, format, args...) }

func (d *demo) run(ctx context.Context) (err error) {
	d.start = time.Now()
	d.dir = d.o.dir
	if d.dir == "" {
		if d.dir, err = os.MkdirTemp("", "kommander-demo-"); err != nil {
			return err
		}
		defer func() {
			if rmErr := os.RemoveAll(d.dir); rmErr == nil {
				d.printf("Removed %s.\n", d.dir)
			} else if err == nil {
				err = rmErr
			}
		}()
	}
	sync := "fsync on every batch"
	if d.o.noSync {
		sync = "fsync OFF (UNSAFE -nosync)"
	}
	d.printf("kommander demo: %d nodes x %d partitions on 127.0.0.1, %s transport, WAL (%s) in %s\n\n",
		d.o.nodes, d.o.parts, strings.ToUpper(d.o.transport.String()), sync, d.dir)

	specs := make([]nodeSpec, d.o.nodes)
	d.sms = make([]*counterSM, d.o.nodes)
	for i := range specs {
		d.sms[i] = newCounterSM(d.o.parts)
		specs[i] = nodeSpec{
			id: fmt.Sprintf("n%d", i+1), listener: "127.0.0.1:0",
			dataDir: filepath.Join(d.dir, fmt.Sprintf("n%d", i+1)), parts: d.o.parts,
			transport: d.o.transport, noSync: d.o.noSync, sm: d.sms[i],
			election: d.o.election, heartbeat: d.o.election / 10, logger: d.log.With("node", i+1),
		}
	}
	if d.nodes, err = startCluster(ctx, specs); err != nil {
		return err
	}
	defer d.stopAll()
	for _, n := range d.nodes {
		d.printf("  started %s, Raft on %s, WAL in %s\n", n.spec.id, n.addr, n.spec.dataDir)
	}

	// 1. Elections.
	t0 := time.Now()
	leaders, err := d.waitLeaders(ctx)
	if err != nil {
		return err
	}
	d.printf("\nElections: every partition has a leader after %s.\n", ms(time.Since(t0)))
	d.printLeaders(leaders)

	// 2. Replication under load.
	d.printf("\nReplicating: %d clients write %d-byte entries to all %d partitions through their leaders.\n",
		d.o.clients, d.o.size, d.o.parts)
	d.startClients(ctx)
	defer d.stopClientsAndWait()
	if err := d.progress(ctx, d.o.replicate); err != nil {
		return err
	}
	steady := d.acked.Load()
	steadyRate := float64(steady) / d.o.replicate.Seconds()

	// 3. Stop the node that leads the most partitions, while writes go on.
	victim := d.busiestLeader(leaders)
	var led []int
	for p, l := range leaders {
		if l == d.nodes[victim].spec.id {
			led = append(led, p)
		}
	}
	vid := d.nodes[victim].spec.id
	d.printf("\nStopping %s, the leader of partitions %s; the clients keep writing.\n", vid, joinInts(led))
	failedBefore := d.failed.Load()
	tStop := time.Now()
	if err := d.stopNode(victim); err != nil {
		return err
	}
	var worst time.Duration
	newLeaders, times, err := d.waitFailover(ctx, led, vid, tStop)
	if err != nil {
		return err
	}
	for i, p := range led {
		d.printf("  partition %d: %s -> %s, new leader after %s\n", p, vid, newLeaders[i], ms(times[i]))
		worst = max(worst, times[i])
	}
	d.printf("  every partition has a leader again, %s after the stop; meanwhile %d writes got an error instead of an acknowledgement.\n",
		ms(worst), d.failed.Load()-failedBefore)

	// 4. Restart it from its WAL and wait until it has caught up.
	if err := d.progress(ctx, time.Second); err != nil {
		return err
	}
	d.printf("\nRestarting %s from its WAL (same directory, same address).\n", vid)
	tRestart := time.Now()
	if err := d.restartNode(ctx, victim); err != nil {
		return err
	}
	restartTook := time.Since(tRestart)
	caughtUp, err := d.waitCaughtUp(ctx, victim)
	if err != nil {
		return err
	}
	st := d.sms[victim]
	d.printf("  %s is running again after %s and caught up with every partition's leader %s later (%d entries applied).\n",
		vid, ms(restartTook), ms(caughtUp), st.total())
	if leaders, err = d.waitLeaders(ctx); err != nil {
		return err
	}
	d.printf("  leaders now (no leadership transfer yet: %s leads again only when an election picks it):\n", vid)
	d.printLeaders(leaders)

	// 5. Stop writing, let every node apply everything, and compare.
	d.stopClientsAndWait()
	total := d.acked.Load()
	if err := d.checkConverged(ctx); err != nil {
		return err
	}
	for i, sm := range d.sms {
		// Every acknowledged write is an entry of the log; writes whose outcome was
		// unknown may have been applied too, so applied >= acknowledged.
		if got := sm.total(); got < total {
			return fmt.Errorf("%s applied %d entries but %d writes were acknowledged: acknowledged writes were lost", d.nodes[i].spec.id, got, total)
		}
	}
	var fsyncs, saved uint64
	for _, n := range d.nodes {
		m := n.node.Metrics()
		fsyncs += m.Fsyncs
		saved += m.EntriesSaved
	}
	d.printf("\nSummary\n")
	d.printf("  acknowledged writes  %d (%d while all nodes ran, %d across the failover and restart)\n", total, steady, total-steady)
	d.printf("  throughput           %.0f ops/s with all nodes up (%d clients)\n", steadyRate, d.o.clients)
	d.printf("  failover             %s worst case over %d partitions (election timeout %s)\n", ms(worst), len(led), d.o.election)
	d.printf("  catch-up             %s after the restart\n", ms(caughtUp))
	if fsyncs > 0 {
		d.printf("  batching             %.1f entries per fsync on average (all partitions share one WAL)\n", float64(saved)/float64(fsyncs))
	}
	d.printf("  consistency          every node applied the same entries in the same order (checked by hash)\n")
	d.printf("  durability           every node applied at least the %d acknowledged writes (%d entries)\n", total, d.sms[0].total())
	d.printf("  run time             %s\n", ms(time.Since(d.start)))
	return nil
}

// ms formats a duration rounded to the millisecond.
func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ", ")
}

// running returns the nodes that run now.
func (d *demo) running() []*kommander.Node {
	d.mu.Lock()
	defer d.mu.Unlock()
	var ns []*kommander.Node
	for _, n := range d.nodes {
		if n.node != nil {
			ns = append(ns, n.node)
		}
	}
	return ns
}

// leaderNode returns the running node that leads partition p, or nil.
func (d *demo) leaderNode(p int) *kommander.Node {
	for _, n := range d.running() {
		if n.IsLeader(p) {
			return n
		}
	}
	return nil
}

// waitLeaders waits until every running node agrees on a running leader for every
// partition.
func (d *demo) waitLeaders(ctx context.Context) ([]string, error) {
	wctx, cancel := context.WithTimeout(ctx, 20*d.o.election+10*time.Second)
	defer cancel()
	d.mu.Lock()
	nodes := slices.Clone(d.nodes)
	d.mu.Unlock()
	return waitForLeaders(wctx, nodes, d.o.parts)
}

func (d *demo) printLeaders(leaders []string) {
	var b strings.Builder
	b.WriteString("  partition ")
	for p := range leaders {
		fmt.Fprintf(&b, " %3d", p)
	}
	b.WriteString("\n  leader    ")
	count := map[string]int{}
	for _, l := range leaders {
		fmt.Fprintf(&b, " %3s", l)
		count[l]++
	}
	b.WriteString("\n  (")
	for i, n := range d.nodes {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s leads %d", n.spec.id, count[n.spec.id])
	}
	b.WriteString(")\n")
	d.printf("%s", b.String())
}

// busiestLeader returns the index of the node that leads the most partitions.
func (d *demo) busiestLeader(leaders []string) int {
	best, bestN := 0, -1
	for i, n := range d.nodes {
		c := 0
		for _, l := range leaders {
			if l == n.spec.id {
				c++
			}
		}
		if c > bestN {
			best, bestN = i, c
		}
	}
	return best
}

// startClients starts the writers: client c writes to partition c % partitions through
// the partition's current leader, retrying elsewhere on errors.
func (d *demo) startClients(ctx context.Context) {
	payload := make([]byte, d.o.size)
	for i := range payload {
		payload[i] = byte('A' + i%26)
	}
	for c := 0; c < d.o.clients; c++ {
		d.clientsDone.Add(1)
		go func(c int) {
			defer d.clientsDone.Done()
			p := c % d.o.parts
			for !d.stopClients.Load() && ctx.Err() == nil {
				n := d.leaderNode(p)
				if n == nil {
					select {
					case <-time.After(5 * time.Millisecond):
					case <-ctx.Done():
					}
					continue
				}
				rctx, cancel := context.WithTimeout(ctx, 3*d.o.election)
				_, err := n.Replicate(rctx, p, "demo", payload)
				cancel()
				if err != nil {
					d.failed.Add(1)
					continue
				}
				d.acked.Add(1)
			}
		}(c)
	}
}

func (d *demo) stopClientsAndWait() {
	d.stopClients.Store(true)
	d.clientsDone.Wait()
}

// progress prints a progress line every second for dur.
func (d *demo) progress(ctx context.Context, dur time.Duration) error {
	start := time.Now()
	last, lastT := d.acked.Load(), start
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	end := time.NewTimer(dur)
	defer end.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case now := <-tick.C:
			a := d.acked.Load()
			d.printf("  %5.1fs  %9d writes acknowledged  %8.0f ops/s\n",
				now.Sub(d.start).Seconds(), a, float64(a-last)/now.Sub(lastT).Seconds())
			last, lastT = a, now
		case <-end.C:
			return nil
		}
	}
}

// stopNode stops node i, hiding it from the clients first.
func (d *demo) stopNode(i int) error {
	d.mu.Lock()
	ln := d.nodes[i]
	n := ln.node
	ln.node = nil
	d.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return errors.Join(n.Stop(ctx), ln.wal.Close())
}

// waitFailover waits until the surviving nodes agree on a new leader (not old) for every
// partition of parts, and returns the leaders and how long each took from t0.
func (d *demo) waitFailover(ctx context.Context, parts []int, old string, t0 time.Time) ([]string, []time.Duration, error) {
	leaders := make([]string, len(parts))
	times := make([]time.Duration, len(parts))
	deadline := time.Now().Add(20*d.o.election + 10*time.Second)
	for left := len(parts); left > 0; {
		for i, p := range parts {
			if leaders[i] != "" {
				continue
			}
			l, ok := agreedLeader(d.running(), p)
			if ok && l != old {
				leaders[i], times[i] = l, time.Since(t0)
				left--
			}
		}
		if time.Now().After(deadline) {
			return nil, nil, fmt.Errorf("no new leader for every partition of %s within %s", old, time.Since(t0))
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
	return leaders, times, nil
}

// agreedLeader returns the leader of p that every node of ns names, if they agree.
func agreedLeader(ns []*kommander.Node, p int) (string, bool) {
	leader := ""
	for _, n := range ns {
		l, ok := n.Leader(p)
		if !ok || (leader != "" && l != leader) {
			return "", false
		}
		leader = l
	}
	return leader, leader != ""
}

// restartNode starts node i again over the same WAL directory and address.
func (d *demo) restartNode(ctx context.Context, i int) error {
	old := d.nodes[i]
	spec := old.spec
	spec.listener = old.addr
	d.sms[i] = newCounterSM(d.o.parts)
	spec.sm = d.sms[i]
	ln, err := listenNode(spec)
	if err != nil {
		return err
	}
	if err := ln.start(ctx, old.spec.peers); err != nil {
		ln.close()
		return err
	}
	d.mu.Lock()
	d.nodes[i] = ln
	d.mu.Unlock()
	return nil
}

// waitCaughtUp waits until node i has applied, in every partition, what that partition's
// leader had committed when the wait began.
func (d *demo) waitCaughtUp(ctx context.Context, i int) (time.Duration, error) {
	t0 := time.Now()
	target := make([]uint64, d.o.parts)
	for p := range target {
		for _, n := range d.running() {
			if n.IsLeader(p) {
				target[p] = n.Status().Partitions[p].Commit
			}
		}
	}
	n := d.nodes[i].node
	deadline := t0.Add(20*d.o.election + 20*time.Second)
	for {
		st := n.Status()
		done := true
		for p, t := range target {
			if st.Partitions[p].Applied < t {
				done = false
			}
		}
		if done {
			return time.Since(t0), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s did not catch up within %s", n.ID(), time.Since(t0))
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// checkConverged waits until every node has applied each partition's whole committed log
// and checks that they applied the same entries in the same order.
func (d *demo) checkConverged(ctx context.Context) error {
	deadline := time.Now().Add(20*d.o.election + 10*time.Second)
	for {
		mismatch := ""
		for p := 0; p < d.o.parts && mismatch == ""; p++ {
			ref := d.sms[0].state(p)
			for i := 1; i < len(d.sms); i++ {
				if s := d.sms[i].state(p); s != ref {
					mismatch = fmt.Sprintf("partition %d: %s applied %d entries up to index %d (hash %x), %s applied %d up to %d (hash %x)",
						p, d.nodes[0].spec.id, ref.entries, ref.lastIndex, ref.hash, d.nodes[i].spec.id, s.entries, s.lastIndex, s.hash)
					break
				}
			}
		}
		if mismatch == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the nodes did not converge: %s", mismatch)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// stopAll stops every running node.
func (d *demo) stopAll() {
	d.stopClientsAndWait()
	for _, n := range d.nodes {
		if n.node != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = n.stop(ctx)
			cancel()
		}
	}
}
