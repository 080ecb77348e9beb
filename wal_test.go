package kommander

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// ---- helpers ----

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testWALOptions skips fsyncs: no test here crashes the machine, the crash tests cut files
// by hand. The tests of fsync itself (group commit, sticky failures) turn it back on.
func testWALOptions(segmentSize int64) WALOptions {
	return WALOptions{SegmentSize: segmentSize, Logger: quietLogger(), UnsafeNoSync: true}
}

func syncedWALOptions(segmentSize int64) WALOptions {
	o := testWALOptions(segmentSize)
	o.UnsafeNoSync = false
	return o
}

func mustOpenWAL(t testing.TB, dir string, opts WALOptions) *WAL {
	t.Helper()
	w, err := OpenWAL(dir, opts)
	if err != nil {
		t.Fatalf("OpenWAL(%s): %v", dir, err)
	}
	return w
}

// walModel is what a WAL should hold: the reference the tests compare against.
type walModel struct {
	parts map[uint32]*walModelPart
}

type walModelPart struct {
	compactIndex, compactTerm uint64
	ents                      []Entry // ents[i].Index == compactIndex+1+i
	hs                        HardState
}

func newWALModel() *walModel { return &walModel{parts: map[uint32]*walModelPart{}} }

func (m *walModel) part(p uint32) *walModelPart {
	if m.parts[p] == nil {
		m.parts[p] = &walModelPart{}
	}
	return m.parts[p]
}

func (m *walModel) last(p uint32) uint64 {
	mp := m.part(p)
	return mp.compactIndex + uint64(len(mp.ents))
}

func (m *walModel) save(batch []Update) {
	for _, u := range batch {
		mp := m.part(u.Partition)
		if len(u.Entries) > 0 {
			keep := int(u.Entries[0].Index - mp.compactIndex - 1)
			mp.ents = append(mp.ents[:keep:keep], u.Entries...)
		}
		if u.SaveHardState {
			mp.hs = u.HardState
		}
	}
}

func (m *walModel) compact(p uint32, index, term uint64) {
	mp := m.part(p)
	if index <= mp.compactIndex {
		return
	}
	if index <= m.last(p) && mp.ents[index-mp.compactIndex-1].Term == term {
		mp.ents = slices.Clone(mp.ents[index-mp.compactIndex:])
	} else {
		mp.ents = nil
	}
	mp.compactIndex, mp.compactTerm = index, term
}

func (m *walModel) clone() *walModel {
	c := newWALModel()
	for p, mp := range m.parts {
		c.parts[p] = &walModelPart{mp.compactIndex, mp.compactTerm, slices.Clone(mp.ents), mp.hs}
	}
	return c
}

// check compares every partition of the WAL with the model, reading all entries from
// lo = first index with the given byte budget.
func (m *walModel) check(t testing.TB, w *WAL, budget uint64) {
	t.Helper()
	for p, mp := range m.parts {
		if got, want := w.FirstIndex(p), mp.compactIndex+1; got != want {
			t.Fatalf("partition %d: FirstIndex = %d, want %d", p, got, want)
		}
		if got, want := w.LastIndex(p), m.last(p); got != want {
			t.Fatalf("partition %d: LastIndex = %d, want %d", p, got, want)
		}
		if hs, err := w.HardState(p); err != nil || hs != mp.hs {
			t.Fatalf("partition %d: HardState = %+v, %v, want %+v", p, hs, err, mp.hs)
		}
		if term, err := w.Term(p, mp.compactIndex); err != nil || term != mp.compactTerm {
			t.Fatalf("partition %d: Term(compaction point %d) = %d, %v, want %d", p, mp.compactIndex, term, err, mp.compactTerm)
		}
		for _, e := range mp.ents {
			if term, err := w.Term(p, e.Index); err != nil || term != e.Term {
				t.Fatalf("partition %d: Term(%d) = %d, %v, want %d", p, e.Index, term, err, e.Term)
			}
		}
		lo, hi := mp.compactIndex+1, m.last(p)+1
		for lo < hi {
			got, err := w.Entries(p, lo, hi, budget)
			if err != nil {
				t.Fatalf("partition %d: Entries(%d, %d, %d): %v", p, lo, hi, budget, err)
			}
			want := mp.ents[lo-mp.compactIndex-1 : hi-mp.compactIndex-1]
			checkBudget(t, got, want, budget)
			lo += uint64(len(got))
		}
	}
}

// checkBudget checks that got is the longest prefix of want whose sizes fit budget (at
// least one entry), with equal contents.
func checkBudget(t testing.TB, got, want []Entry, budget uint64) {
	t.Helper()
	n, total := 0, uint64(0)
	for i := range want {
		total += want[i].size()
		if n > 0 && total > budget {
			break
		}
		n++
	}
	if len(got) != n {
		t.Fatalf("Entries from %d with budget %d returned %d entries, want %d", want[0].Index, budget, len(got), n)
	}
	for i := range got {
		if !entriesEqual(got[i], want[i]) {
			t.Fatalf("entry %d: got %+v, want %+v", want[i].Index, got[i], want[i])
		}
	}
}

func entriesEqual(a, b Entry) bool {
	return a.Term == b.Term && a.Index == b.Index && a.Kind == b.Kind && a.ID == b.ID &&
		a.Type == b.Type && bytes.Equal(a.Data, b.Data)
}

