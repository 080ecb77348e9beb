package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// The disk's own latency, measured in the same run as the benchmark: figures drift with
// the disk (a virtual disk's fsync can take 30 µs one hour and 700 µs the next), so a
// throughput or a latency is only comparable next to the fsync it ran on.

// fsyncProbeBlock is what one probe sample appends before its sync: one page, about what a
// lone client's Save writes.
const fsyncProbeBlock = 4 << 10

// probeFsync appends samples blocks of fsyncProbeBlock bytes to a new file in dir, each
// followed by a data sync (fdatasync where there is one, as the WAL uses), and returns the
// median time of one append plus its sync. The file is removed afterwards.
func probeFsync(dir string, samples int) (time.Duration, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(dir, "fsync-probe-")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	block := make([]byte, fsyncProbeBlock)
	for i := range block {
		block[i] = byte(i)
	}
	took := make([]time.Duration, 0, samples)
	for range samples {
		start := time.Now()
		if _, err := f.Write(block); err != nil {
			return 0, fmt.Errorf("fsync probe: write %s: %w", f.Name(), err)
		}
		if err := dataSync(f); err != nil {
			return 0, fmt.Errorf("fsync probe: sync %s: %w", f.Name(), err)
		}
		took = append(took, time.Since(start))
	}
	if len(took) == 0 {
		return 0, nil
	}
	slices.Sort(took)
	return took[(len(took)-1)/2], nil
}

// probeDir is where the probe writes: the benchmark's data directory, so that it measures
// the disk the WALs are on.
func probeDir(dataDir string) string { return filepath.Join(dataDir, "probe") }
