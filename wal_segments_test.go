package kommander

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// ---- S23: bounded disk ----

func TestWALDiskStaysBoundedUnderEndlessWritesS23(t *testing.T) {
	const segSize = 8 << 10
	dir := t.TempDir()
	opts := testWALOptions(segSize)
	w := mustOpenWAL(t, dir, opts)
	m := newWALModel()
	seed := uint64(23)
	rng := rand.New(rand.NewPCG(seed, 0))
	// Idle partitions: a few entries and a hard state written once, never compacted.
	idle := []uint32{100, 101, 102}
	for _, p := range idle {
		saveBoth(t, w, m, []Update{{Partition: p, Entries: makeEntries(rng, 1, 3, 1, 40),
			SaveHardState: true, HardState: HardState{Term: 1, Vote: "a", Commit: 3}}})
	}
	// And one idle partition that stopped compacting with more live data than a quarter
	// segment: it too must not pin the disk forever.
	saveBoth(t, w, m, []Update{{Partition: 103, Entries: makeEntries(rng, 1, 20, 1, 250)}})
	busy := partitionIDs(6)
	rounds := 4000
	if testing.Short() {
		rounds = 1500
	}
	maxBytes := int64(0)
	for i := range rounds {
		saveBoth(t, w, m, randomBatch(rng, m, busy, 100))
		if i%10 == 9 {
			// Snapshot each busy partition a few entries behind its last index.
			for _, p := range busy {
				mp := m.part(p)
				if last := m.last(p); last > mp.compactIndex+5 {
					idx := last - 5
					term := mp.ents[idx-mp.compactIndex-1].Term
					if err := w.Compact(p, idx, term); err != nil {
						t.Fatal(err)
					}
					m.compact(p, idx, term)
				}
			}
		}
		maxBytes = max(maxBytes, dirBytes(t, dir))
	}
	written := int64(0)
	for _, s := range w.segs {
		written = max(written, int64(s.seq))
	}
	t.Logf("%d segments written, at most %d bytes on disk (segment size %d)", written, maxBytes, segSize)
	if written < 50 {
		t.Fatalf("the test wrote only %d segments", written)
	}
	if maxBytes > 6*segSize {
		t.Fatalf("disk use reached %d bytes, more than 6 segments of %d (seed %d)", maxBytes, segSize, seed)
	}
	checkAndReopen(t, w, dir, opts, m)
}

func TestWALCarriesIdlePartitionForward(t *testing.T) {
	dir := t.TempDir()
	opts := testWALOptions(4 << 10)
	w := mustOpenWAL(t, dir, opts)
	m := newWALModel()
	rng := rand.New(rand.NewPCG(16, 0))
	saveBoth(t, w, m, []Update{{Partition: 9, Entries: makeEntries(rng, 1, 2, 1, 30),
		SaveHardState: true, HardState: HardState{Term: 1, Vote: "z", Commit: 1}}})
	if err := w.Compact(9, 1, 1); err != nil {
		t.Fatal(err)
	}
	m.compact(9, 1, 1)
	for i := range 200 {
		saveBoth(t, w, m, []Update{{Partition: 1, Entries: makeEntries(rng, uint64(i+1), 1, 1, 100)}})
		if err := w.Compact(1, uint64(i+1), 1); err != nil {
			t.Fatal(err)
		}
		m.compact(1, uint64(i+1), 1)
	}
	if _, err := os.Stat(filepath.Join(dir, walSegmentName(1))); !os.IsNotExist(err) {
		t.Fatalf("segment 1, pinned only by the idle partition, still exists: %v", err)
	}
	checkAndReopen(t, w, dir, opts, m)
}

