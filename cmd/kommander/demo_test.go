package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestDemoShowsElectionsFailoverCatchUpAndCleansUp(t *testing.T) {
	for _, transport := range []string{"tcp", "http"} {
		t.Run(transport, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			var out, errOut bytes.Buffer
			code := run(ctx, []string{"demo", "-duration", "1s", "-election-timeout", "400ms", "-clients", "4", "-partitions", "4", "-transport", transport}, &out, &errOut)
			if code != 0 {
				t.Fatalf("demo exited %d\nstdout:\n%s\nstderr:\n%s", code, &out, &errOut)
			}
			s := out.String()
			for _, want := range []string{
				"Elections: every partition has a leader",
				"writes acknowledged",
				"Stopping n",
				"new leader after",
				"Restarting n",
				"caught up with every partition's leader",
				"every node applied the same entries in the same order",
				"Summary",
			} {
				if !strings.Contains(s, want) {
					t.Errorf("the demo's output lacks %q:\n%s", want, s)
				}
			}
			m := regexp.MustCompile(`Removed (\S+)\.`).FindStringSubmatch(s)
			if m == nil {
				t.Fatalf("the demo does not say it removed its directory:\n%s", s)
			}
			if _, err := os.Stat(m[1]); !os.IsNotExist(err) {
				t.Errorf("the demo's directory %s is still there (%v)", m[1], err)
			}
		})
	}
}

func TestDemoRejectsAClusterThatCannotLoseANode(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"demo", "-nodes", "2"}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "at least 3") {
		t.Fatalf("demo -nodes 2: exit %d, stderr %q", code, &errOut)
	}
}

func TestBenchReportsEveryFigure(t *testing.T) {
	var out, errOut bytes.Buffer
	args := []string{"bench", "-duration", "500ms", "-warmup", "200ms", "-clients", "8", "-partitions", "2", "-size", "100", "-transport", "http", "-json"}
	if code := run(context.Background(), args, &out, &errOut); code != 0 {
		t.Fatalf("bench exited %d: %s", code, &errOut)
	}
	var r benchResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("bench -json printed %q: %v", &out, err)
	}
	if r.Ops == 0 || r.OpsPerSec <= 0 || r.Transport != "http" || r.Partitions != 2 || r.Clients != 8 || !r.Fsync || r.Unsafe {
		t.Fatalf("bench result: %+v", r)
	}
	if want := r.OpsPerSec * 100 / 1e6; r.MBPerSec < want*0.99 || r.MBPerSec > want*1.01 {
		t.Errorf("MB/s %v, want ops/s x size = %v", r.MBPerSec, want)
	}
	if !(0 < r.P50Ms && r.P50Ms <= r.P99Ms && r.P99Ms <= r.P999Ms) {
		t.Errorf("latency percentiles out of order: %+v", r)
	}
	if r.CPUSeconds <= 0 || r.CPUPer10kOps <= 0 {
		t.Errorf("CPU not measured: %+v", r)
	}

	out.Reset()
	if code := run(context.Background(), []string{"bench", "-duration", "200ms", "-warmup", "0s", "-clients", "2", "-nosync"}, &out, &errOut); code != 0 {
		t.Fatalf("bench -nosync exited %d: %s", code, &errOut)
	}
	for _, want := range []string{"UNSAFE", "ops/s", "MB/s", "p50", "p99", "p99.9", "per 10,000 ops"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("bench output lacks %q:\n%s", want, &out)
		}
	}
}
