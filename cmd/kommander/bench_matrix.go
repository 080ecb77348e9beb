package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/kommander-go/kommander"
)

// `kommander bench -matrix` runs the benchmark over every combination of clients,
// partitions, entry sizes and transports, one after another, and prints one markdown table
// (or, with -json, one JSON object per run), with the machine it ran on, so that the
// figures of a README table come from a single command.

// matrixOptions are the flags of -matrix.
type matrixOptions struct {
	on                              bool
	clients, parts, sizes, transpts string
}

func (m *matrixOptions) flags(fs *flag.FlagSet) {
	fs.BoolVar(&m.on, "matrix", false, "run every combination of -matrix-clients, -matrix-partitions, -matrix-sizes and -matrix-transports and print a markdown table")
	fs.StringVar(&m.clients, "matrix-clients", "1,64,256", "with -matrix: client counts, comma-separated")
	fs.StringVar(&m.parts, "matrix-partitions", "1,16,64", "with -matrix: partition counts, comma-separated")
	fs.StringVar(&m.sizes, "matrix-sizes", "128,4096", "with -matrix: entry sizes in bytes, comma-separated")
	fs.StringVar(&m.transpts, "matrix-transports", "tcp,http", "with -matrix: transports, comma-separated")
}

// matrixRun is one cell of the matrix.
type matrixRun struct {
	transport            kommander.TransportKind
	size, parts, clients int
}

// runs returns the matrix's runs in table order: transport, size, partitions, clients.
func (m *matrixOptions) runs() ([]matrixRun, error) {
	clients, err := parseCounts("-matrix-clients", m.clients, 1)
	if err != nil {
		return nil, err
	}
	parts, err := parseCounts("-matrix-partitions", m.parts, 1)
	if err != nil {
		return nil, err
	}
	sizes, err := parseCounts("-matrix-sizes", m.sizes, 0)
	if err != nil {
		return nil, err
	}
	var runs []matrixRun
	for _, name := range strings.Split(m.transpts, ",") {
		tk, err := parseTransport(strings.TrimSpace(name))
		if err != nil {
			return nil, fmt.Errorf("-matrix-transports: %w", err)
		}
		for _, size := range sizes {
			for _, p := range parts {
				for _, c := range clients {
					runs = append(runs, matrixRun{transport: tk, size: size, parts: p, clients: c})
				}
			}
		}
	}
	return runs, nil
}

// parseCounts parses a comma-separated list of integers of at least least.
func parseCounts(flagName, list string, least int) ([]int, error) {
	var out []int
	for _, f := range strings.Split(list, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < least {
			return nil, fmt.Errorf("%s %q: want integers of at least %d, comma-separated", flagName, list, least)
		}
		out = append(out, v)
	}
	return out, nil
}

// runMatrix runs every cell with base's other options and prints the table.
func runMatrix(ctx context.Context, base benchOptions, m matrixOptions, stdout, stderr io.Writer) error {
	if base.reads != "" {
		return fmt.Errorf("-matrix measures writes: drop -reads")
	}
	runs, err := m.runs()
	if err != nil {
		return err
	}
	if !base.json {
		fmt.Fprintf(stdout, "%s\n\n", machineDescription())
		fmt.Fprintln(stdout, "| transport | entry bytes | partitions | clients | ops/s | p50 ms | p99 ms | fsync p50 ms | p50 / fsync p50 | ops per CPU-s | entries / fsync | leader entries / fsync | errors |")
		fmt.Fprintln(stdout, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	}
	for i, r := range runs {
		o := base
		o.transport, o.size, o.parts, o.clients = r.transport, r.size, r.parts, r.clients
		fmt.Fprintf(stderr, "run %d of %d: -transport %s -size %d -partitions %d -clients %d\n", i+1, len(runs), r.transport, r.size, r.parts, r.clients)
		res, err := bench(ctx, o)
		if err != nil {
			return fmt.Errorf("-transport %s -size %d -partitions %d -clients %d: %w", r.transport, r.size, r.parts, r.clients, err)
		}
		if base.json {
			b, _ := json.Marshal(res)
			fmt.Fprintf(stdout, "%s\n", b)
			continue
		}
		fmt.Fprintf(stdout, "| %s | %d | %d | %d | %.0f | %.3f | %.3f | %.3f | %.2f | %.0f | %.1f | %.1f | %d |\n",
			res.Transport, res.Size, res.Partitions, res.Clients, res.OpsPerSec, res.P50Ms, res.P99Ms,
			res.FsyncP50Ms, res.P50OverFsync, res.OpsPerCPUSecond, res.EntriesPerFsync, res.LeaderEntriesPerFsync, res.Errors)
	}
	return nil
}

// machineDescription is one line on what the matrix ran on.
func machineDescription() string {
	return fmt.Sprintf("%s/%s, %d CPUs (%s), GOMAXPROCS %d, %s", runtime.GOOS, runtime.GOARCH,
		runtime.NumCPU(), cpuModel(), runtime.GOMAXPROCS(0), runtime.Version())
}

// cpuModel returns the processor's name where the system tells it (Linux), else "cpu
// model unknown".
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				return strings.TrimSpace(v)
			}
		}
	}
	return "cpu model unknown"
}
