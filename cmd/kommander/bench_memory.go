package main

import (
	"io/fs"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"time"
)

// The -mem-every option of `kommander bench`: samples of the process's memory, goroutines
// and WAL bytes on disk taken through the measured time, to show whether they stay flat
// under a long load (the node snapshots each partition and truncates its WAL, so that
// neither memory nor disk should grow once warm).

// memSample is one sample, at Seconds into the measured time.
type memSample struct {
	Seconds    float64 `json:"seconds"`
	HeapLiveMB float64 `json:"heap_live_mb"` // live heap as of the last GC
	RSSMB      float64 `json:"rss_mb"`       // resident set size; 0 where not reported
	Goroutines int     `json:"goroutines"`
	DiskMB     float64 `json:"disk_mb"` // bytes of the WALs and snapshots under the data directory
}

const mb = 1 << 20

// sampleMemory takes one sample; dir is the benchmark's data directory.
func sampleMemory(since time.Time, dir string) memSample {
	m := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(m)
	s := memSample{Seconds: time.Since(since).Seconds(), Goroutines: runtime.NumGoroutine(), DiskMB: float64(dirBytes(dir)) / mb}
	if m[0].Value.Kind() == metrics.KindUint64 {
		s.HeapLiveMB = float64(m[0].Value.Uint64()) / mb
	}
	if rss, ok := processRSS(); ok {
		s.RSSMB = float64(rss) / mb
	}
	return s
}

// dirBytes sums the sizes of the regular files under dir; files that vanish while it
// walks (a truncated WAL segment) are skipped.
func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// sampleMemoryEvery samples every interval from the start of the measured time until
// stop is closed, and once more then; it returns the samples through the channel it
// returns, once done.
func sampleMemoryEvery(interval time.Duration, dir string, stop <-chan struct{}) <-chan []memSample {
	out := make(chan []memSample, 1)
	go func() {
		start := time.Now()
		samples := []memSample{sampleMemory(start, dir)}
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				samples = append(samples, sampleMemory(start, dir))
			case <-stop:
				out <- append(samples, sampleMemory(start, dir))
				return
			}
		}
	}()
	return out
}