func makeEntries(rng *rand.Rand, from uint64, n int, term uint64, maxData int) []Entry {
	ents := make([]Entry, n)
	for i := range ents {
		data := make([]byte, rng.IntN(maxData+1))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		ents[i] = Entry{Term: term, Index: from + uint64(i), Kind: EntryKind(rng.IntN(3)), ID: rng.Uint64(),
			Type: []string{"", "SetValue", "Delete"}[rng.IntN(3)], Data: data}
	}
	return ents
}

// randomBatch makes a batch over the given partitions: appends, sometimes a conflicting
// suffix, sometimes a hard state.
func randomBatch(rng *rand.Rand, m *walModel, parts []uint32, maxData int) []Update {
	var batch []Update
	for _, p := range parts {
		if rng.IntN(3) == 0 {
			continue
		}
		mp := m.part(p)
		u := Update{Partition: p}
		last := m.last(p)
		from := last + 1
		term := mp.hs.Term + 1
		if last > mp.compactIndex && rng.IntN(6) == 0 {
			from = mp.compactIndex + 1 + uint64(rng.IntN(int(last-mp.compactIndex))) // replace a suffix
		}
		if rng.IntN(4) != 0 {
			u.Entries = makeEntries(rng, from, 1+rng.IntN(4), term, maxData)
		}
		if rng.IntN(2) == 0 || len(u.Entries) == 0 {
			u.HardState = HardState{Term: term, Vote: fmt.Sprintf("n%d", rng.IntN(5)), Commit: min(from-1, last)}
			u.SaveHardState = true
		}
		batch = append(batch, u)
	}
	return batch
}

func saveBoth(t testing.TB, w *WAL, m *walModel, batch []Update) {
	t.Helper()
	if err := w.Save(batch); err != nil {
		t.Fatalf("Save: %v", err)
	}
	m.save(batch)
}

func partitionIDs(n int) []uint32 {
	ps := make([]uint32, n)
	for i := range ps {
		ps[i] = uint32(i*7 + 1)
	}
	return ps
}

