package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBenchReadsCostNoFsync: `kommander bench -reads` measures ReadBarrier on a follower
// and on the leader; the reads cost no fsync. Bad -reads and -lease flags are refused.
func TestBenchReadsCostNoFsync(t *testing.T) {
	for _, args := range [][]string{{"-reads", "sideways"}, {"-lease"}, {"-reads", "follower", "-nodes", "1"}} {
		if err := runBench(context.Background(), args, io.Discard, io.Discard); err == nil {
			t.Errorf("bench %v: accepted", args)
		}
	}
	if testing.Short() {
		return // the rest runs a cluster on loopback
	}
	for _, where := range []string{"follower", "leader"} {
		var out bytes.Buffer
		args := []string{"-reads", where, "-clients", "4", "-duration", "300ms", "-warmup", "100ms", "-json"}
		if err := runBench(context.Background(), args, &out, io.Discard); err != nil {
			t.Fatalf("bench %v: %v", args, err)
		}
		var res benchResult
		if err := json.Unmarshal(out.Bytes(), &res); err != nil {
			t.Fatalf("bench -json: %v: %s", err, out.Bytes())
		}
		if res.Ops == 0 || res.Fsyncs != 0 || res.Mode != "read on the "+where {
			t.Fatalf("bench -reads %s: %d reads, %d fsyncs, mode %q; want reads and no fsync", where, res.Ops, res.Fsyncs, res.Mode)
		}
		// The disk probe ran before the load: one fsync, and a quorum's (two) at once.
		if res.FsyncP50Ms <= 0 || res.QuorumFsyncP50Ms <= 0 || res.P50OverQuorumFsync <= 0 {
			t.Fatalf("bench -reads %s: fsync p50 %v ms, a quorum's %v ms (ratio %v); want both measured",
				where, res.FsyncP50Ms, res.QuorumFsyncP50Ms, res.P50OverQuorumFsync)
		}
	}
}

// TestBenchMatrixTable: `kommander bench -matrix` runs every combination of its lists and
// prints one markdown row per run, each with the disk's fsync p50 measured in that run,
// entries per fsync and ops per CPU-second. Bad lists are refused before anything runs.
func TestBenchMatrixTable(t *testing.T) {
	for _, args := range [][]string{
		{"-matrix", "-matrix-clients", "0"}, {"-matrix", "-matrix-sizes", "x"},
		{"-matrix", "-matrix-transports", "udp"}, {"-matrix", "-reads", "leader"}, {"-fsync-samples", "-1"},
	} {
		if err := runBench(context.Background(), args, io.Discard, io.Discard); err == nil {
			t.Errorf("bench %v: accepted", args)
		}
	}
	if testing.Short() {
		return // the rest runs clusters on loopback
	}
	var out bytes.Buffer
	args := []string{"-matrix", "-matrix-clients", "1,4", "-matrix-partitions", "2", "-matrix-sizes", "128",
		"-matrix-transports", "tcp,http", "-duration", "200ms", "-warmup", "50ms", "-fsync-samples", "20"}
	if err := runBench(context.Background(), args, &out, io.Discard); err != nil {
		t.Fatalf("bench %v: %v", args, err)
	}
	var rows [][]string
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "| tcp ") || strings.HasPrefix(line, "| http ") {
			rows = append(rows, strings.Split(strings.Trim(line, "| "), " | "))
		}
	}
	want := [][2]string{{"tcp", "1"}, {"tcp", "4"}, {"http", "1"}, {"http", "4"}}
	if len(rows) != len(want) {
		t.Fatalf("bench -matrix printed %d rows, want %d:\n%s", len(rows), len(want), out.String())
	}
	for i, r := range rows {
		if len(r) != 13 || r[0] != want[i][0] || r[1] != "128" || r[2] != "2" || r[3] != want[i][1] {
			t.Fatalf("row %d = %q, want transport %s, 128 bytes, 2 partitions, %s clients", i, r, want[i][0], want[i][1])
		}
		for _, col := range []int{4, 7, 9, 10, 11} { // ops/s, fsync p50, ops per CPU-s, entries per fsync (all, leader)
			if v, err := strconv.ParseFloat(r[col], 64); err != nil || v <= 0 {
				t.Errorf("row %d column %d = %q, want a positive figure", i, col, r[col])
			}
		}
	}
}