func TestWALCrashBetweenCarryAndRemovalS24(t *testing.T) {
	// The carried copy is durable before the old segment goes; a crash in between leaves
	// both, and reopening must give the same log. A failing Remove stands in for the crash.
	fs := &countingFS{failRemove: syscall.EIO}
	dir := t.TempDir()
	opts := testWALOptions(4 << 10)
	w, err := openWAL(dir, opts, fs)
	if err != nil {
		t.Fatal(err)
	}
	m := newWALModel()
	rng := rand.New(rand.NewPCG(17, 0))
	saveBoth(t, w, m, []Update{{Partition: 9, Entries: makeEntries(rng, 1, 3, 1, 30),
		SaveHardState: true, HardState: HardState{Term: 1, Vote: "z", Commit: 2}}})
	for i := 0; ; i++ {
		u := []Update{{Partition: 1, Entries: makeEntries(rng, uint64(i+1), 1, 1, 200)}}
		if err := w.Save(u); err != nil {
			break // the removal after the carry failed: the WAL stopped
		}
		m.save(u)
		if err := w.Compact(1, uint64(i+1), 1); err != nil {
			break
		}
		m.compact(1, uint64(i+1), 1)
		if i > 1000 {
			t.Fatal("no segment removal was attempted")
		}
	}
	w.Close()
	if n := len(segmentFiles(t, dir)); n < 2 {
		t.Fatalf("expected the old and the new segment, have %d", n)
	}
	w = mustOpenWAL(t, dir, opts)
	defer w.Close()
	m.check(t, w, 1<<20)
}

// TestWALZeroesAheadOnlyInTheLastSegment: the active segment is extended with zeroes ahead
// of its frames (so that fdatasync commits no file size); after a crash they are cut off
// like a torn tail with every saved entry kept, an older segment never keeps them (opening
// would call that corruption), and Close leaves the last segment as long as its frames.
func TestWALZeroesAheadOnlyInTheLastSegment(t *testing.T) {
	dir := t.TempDir()
	const segSize = 64 << 10
	w := mustOpenWAL(t, dir, syncedWALOptions(segSize))
	rng := rand.New(rand.NewPCG(11, 12))
	m := newWALModel()
	save := func(w *WAL, from uint64, n int) {
		t.Helper()
		batch := []Update{{Partition: 1, Entries: makeEntries(rng, from, n, 1, 200)}}
		if err := w.Save(batch); err != nil {
			t.Fatal(err)
		}
		m.save(batch)
	}
	fileSize := func(s *walSegment) int64 {
		t.Helper()
		fi, err := os.Stat(s.path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	save(w, 1, 5)
	if got, frames := fileSize(w.segs[0]), w.segs[0].size; got <= frames {
		t.Fatalf("active segment is %d bytes for %d bytes of frames, want zeroes written ahead", got, frames)
	}
	// A crash: the files stay as they are (the first WAL is abandoned, not closed), and
	// the process's end releases its lock.
	w.closeFiles()
	_ = w.lock.unlock()
	w = mustOpenWAL(t, dir, syncedWALOptions(segSize))
	m.check(t, w, 1<<20)
	if got, frames := fileSize(w.segs[0]), w.segs[0].size; got != frames {
		t.Fatalf("after recovery the segment is %d bytes for %d bytes of frames", got, frames)
	}
	// Enough to start several segments: each older one must be cut to its frames.
	next := uint64(6)
	for len(w.segs) < 4 {
		save(w, next, 20)
		next += 20
	}
	for _, s := range w.segs[:len(w.segs)-1] {
		if got := fileSize(s); got != s.size {
			t.Fatalf("old segment %s is %d bytes for %d bytes of frames", s.path, got, s.size)
		}
	}
	last := w.segs[len(w.segs)-1]
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := fileSize(last); got != last.size {
		t.Fatalf("after Close the last segment is %d bytes for %d bytes of frames", got, last.size)
	}
	w = mustOpenWAL(t, dir, syncedWALOptions(segSize))
	defer w.Close()
	m.check(t, w, 1<<20)
}

// A carry writes a frame of up to an eighth of a segment; the WAL does not keep a buffer
// that large for the commits that follow, and the carried entries read back unchanged.
func TestWALDoesNotKeepALargeCarryFrame(t *testing.T) {
	w := mustOpenWAL(t, t.TempDir(), testWALOptions(64<<20))
	defer w.Close()
	rng := rand.New(rand.NewPCG(7, 0))
	ents := makeEntries(rng, 1, 64, 1, 64<<10) // about 2 MB
	if err := w.Save([]Update{{Partition: 1, Entries: ents}}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.carry([]uint32{1}); err != nil {
		t.Fatal(err)
	}
	if c := cap(w.frame); c > maxKeptFrame {
		t.Fatalf("the WAL keeps a frame buffer of %d bytes after a carry, want at most %d", c, maxKeptFrame)
	}
	got, err := w.Entries(1, 1, 65, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ents {
		if got[i].ID != ents[i].ID || string(got[i].Data) != string(ents[i].Data) {
			t.Fatalf("entry %d differs after the carry", i+1)
		}
	}
}