func segmentFiles(t testing.TB, dir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.wal"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

func dirBytes(t testing.TB, dir string) int64 {
	t.Helper()
	total := int64(0)
	for _, f := range segmentFiles(t, dir) {
		st, err := os.Stat(f)
		if os.IsNotExist(err) {
			continue // removed by the committer meanwhile
		}
		if err != nil {
			t.Fatal(err)
		}
		total += st.Size()
	}
	return total
}

func copyDir(t testing.TB, from, to string) {
	t.Helper()
	des, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		b, err := os.ReadFile(filepath.Join(from, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, de.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// ---- options and basics ----

func TestWALOptionsAreValidated(t *testing.T) {
	for _, size := range []int64{-1, 100, 2 << 30} {
		if _, err := OpenWAL(t.TempDir(), WALOptions{SegmentSize: size}); err == nil {
			t.Errorf("SegmentSize %d accepted", size)
		}
	}
	o, err := WALOptions{}.validate()
	if err != nil || o.SegmentSize != 64<<20 || o.CacheEntries != defaultWALCacheEntries || o.Logger == nil {
		t.Fatalf("defaults: %+v, %v", o, err)
	}
}

func TestWALEmptyPartitionBounds(t *testing.T) {
	w := mustOpenWAL(t, t.TempDir(), testWALOptions(0))
	defer w.Close()
	if w.FirstIndex(3) != 1 || w.LastIndex(3) != 0 {
		t.Fatalf("empty partition: first %d last %d", w.FirstIndex(3), w.LastIndex(3))
	}
	if term, err := w.Term(3, 0); term != 0 || err != nil {
		t.Fatalf("Term(0) = %d, %v", term, err)
	}
	if _, err := w.Term(3, 1); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Term(1) = %v, want ErrUnavailable", err)
	}
	if _, err := w.Entries(3, 1, 2, 100); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Entries(1,2) = %v, want ErrUnavailable", err)
	}
	if err := w.Save(nil); err != nil {
		t.Fatalf("empty Save: %v", err)
	}
}

func TestWALSaveAfterCloseFails(t *testing.T) {
	w := mustOpenWAL(t, t.TempDir(), testWALOptions(0))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	err := w.Save([]Update{{Partition: 1, Entries: []Entry{{Term: 1, Index: 1}}}})
	if !errors.Is(err, ErrWALClosed) {
		t.Fatalf("Save after Close = %v, want ErrWALClosed", err)
	}
	if err := w.Compact(1, 1, 1); !errors.Is(err, ErrWALClosed) {
		t.Fatalf("Compact after Close = %v", err)
	}
	if _, err := w.Entries(1, 1, 1, 1); !errors.Is(err, ErrWALClosed) {
		t.Fatalf("Entries after Close = %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestWALRejectsInvalidUpdatesWithoutFailing(t *testing.T) {
	w := mustOpenWAL(t, t.TempDir(), testWALOptions(0))
	defer w.Close()
	m := newWALModel()
	rng := rand.New(rand.NewPCG(1, 2))
	saveBoth(t, w, m, []Update{{Partition: 1, Entries: makeEntries(rng, 1, 5, 1, 10)}})
	bad := [][]Update{
		{{Partition: 1, Entries: makeEntries(rng, 7, 1, 1, 10)}},                                                        // gap after 5
		{{Partition: 1, Entries: []Entry{{Term: 1, Index: 6}, {Term: 1, Index: 8}}}},                                    // not consecutive
		{{Partition: 2, Entries: makeEntries(rng, 1, 1, 1, 10)}, {Partition: 1, Entries: makeEntries(rng, 9, 1, 1, 1)}}, // second update bad: whole batch refused
		{{Partition: 1, Entries: []Entry{{Term: 1, Index: 6, Type: strings.Repeat("x", 70000)}}}},
	}
	for i, b := range bad {
		if err := w.Save(b); err == nil {
			t.Fatalf("bad batch %d accepted", i)
		}
	}
	if err := w.Compact(1, 3, 1); err != nil {
		t.Fatal(err)
	}
	m.compact(1, 3, 1)
	if err := w.Save([]Update{{Partition: 1, Entries: makeEntries(rng, 3, 1, 2, 1)}}); !errors.Is(err, ErrCompacted) {
		t.Fatalf("entries below the compaction point: %v, want ErrCompacted", err)
	}
	saveBoth(t, w, m, []Update{{Partition: 1, Entries: makeEntries(rng, 6, 2, 1, 10)}})
	m.check(t, w, 1<<20)
	if w.LastIndex(2) != 0 {
		t.Fatalf("partition 2 of a refused batch was stored")
	}
}

// ---- many partitions, ranges, budgets, reopen ----

func TestWALManyPartitionsInterleavedSurviveReopen(t *testing.T) {
	for _, cache := range []int{0, -1} {
		t.Run(fmt.Sprintf("cache=%d", cache), func(t *testing.T) {
			dir := t.TempDir()
			opts := testWALOptions(16 << 10)
			opts.CacheEntries = cache
			w := mustOpenWAL(t, dir, opts)
			m := newWALModel()
			seed := uint64(42)
			rng := rand.New(rand.NewPCG(seed, 0))
			parts := partitionIDs(12)
			for range 300 {
				saveBoth(t, w, m, randomBatch(rng, m, parts, 200))
			}
			for _, budget := range []uint64{0, 100, 1000, 1 << 20} {
				m.check(t, w, budget)
			}
			if n := len(segmentFiles(t, dir)); n < 3 {
				t.Fatalf("expected several segments, have %d", n)
			}
			w.Close()
			w = mustOpenWAL(t, dir, opts)
			defer w.Close()
			for _, budget := range []uint64{0, 300, 1 << 20} {
				m.check(t, w, budget)
			}
			// Reads of arbitrary sub-ranges.
			for _, p := range parts {
				mp := m.part(p)
				for range 20 {
					if len(mp.ents) == 0 {
						break
					}
					lo := mp.compactIndex + 1 + uint64(rng.IntN(len(mp.ents)))
					hi := lo + uint64(rng.IntN(int(m.last(p)-lo+1))) + 1
					budget := uint64(rng.IntN(2000))
					got, err := w.Entries(p, lo, hi, budget)
					if err != nil {
						t.Fatalf("Entries(%d, %d, %d, %d): %v", p, lo, hi, budget, err)
					}
					checkBudget(t, got, mp.ents[lo-mp.compactIndex-1:hi-mp.compactIndex-1], budget)
				}
				if _, err := w.Entries(p, 1, m.last(p)+2, 100); !errors.Is(err, ErrUnavailable) {
					t.Fatalf("Entries past the end: %v", err)
				}
			}
			// Writing continues where the log left off.
			for range 50 {
				saveBoth(t, w, m, randomBatch(rng, m, parts, 200))
			}
			m.check(t, w, 500)
		})
	}
}

func TestWALTruncatesConflictingSuffixAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	w := mustOpenWAL(t, dir, testWALOptions(4<<10))
	m := newWALModel()
	rng := rand.New(rand.NewPCG(3, 4))
	saveBoth(t, w, m, []Update{{Partition: 5, Entries: makeEntries(rng, 1, 10, 1, 300)}})
	saveBoth(t, w, m, []Update{{Partition: 5, Entries: makeEntries(rng, 11, 10, 1, 300)}})
	// Replace 6.. with a shorter suffix of term 2, then 8.. of term 3 within one batch.
	saveBoth(t, w, m, []Update{
		{Partition: 5, Entries: makeEntries(rng, 6, 4, 2, 300)},
		{Partition: 5, Entries: makeEntries(rng, 8, 1, 3, 300), SaveHardState: true, HardState: HardState{Term: 3, Vote: "b"}},
	})
	if w.LastIndex(5) != 8 {
		t.Fatalf("LastIndex = %d, want 8", w.LastIndex(5))
	}
	if term, _ := w.Term(5, 7); term != 2 {
		t.Fatalf("Term(7) = %d, want 2", term)
	}
	m.check(t, w, 1<<20)
	w.Close()
	w = mustOpenWAL(t, dir, testWALOptions(4<<10))
	defer w.Close()
	m.check(t, w, 1<<20)
	m.check(t, w, 0)
}

func TestWALCompactionSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	w := mustOpenWAL(t, dir, testWALOptions(4<<10))
	m := newWALModel()
	rng := rand.New(rand.NewPCG(5, 6))
	saveBoth(t, w, m, []Update{
		{Partition: 1, Entries: makeEntries(rng, 1, 20, 1, 100)},
		{Partition: 2, Entries: makeEntries(rng, 1, 20, 1, 100)},
		{Partition: 3, Entries: makeEntries(rng, 1, 5, 1, 100)},
	})
	compact := func(p uint32, index, term uint64) {
		t.Helper()
		if err := w.Compact(p, index, term); err != nil {
			t.Fatal(err)
		}
		m.compact(p, index, term)
	}
	compact(1, 10, 1) // an ordinary snapshot
	compact(2, 30, 4) // a snapshot beyond the log: everything goes
	compact(3, 3, 7)  // a snapshot that conflicts with the log: everything goes
	compact(1, 5, 1)  // older than the current point: no effect
	if _, err := w.Term(1, 9); !errors.Is(err, ErrCompacted) {
		t.Fatalf("Term below the compaction point: %v", err)
	}
	if _, err := w.Entries(1, 10, 12, 100); !errors.Is(err, ErrCompacted) {
		t.Fatalf("Entries below the first index: %v", err)
	}
	saveBoth(t, w, m, []Update{{Partition: 2, Entries: makeEntries(rng, 31, 3, 4, 100)}})
	m.check(t, w, 1<<20)
	w.Close()
	w = mustOpenWAL(t, dir, testWALOptions(4<<10))
	defer w.Close()
	m.check(t, w, 1<<20)
}

// ---- group commit ----

// countingFS counts fsyncs and can make writes or syncs fail.
type countingFS struct {
	osFS
	syncs      atomic.Int64
	mu         sync.Mutex
	failWrite  error // returned by the next WriteAt to a segment, after writing half
	failSync   error // returned by the next Sync
	failRemove error // returned by every Remove
	writeCalls int
}

func (f *countingFS) Remove(name string) error {
	f.mu.Lock()
	err := f.failRemove
	f.mu.Unlock()
	if err != nil {
		return err
	}
	return f.osFS.Remove(name)
}

type countingFile struct {
	walFile
	fs *countingFS
}

func (f *countingFS) OpenFile(name string, flag int) (walFile, error) {
	wf, err := f.osFS.OpenFile(name, flag)
	if err != nil {
		return nil, err
	}
	return countingFile{wf, f}, nil
}

func (f countingFile) Sync() error {
	f.fs.syncs.Add(1)
	f.fs.mu.Lock()
	err := f.fs.failSync
	f.fs.failSync = nil
	f.fs.mu.Unlock()
	if err != nil {
		return err
	}
	return f.walFile.Sync()
}

func (f countingFile) WriteAt(b []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	f.fs.writeCalls++
	err := f.fs.failWrite
	f.fs.failWrite = nil
	f.fs.mu.Unlock()
	if err != nil {
		n, _ := f.walFile.WriteAt(b[:len(b)/2], off)
		return n, err
	}
	return f.walFile.WriteAt(b, off)
}

func TestWALGroupCommitOneFrameOneFsyncPerRound(t *testing.T) {
	// Drive one committer round by hand: three Saves, one of them invalid, gathered into one
	// frame; each learns its own outcome and the round costs one write and one fsync.
	fs := &countingFS{}
	dir := t.TempDir()
	w, err := openWAL(dir, syncedWALOptions(0), fs)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	rng := rand.New(rand.NewPCG(7, 8))
	mk := func(batch []Update) *walRequest {
		r, err := encodeWALBatch(batch, &w.bufs)
		if err != nil {
			t.Fatal(err)
		}
		r.done = make(chan struct{})
		return r
	}
	good1 := mk([]Update{{Partition: 1, Entries: makeEntries(rng, 1, 3, 1, 50)}})
	bad := mk([]Update{{Partition: 1, Entries: makeEntries(rng, 9, 1, 1, 50)}})                 // gap
	good2 := mk([]Update{{Partition: 1, Entries: makeEntries(rng, 3, 2, 2, 50)}, {Partition: 2, // replaces 3 staged by good1
		SaveHardState: true, HardState: HardState{Term: 2, Vote: "x"}}})
	syncsBefore, writesBefore := fs.syncs.Load(), fs.writeCalls
	w.commitRound([]*walRequest{good1, bad, good2})
	for i, r := range []*walRequest{good1, bad, good2} {
		<-r.done
		if (r.err != nil) != (r == bad) {
			t.Fatalf("request %d: err = %v", i, r.err)
		}
	}
	if got := fs.syncs.Load() - syncsBefore; got != 1 {
		t.Fatalf("round used %d fsyncs, want 1", got)
	}
	if got := fs.writeCalls - writesBefore; got != 1 {
		t.Fatalf("round used %d writes, want 1", got)
	}
	m := newWALModel()
	m.save(good1.batch)
	m.save(good2.batch)
	m.check(t, w, 1<<20)
	w.Close()
	w = mustOpenWAL(t, dir, testWALOptions(0))
	defer w.Close()
	m.check(t, w, 1<<20)
}

func TestWALConcurrentSavesAllLand(t *testing.T) {
	fs := &countingFS{}
	dir := t.TempDir()
	w, err := openWAL(dir, syncedWALOptions(64<<10), fs)
	if err != nil {
		t.Fatal(err)
	}
	const writers, perWriter = 32, 40
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				e := Entry{Term: 1, Index: uint64(i + 1), Data: []byte(fmt.Sprintf("g%d-%d", g, i))}
				if err := w.Save([]Update{{Partition: uint32(g), Entries: []Entry{e}}}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if syncs := fs.syncs.Load(); syncs > writers*perWriter {
		t.Fatalf("%d fsyncs for %d saves", syncs, writers*perWriter)
	}
	w.Close()
	w = mustOpenWAL(t, dir, testWALOptions(64<<10))
	defer w.Close()
	for g := range writers {
		ents, err := w.Entries(uint32(g), 1, perWriter+1, 1<<20)
		if err != nil || len(ents) != perWriter {
			t.Fatalf("partition %d: %d entries, %v", g, len(ents), err)
		}
		for i, e := range ents {
			if string(e.Data) != fmt.Sprintf("g%d-%d", g, i) {
				t.Fatalf("partition %d entry %d: %q", g, i+1, e.Data)
			}
		}
	}
}

// ---- S26: sticky failures, full disk ----

func TestWALFailedWriteIsStickyS26(t *testing.T) {
	for _, tc := range []struct {
		name     string
		inject   func(*countingFS)
		diskFull bool
	}{
		{"write", func(f *countingFS) { f.failWrite = syscall.EIO }, false},
		{"fsync", func(f *countingFS) { f.failSync = syscall.EIO }, false},
		{"enospc", func(f *countingFS) { f.failWrite = syscall.ENOSPC }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := &countingFS{}
			dir := t.TempDir()
			w, err := openWAL(dir, syncedWALOptions(0), fs)
			if err != nil {
				t.Fatal(err)
			}
			m := newWALModel()
			rng := rand.New(rand.NewPCG(9, 10))
			saveBoth(t, w, m, []Update{{Partition: 1, Entries: makeEntries(rng, 1, 5, 1, 100)}})
			fs.mu.Lock()
			tc.inject(fs)
			fs.mu.Unlock()
			err = w.Save([]Update{{Partition: 1, Entries: makeEntries(rng, 6, 5, 1, 100)}})
			if err == nil {
				t.Fatal("Save succeeded despite the injected failure")
			}
			if tc.diskFull && (!errors.Is(err, ErrDiskFull) || !errors.Is(err, syscall.ENOSPC)) {
				t.Fatalf("disk full not reported as such: %v", err)
			}
			// Every later Save fails, even though the disk works again.
			for i := range 3 {
				err := w.Save([]Update{{Partition: 2, Entries: makeEntries(rng, uint64(i+1), 1, 1, 10)}})
				if err == nil {
					t.Fatal("Save after a failure succeeded")
				}
			}
			if err := w.Compact(1, 2, 1); err == nil {
				t.Fatal("Compact after a failure succeeded")
			}
			// The log stays readable and shows only what was durable.
			m.check(t, w, 1<<20)
			if w.LastIndex(2) != 0 {
				t.Fatal("a failed Save is visible")
			}
			w.Close()
			w = mustOpenWAL(t, dir, testWALOptions(0))
			defer w.Close()
			if tc.name == "fsync" {
				// The frame reached the page cache; whether a crash keeps it is up to the
				// disk. Without a crash it is still there, which reopening may show.
				if last := w.LastIndex(1); last != 5 && last != 10 {
					t.Fatalf("LastIndex after reopen = %d", last)
				}
				return
			}
			m.check(t, w, 1<<20)
		})
	}
}

// ---- S24: crash at every byte of the tail ----

type walSnapshot struct {
	seq   uint64
	end   int64 // end of this batch's frame in segment seq
	model *walModel
}

// buildCrashLog writes batches over several segments and returns, after each Save, the
// model and where the frame ended.
func buildCrashLog(t *testing.T, dir string, seed uint64, batches int) []walSnapshot {
	w := mustOpenWAL(t, dir, testWALOptions(4<<10))
	defer w.Close()
	m := newWALModel()
	rng := rand.New(rand.NewPCG(seed, 1))
	snaps := []walSnapshot{{seq: 1, end: walSegmentHeaderSize, model: m.clone()}}
	for range batches {
		saveBoth(t, w, m, randomBatch(rng, m, partitionIDs(3), 120))
		w.mu.RLock()
		s := w.segs[len(w.segs)-1]
		snaps = append(snaps, walSnapshot{seq: s.seq, end: s.size, model: m.clone()})
		w.mu.RUnlock()
	}
	return snaps
}

func TestWALCrashAtEveryByteOfTheTailS24(t *testing.T) {
	dir := t.TempDir()
	snaps := buildCrashLog(t, dir, 11, 60)
	files := segmentFiles(t, dir)
	if len(files) < 3 {
		t.Fatalf("want several segments, got %d", len(files))
	}
	lastSeq := snaps[len(snaps)-1].seq
	lastFile := files[len(files)-1]
	full, err := os.ReadFile(lastFile)
	if err != nil {
		t.Fatal(err)
	}
	// The last frames that lie in the last segment (at most 4).
	first := len(snaps) - 1
	frames := 3
	if testing.Short() {
		frames = 2
	}
	for first > 1 && snaps[first-1].seq == lastSeq && len(snaps)-first < frames {
		first--
	}
	from := int64(walSegmentHeaderSize)
	if snaps[first-1].seq == lastSeq {
		from = snaps[first-1].end
	}
	opts := testWALOptions(4 << 10)
	rng := rand.New(rand.NewPCG(11, 11))
	crash := t.TempDir()
	copyDir(t, dir, crash)
	checked := 0
	for cut := from; cut <= int64(len(full)); cut++ {
		// Expected: every batch whose frame ends at or before the cut.
		want := snaps[0].model
		for _, s := range snaps {
			if s.seq < lastSeq || s.end <= cut {
				want = s.model
			}
		}
		for _, fill := range []string{"none", "zero", "garbage"} {
			tail := slices.Clone(full[:cut])
			switch fill {
			case "zero": // the file grew but the data never reached the disk
				tail = append(tail, make([]byte, int64(len(full))-cut+100)...)
			case "garbage": // the rest of the write came out scrambled
				junk := make([]byte, int64(len(full))-cut)
				for i := range junk {
					junk[i] = byte(rng.Uint32())
				}
				tail = append(tail, junk...)
			}
			if err := os.WriteFile(filepath.Join(crash, filepath.Base(lastFile)), tail, 0o600); err != nil {
				t.Fatal(err)
			}
			w, err := OpenWAL(crash, opts)
			if err != nil {
				t.Fatalf("cut at %d (fill %s): reopen failed: %v", cut, fill, err)
			}
			want.check(t, w, 1<<20)
			checked++
			if cut%8 != 0 {
				w.Close()
				continue
			}
			// The WAL keeps working after the recovery, and the result survives a reopen.
			m := want.clone()
			saveBoth(t, w, m, randomBatch(rng, m, partitionIDs(3), 50))
			w.Close()
			w = mustOpenWAL(t, crash, opts)
			m.check(t, w, 1<<20)
			w.Close()
			// Writing may have added or removed segments: start again from the original.
			os.RemoveAll(crash)
			os.Mkdir(crash, 0o700)
			copyDir(t, dir, crash)
		}
	}
	t.Logf("checked %d crash points over %d bytes", checked, int64(len(full))-from+1)
}

func TestWALCrashWhileCreatingASegmentS24(t *testing.T) {
	dir := t.TempDir()
	snaps := buildCrashLog(t, dir, 12, 20)
	// A crash between creating the next segment and renaming it leaves a .tmp file.
	tmp := filepath.Join(dir, walSegmentName(snaps[len(snaps)-1].seq+1)+".tmp")
	if err := os.WriteFile(tmp, []byte("kmdrwal"), 0o600); err != nil {
		t.Fatal(err)
	}
	w := mustOpenWAL(t, dir, testWALOptions(4<<10))
	defer w.Close()
	snaps[len(snaps)-1].model.check(t, w, 1<<20)
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatalf("leftover %s not removed: %v", tmp, err)
	}
}

// ---- S25: corruption before the tail ----

// walFrames lists the frame offsets of a segment file.
func walFrames(t *testing.T, b []byte) []int64 {
	var offs []int64
	for off := int64(walSegmentHeaderSize); off < int64(len(b)); {
		offs = append(offs, off)
		n := int64(b[off]) | int64(b[off+1])<<8 | int64(b[off+2])<<16 | int64(b[off+3])<<24
		off += walFrameHeaderSize + n
	}
	return offs
}

func TestWALFlippedBitBeforeTheTailIsCorruptionS25(t *testing.T) {
	dir := t.TempDir()
	snaps := buildCrashLog(t, dir, 13, 40)
	files := segmentFiles(t, dir)
	rng := rand.New(rand.NewPCG(13, 13))
	tried := 0
	for fi, file := range files {
		orig, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		offs := walFrames(t, orig)
		for k, off := range offs {
			end := int64(len(orig))
			if k+1 < len(offs) {
				end = offs[k+1]
			}
			if fi == len(files)-1 && k == len(offs)-1 {
				continue // the tail frame: a flipped bit there looks like a torn write
			}
			// A bit in the length, in each checksum, and somewhere in the payload.
			for _, pos := range []int64{off, off + 5, off + 9, off + walFrameHeaderSize + rng.Int64N(end-off-walFrameHeaderSize)} {
				bit := byte(1) << rng.IntN(8)
				bad := slices.Clone(orig)
				bad[pos] ^= bit
				if err := os.WriteFile(file, bad, 0o600); err != nil {
					t.Fatal(err)
				}
				_, err := OpenWAL(dir, testWALOptions(4<<10))
				want := fmt.Sprintf("%s: offset %d:", file, off)
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), want) {
					t.Fatalf("bit %#x at byte %d of %s (frame at %d): err = %v, want ErrCorrupt naming %q", bit, pos, file, off, err, want)
				}
				tried++
			}
		}
		// A flipped bit in the segment header.
		bad := slices.Clone(orig)
		bad[9] ^= 1
		os.WriteFile(file, bad, 0o600)
		if _, err := OpenWAL(dir, testWALOptions(4<<10)); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), file+": offset 0") {
			t.Fatalf("bad segment header: %v", err)
		}
		if err := os.WriteFile(file, orig, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d flipped bits over %d segments all reported", tried, len(files))
	// Restored: opens and holds everything.
	w := mustOpenWAL(t, dir, testWALOptions(4<<10))
	defer w.Close()
	snaps[len(snaps)-1].model.check(t, w, 1<<20)
}

