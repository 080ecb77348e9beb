package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// The disk's own latency, measured in the same run as the benchmark: figures drift with
// the disk (a virtual disk's fsync can take 30 µs one hour and 700 µs the next), so a
// throughput or a latency is only comparable next to the fsync it ran on.

// fsyncProbeBlock is what one probe sample appends before its sync: one page, about what a
// lone client's Save writes.
const fsyncProbeBlock = 4 << 10

// probeFsync appends samples blocks of fsyncProbeBlock bytes to each of files new files in
// dir at once, each append followed by a data sync of its file (fdatasync where there is
// one, as the WAL uses), and returns the median time until every file's append and sync
// completed. With files 1 it is the latency of one fsync; with the cluster's quorum it is
// what a commit waits for at least, when the nodes' WALs share the disk (the leader's and
// a follower's fsync run at once). The files are removed afterwards.
func probeFsync(dir string, samples, files int) (time.Duration, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	fs := make([]*os.File, files)
	for i := range fs {
		f, err := os.CreateTemp(dir, "fsync-probe-")
		if err != nil {
			return 0, err
		}
		defer os.Remove(f.Name())
		defer f.Close()
		fs[i] = f
	}
	block := make([]byte, fsyncProbeBlock)
	for i := range block {
		block[i] = byte(i)
	}
	appendSync := func(f *os.File) error {
		if _, err := f.Write(block); err != nil {
			return fmt.Errorf("fsync probe: write %s: %w", f.Name(), err)
		}
		if err := dataSync(f); err != nil {
			return fmt.Errorf("fsync probe: sync %s: %w", f.Name(), err)
		}
		return nil
	}
	took := make([]time.Duration, 0, samples)
	errs := make([]error, files)
	for range samples {
		start := time.Now()
		var wg sync.WaitGroup
		for i, f := range fs[1:] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i+1] = appendSync(f)
			}()
		}
		errs[0] = appendSync(fs[0])
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return 0, err
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
