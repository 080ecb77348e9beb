package kommander

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The WAL benchmarks and, for comparison, the raw limit of the same disk: a loop that
// appends the same number of bytes as one WAL frame and fdatasyncs, as fast as it can.
//
//	go test -run '^$' -bench 'WALAppend|RawWriteSync' -benchtime 2s .
//
// b.TempDir lives on the same file system as the WAL in the benchmark, so the two are
// comparable. Metrics: appends/s (entries), batches/s (Save calls), fsyncs/append.

func benchEntries(partition uint32, from uint64, n, size int) []Update {
	ents := make([]Entry, n)
	data := make([]byte, size)
	for i := range ents {
		ents[i] = Entry{Term: 1, Index: from + uint64(i), Data: data}
	}
	return []Update{{Partition: partition, Entries: ents}}
}

func openBenchWAL(b *testing.B, noSync bool) (*WAL, *countingFS) {
	fs := &countingFS{}
	w, err := openWAL(b.TempDir(), WALOptions{UnsafeNoSync: noSync, Logger: quietLogger()}, fs)
	if err != nil {
		b.Fatal(err)
	}
	return w, fs
}

func reportWAL(b *testing.B, start time.Time, fs *countingFS, syncs0 int64, appends, batches int) {
	secs := time.Since(start).Seconds()
	b.ReportMetric(float64(appends)/secs, "appends/s")
	b.ReportMetric(float64(batches)/secs, "batches/s")
	b.ReportMetric(float64(fs.syncs.Load()-syncs0)/float64(appends), "fsyncs/append")
}

func BenchmarkWALAppend(b *testing.B) {
	for _, size := range []int{128, 4096} {
		for _, sync := range []bool{true, false} {
			for _, batch := range []int{1, 64} {
				b.Run(fmt.Sprintf("size=%d/batch=%d/sync=%v", size, batch, sync), func(b *testing.B) {
					benchWALSerial(b, size, batch, !sync)
				})
			}
			b.Run(fmt.Sprintf("size=%d/appenders=64/sync=%v", size, sync), func(b *testing.B) {
				benchWALConcurrent(b, size, 64, !sync)
			})
		}
	}
}