func TestWALMissingSegmentIsCorruptionS25(t *testing.T) {
	dir := t.TempDir()
	buildCrashLog(t, dir, 14, 40)
	files := segmentFiles(t, dir)
	if len(files) < 3 {
		t.Fatalf("want 3 segments, have %d", len(files))
	}
	os.Remove(files[1])
	if _, err := OpenWAL(dir, testWALOptions(4<<10)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("missing middle segment: %v", err)
	}
}

func TestWALMissingOldestSegmentIsCorruptionS25(t *testing.T) {
	// Deleting the first segment by hand loses entries that nothing compacted: the WAL
	// must notice the hole rather than serve a log with its start cut off.
	dir := t.TempDir()
	buildCrashLog(t, dir, 15, 40)
	files := segmentFiles(t, dir)
	os.Remove(files[0])
	if _, err := OpenWAL(dir, testWALOptions(4<<10)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("missing first segment: %v", err)
	}
}

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
	m.check(t, w, 1<<20)
	w.Close()
	w = mustOpenWAL(t, dir, opts)
	defer w.Close()
	m.check(t, w, 1<<20)
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
	m.check(t, w, 1<<20)
	w.Close()
	w = mustOpenWAL(t, dir, opts)
	defer w.Close()
	m.check(t, w, 1<<20)
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

