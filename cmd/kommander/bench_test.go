package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
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