// benchWALSerial is one appender saving batches of one partition, one after the other.
func benchWALSerial(b *testing.B, size, batch int, noSync bool) {
	w, fs := openBenchWAL(b, noSync)
	defer w.Close()
	ups := benchEntries(0, 1, batch, size)
	b.SetBytes(int64(size * batch))
	b.ReportAllocs()
	syncs0 := fs.syncs.Load()
	start := time.Now()
	b.ResetTimer()
	next := uint64(1)
	for i := range b.N {
		for j := range ups[0].Entries {
			ups[0].Entries[j].Index = next + uint64(j)
		}
		if err := w.Save(ups); err != nil {
			b.Fatal(err)
		}
		next += uint64(batch)
		if i%4096 == 4095 { // keep the disk use of long runs bounded
			if err := w.Compact(0, next-1, 1); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	reportWAL(b, start, fs, syncs0, b.N*batch, b.N)
}

// benchWALConcurrent is n appenders, each saving one entry at a time to its own partition;
// group commit lets them share writes and fsyncs.
func benchWALConcurrent(b *testing.B, size, n int, noSync bool) {
	w, fs := openBenchWAL(b, noSync)
	defer w.Close()
	b.SetBytes(int64(size))
	b.ReportAllocs()
	var ops atomic.Int64
	var wg sync.WaitGroup
	syncs0 := fs.syncs.Load()
	start := time.Now()
	b.ResetTimer()
	for g := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ups := benchEntries(uint32(g), 1, 1, size)
			for next := uint64(1); ops.Add(1) <= int64(b.N); next++ {
				ups[0].Entries[0].Index = next
				if err := w.Save(ups); err != nil {
					b.Error(err)
					return
				}
				if next%4096 == 0 {
					if err := w.Compact(uint32(g), next, 1); err != nil {
						b.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	reportWAL(b, start, fs, syncs0, b.N, b.N)
}

// BenchmarkRawWriteSync appends blocks of the size of the WAL frames above to a file and
// fdatasyncs after each: the most batches per second this disk allows.
func BenchmarkRawWriteSync(b *testing.B) {
	for _, size := range []int{128, 4096} {
		for _, batch := range []int{1, 64} {
			frame := walFrameHeaderSize + batch*(walEntryHeaderSize+size)
			b.Run(fmt.Sprintf("size=%d/batch=%d/bytes=%d", size, batch, frame), func(b *testing.B) {
				f, err := os.Create(filepath.Join(b.TempDir(), "raw"))
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				buf := make([]byte, frame)
				b.SetBytes(int64(size * batch))
				start := time.Now()
				b.ResetTimer()
				written := 0
				for range b.N {
					if _, err := f.Write(buf); err != nil {
						b.Fatal(err)
					}
					if err := dataSync(f); err != nil {
						b.Fatal(err)
					}
					if written += frame; written > 64<<20 { // stay within one segment's worth
						if err := f.Truncate(0); err != nil {
							b.Fatal(err)
						}
						if _, err := f.Seek(0, 0); err != nil {
							b.Fatal(err)
						}
						written = 0
					}
				}
				b.StopTimer()
				secs := time.Since(start).Seconds()
				b.ReportMetric(float64(b.N)/secs, "batches/s")
				b.ReportMetric(float64(b.N*batch)/secs, "appends/s")
			})
		}
	}
}

// BenchmarkWALVersusRawSync alternates, in one loop, a raw append + fdatasync of one
// frame's worth of bytes and a WAL Save of the same batch, timing each, so that both see
// the same disk at the same moment: on a machine whose fsync latency swings with other
// tenants' I/O, separate runs are not comparable. wal/raw is the WAL's batches/s as a
// fraction of the raw loop's.
func BenchmarkWALVersusRawSync(b *testing.B) {
	for _, size := range []int{128, 4096} {
		for _, batch := range []int{1, 64} {
			b.Run(fmt.Sprintf("size=%d/batch=%d", size, batch), func(b *testing.B) {
				w, _ := openBenchWAL(b, false)
				defer w.Close()
				f, err := os.Create(filepath.Join(b.TempDir(), "raw"))
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				frame := make([]byte, walFrameHeaderSize+batch*(walEntryHeaderSize+size))
				ups := benchEntries(0, 1, batch, size)
				var rawTime, walTime time.Duration
				next := uint64(1)
				b.ResetTimer()
				for range b.N {
					t0 := time.Now()
					if _, err := f.Write(frame); err != nil {
						b.Fatal(err)
					}
					if err := dataSync(f); err != nil {
						b.Fatal(err)
					}
					t1 := time.Now()
					for j := range ups[0].Entries {
						ups[0].Entries[j].Index = next + uint64(j)
					}
					if err := w.Save(ups); err != nil {
						b.Fatal(err)
					}
					t2 := time.Now()
					next += uint64(batch)
					rawTime += t1.Sub(t0)
					walTime += t2.Sub(t1)
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N)/rawTime.Seconds(), "raw-batches/s")
				b.ReportMetric(float64(b.N)/walTime.Seconds(), "wal-batches/s")
				b.ReportMetric(rawTime.Seconds()/walTime.Seconds(), "wal/raw")
			})
		}
	}
}

// BenchmarkWALConcurrentVersusSingle alternates short bursts of one appender and of 64
// concurrent appenders (128 B entries, fsync on), for the same reason: it reports the
// speed-up of group commit measured under the same disk conditions.
func BenchmarkWALConcurrentVersusSingle(b *testing.B) {
	for _, size := range []int{128, 4096} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			w, _ := openBenchWAL(b, false)
			defer w.Close()
			const appenders, burst = 64, 20
			next := make([]uint64, appenders)
			save := func(g int) {
				next[g]++
				if err := w.Save(benchEntries(uint32(g), next[g], 1, size)); err != nil {
					b.Error(err)
				}
			}
			var singleTime, concTime time.Duration
			var singleOps, concOps int
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				for range burst {
					save(0)
				}
				t1 := time.Now()
				var wg sync.WaitGroup
				for g := range appenders {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range burst {
							save(g)
						}
					}()
				}
				wg.Wait()
				t2 := time.Now()
				singleTime += t1.Sub(t0)
				concTime += t2.Sub(t1)
				singleOps += burst
				concOps += burst * appenders
			}
			b.StopTimer()
			single := float64(singleOps) / singleTime.Seconds()
			conc := float64(concOps) / concTime.Seconds()
			b.ReportMetric(single, "single-appends/s")
			b.ReportMetric(conc, "64-appends/s")
			b.ReportMetric(conc/single, "speedup")
		})
	}
}