// fullFS fails the creation of new files with ENOSPC, as a full disk does.
type fullFS struct{ osFS }

func (fullFS) OpenFile(name string, flag int) (walFile, error) {
	if flag&os.O_CREATE != 0 {
		return nil, &os.PathError{Op: "open", Path: name, Err: syscall.ENOSPC}
	}
	return osFS{}.OpenFile(name, flag)
}

func TestWALFullDiskWhileStartingASegmentIsReportedS26(t *testing.T) {
	dir := t.TempDir()
	opts := testWALOptions(4 << 10)
	w := mustOpenWAL(t, dir, opts)
	m := newWALModel()
	rng := rand.New(rand.NewPCG(18, 0))
	saveBoth(t, w, m, []Update{{Partition: 1, Entries: makeEntries(rng, 1, 3, 1, 100)}})
	w.Close()
	w, err := openWAL(dir, opts, fullFS{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var saveErr error
	for i := 0; saveErr == nil && i < 100; i++ {
		u := []Update{{Partition: 1, Entries: makeEntries(rng, m.last(1)+1, 1, 1, 500)}}
		if saveErr = w.Save(u); saveErr == nil {
			m.save(u)
		}
	}
	if !errors.Is(saveErr, ErrDiskFull) || !errors.Is(saveErr, syscall.ENOSPC) {
		t.Fatalf("Save on a full disk: %v, want ErrDiskFull", saveErr)
	}
	if err := w.Save([]Update{{Partition: 2, Entries: makeEntries(rng, 1, 1, 1, 10)}}); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("a later Save: %v", err)
	}
	m.check(t, w, 1<<20) // still readable
}

func TestWALTornLastFrameWithHolesS24(t *testing.T) {
	// A crash may persist the pages of the last write out of order: any byte range of the
	// last frame may be zero while later ones made it. Reopening drops that frame.
	dir := t.TempDir()
	snaps := buildCrashLog(t, dir, 19, 30)
	files := segmentFiles(t, dir)
	lastFile := files[len(files)-1]
	full, err := os.ReadFile(lastFile)
	if err != nil {
		t.Fatal(err)
	}
	n := len(snaps)
	if snaps[n-2].seq != snaps[n-1].seq {
		t.Fatalf("the last two frames should share a segment")
	}
	start, end := snaps[n-2].end, snaps[n-1].end
	rng := rand.New(rand.NewPCG(19, 19))
	opts := testWALOptions(4 << 10)
	for range 200 {
		lo := start + rng.Int64N(end-start)
		hi := lo + 1 + rng.Int64N(end-lo)
		torn := slices.Clone(full)
		clear(torn[lo:hi])
		if err := os.WriteFile(lastFile, torn, 0o600); err != nil {
			t.Fatal(err)
		}
		w, err := OpenWAL(dir, opts)
		if err != nil {
			t.Fatalf("zeroed [%d, %d) of the last frame: %v", lo, hi, err)
		}
		want := snaps[n-2].model
		if bytes.Equal(torn, full) {
			want = snaps[n-1].model // the range held zeroes already: the frame is whole
		}
		want.check(t, w, 1<<20)
		w.Close()
	}
}

func TestWALReadsWhileWritingAndCompacting(t *testing.T) {
	// Readers run against the committer, segment rolls, carries and removals; the race
	// detector and the content checks must both stay quiet.
	opts := testWALOptions(4 << 10)
	opts.CacheEntries = -1 // every read goes to the segment files
	w := mustOpenWAL(t, t.TempDir(), opts)
	defer w.Close()
	const parts = 3
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, parts+1)
	for p := range uint32(parts) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				runtime.Gosched() // leave the committer room on a small machine
				first, last := w.FirstIndex(p), w.LastIndex(p)
				if last < first {
					continue
				}
				ents, err := w.Entries(p, first, min(last+1, first+10), 2000)
				if errors.Is(err, ErrCompacted) || errors.Is(err, ErrUnavailable) {
					continue // compacted or truncated meanwhile
				}
				if err != nil {
					errs <- err
					return
				}
				for i, e := range ents {
					if e.Index != first+uint64(i) || string(e.Data) != fmt.Sprintf("p%d-%d-%d", p, e.Index, e.Term) {
						errs <- fmt.Errorf("partition %d: read %+v", p, e)
						return
					}
				}
			}
		}()
	}
	next := [parts]uint64{}
	for i := range 600 {
		p := uint32(i % parts)
		term := uint64(1 + i/100)
		from := next[p] + 1
		if i%7 == 0 && next[p] > w.FirstIndex(p)+2 {
			from = next[p] - 1 // replace a suffix
		}
		ents := make([]Entry, 3)
		for j := range ents {
			idx := from + uint64(j)
			ents[j] = Entry{Term: term, Index: idx, Data: []byte(fmt.Sprintf("p%d-%d-%d", p, idx, term))}
		}
		if err := w.Save([]Update{{Partition: p, Entries: ents}}); err != nil {
			t.Fatal(err)
		}
		next[p] = from + 2
		if i%20 == 19 {
			term, err := w.Term(p, next[p]-5)
			if err == nil {
				if err := w.Compact(p, next[p]-5, term); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// failingReadFS fails every read after the first okReads with EIO, as a dying disk does.
type failingReadFS struct {
	osFS
	okReads *atomic.Int64
}

type failingReadFile struct {
	walFile
	okReads *atomic.Int64
}

func (f failingReadFS) OpenFile(name string, flag int) (walFile, error) {
	wf, err := f.osFS.OpenFile(name, flag)
	if err != nil {
		return nil, err
	}
	return failingReadFile{wf, f.okReads}, nil
}

func (f failingReadFile) ReadAt(b []byte, off int64) (int, error) {
	if f.okReads.Add(-1) < 0 {
		n, _ := f.walFile.ReadAt(b[:len(b)/2], off)
		return n, syscall.EIO
	}
	return f.walFile.ReadAt(b, off)
}

func TestWALReadErrorsAreReportedNotRepaired(t *testing.T) {
	// A read error while recovering must fail the open (it says nothing about the bytes):
	// it must never be taken for a torn tail and cut off, nor panic. Reads of entries that
	// fail return the error.
	dir := t.TempDir()
	snaps := buildCrashLog(t, dir, 20, 30)
	want := snaps[len(snaps)-1].model
	files := segmentFiles(t, dir)
	sizes := map[string]int64{}
	for _, f := range files {
		st, _ := os.Stat(f)
		sizes[f] = st.Size()
	}
	opts := testWALOptions(4 << 10)
	opts.CacheEntries = -1
	for ok := int64(0); ; ok++ {
		var budget atomic.Int64
		budget.Store(ok)
		w, err := openWAL(dir, opts, failingReadFS{okReads: &budget})
		if err == nil {
			// Enough reads succeeded to open; now reads of entries hit the failure.
			_, err := w.Entries(1, w.FirstIndex(1), w.LastIndex(1)+1, 1<<20)
			if !errors.Is(err, syscall.EIO) {
				t.Fatalf("Entries with a failing disk: %v", err)
			}
			w.Close()
			t.Logf("opening failed cleanly with each of the first %d reads failing", ok)
			break
		}
		if !errors.Is(err, syscall.EIO) {
			t.Fatalf("open with read %d failing: %v, want the EIO", ok, err)
		}
		if ok > 10000 {
			t.Fatal("open never succeeded")
		}
	}
	for _, f := range files {
		if st, _ := os.Stat(f); st.Size() != sizes[f] {
			t.Fatalf("%s was cut from %d to %d bytes after read errors", f, sizes[f], st.Size())
		}
	}
	w := mustOpenWAL(t, dir, opts)
	defer w.Close()
	want.check(t, w, 1<<20)
}

func TestWALSaveCopiesEntryData(t *testing.T) {
	w := mustOpenWAL(t, t.TempDir(), testWALOptions(0))
	defer w.Close()
	data := []byte("original")
	if err := w.Save([]Update{{Partition: 1, Entries: []Entry{{Term: 1, Index: 1, Data: data}}}}); err != nil {
		t.Fatal(err)
	}
	copy(data, "CHANGED!") // the caller reuses its buffer
	ents, err := w.Entries(1, 1, 2, 100)
	if err != nil || len(ents) != 1 || string(ents[0].Data) != "original" {
		t.Fatalf("Entries after the caller changed its buffer: %q, %v", ents, err)
	}
}

// A Save too large for the recent-entry cache must not leave the cache looking as if it
// still ended at the log's last entry: a large entry saved after small ones reads back
// whole in every range that includes it. (Found by an 8 MiB PUT through three `kommander
// node` processes: a follower panicked in Entries reading the committed entry.)
func TestWALReturnsLargeEntriesAfterSmallOnes(t *testing.T) {
	w, err := OpenWAL(t.TempDir(), WALOptions{UnsafeNoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	small := Entry{Term: 1, Index: 1, Type: "put", Data: []byte("small")}
	big := Entry{Term: 1, Index: 2, Type: "put", Data: bytes.Repeat([]byte("v"), 256<<10)}
	for _, e := range []Entry{small, big} {
		if err := w.Save([]Update{{Partition: 0, Entries: []Entry{e}}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, lo := range []uint64{1, 2} {
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("Entries(%d, 3) panicked: %v", lo, p)
				}
			}()
			ents, err := w.Entries(0, lo, 3, 1<<30)
			if err != nil {
				t.Errorf("Entries(%d, 3): %v", lo, err)
				return
			}
			if len(ents) != int(3-lo) || !bytes.Equal(ents[len(ents)-1].Data, big.Data) {
				t.Errorf("Entries(%d, 3) returned %d entries, the last with %d bytes; want the %d-byte entry last",
					lo, len(ents), len(ents[len(ents)-1].Data), len(big.Data))
			}
		}()
	}
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
	// A crash: the files stay as they are (the first WAL is abandoned, not closed).
	w.closeFiles()
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