// TestProbeFsyncMeasuresTheDisk: the probe appends and syncs in the given directory, and
// leaves nothing behind.
func TestProbeFsyncMeasuresTheDisk(t *testing.T) {
	dir := t.TempDir()
	p50, err := probeFsync(dir, 5, 2)
	if err != nil || p50 <= 0 {
		t.Fatalf("probeFsync = %v, %v; want a positive median", p50, err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("probeFsync left %d files in %s", len(left), dir)
	}
}

func TestLatencyHistogramQuantilesAreNearestRankWithinTheirBucket(t *testing.T) {
	var h latencyHistogram
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Millisecond)
	}
	for q, want := range map[float64]float64{0.5: 500, 0.99: 990, 0.999: 999, 1: 1000} {
		if got := h.quantileMs(q); math.Abs(got-want) > want/histSub {
			t.Errorf("quantile %v: got %v, want %v within 1/%d", q, got, want, histSub)
		}
	}
	var empty latencyHistogram
	if got := empty.quantileMs(0.5); got != 0 {
		t.Errorf("quantile of nothing: %v", got)
	}
	// Merged histograms count as one; small values are exact.
	var a, b latencyHistogram
	for i := 1; i <= 10; i++ {
		a.add(time.Duration(i))
		b.add(time.Duration(i + 10))
	}
	a.merge(&b)
	if a.n != 20 || a.quantileMs(0.5) != 10/1e6 || a.quantileMs(1) != 20/1e6 {
		t.Errorf("merged: n %d, p50 %v ms, max %v ms; want 20, 1e-05, 2e-05", a.n, a.quantileMs(0.5), a.quantileMs(1))
	}
}

// Every value falls in the bucket whose bounds hold it, and buckets are in value order.
func TestLatencyHistogramBucketsHoldTheirValues(t *testing.T) {
	prevLow := uint64(0)
	for i := 1; i < histBuckets; i++ {
		low, width := histLow(i)
		if low < prevLow || histIndex(low) != i || histIndex(low+width-1) != i {
			t.Fatalf("bucket %d: low %d width %d: indexes %d and %d, previous low %d", i, low, width, histIndex(low), histIndex(low+width-1), prevLow)
		}
		prevLow = low
	}
	for _, v := range []uint64{0, 1, 63, 64, 65, 127, 128, 1 << 20, 1<<20 + 12345, 1 << 39, 1 << 45, math.MaxUint64} {
		low, width := histLow(histIndex(v))
		if v < low || (v-low >= width && histIndex(v) != histBuckets-1) {
			t.Errorf("value %d in bucket %d [%d, +%d)", v, histIndex(v), low, width)
		}
	}
}

// TestBenchIdleWritesToSeveralIdlePartitions: `kommander bench -idle` ends with one write
// each to idleWrites idle partitions and reports their median, maximum and first.
func TestBenchIdleWritesToSeveralIdlePartitions(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a cluster on loopback")
	}
	var out bytes.Buffer
	args := []string{"-idle", "-partitions", "40", "-duration", "300ms", "-election-timeout", "300ms", "-json"}
	if err := runBench(context.Background(), args, &out, io.Discard); err != nil {
		t.Fatalf("bench %v: %v", args, err)
	}
	var res idleResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("bench -idle -json: %v: %s", err, out.Bytes())
	}
	if res.Writes != idleWrites || res.WriteMs <= 0 || res.WriteFirstMs <= 0 ||
		res.WriteMaxMs < res.WriteMs || res.WriteMaxMs < res.WriteFirstMs {
		t.Fatalf("idle writes: %d, p50 %v ms, max %v ms, first %v ms; want %d writes, p50 <= max, first <= max",
			res.Writes, res.WriteMs, res.WriteMaxMs, res.WriteFirstMs, idleWrites)
	}
}
