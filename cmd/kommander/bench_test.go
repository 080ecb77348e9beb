package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
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
	p50, err := probeFsync(dir, 5)
	if err != nil || p50 <= 0 {
		t.Fatalf("probeFsync = %v, %v; want a positive median", p50, err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("probeFsync left %d files in %s", len(left), dir)
	}
}
