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
	"slices"
	"strings"
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

// checkAndReopen checks w against m, closes it, and checks the WAL reopened from dir the
// same way: what was acknowledged must survive a clean close.
func checkAndReopen(t testing.TB, w *WAL, dir string, opts WALOptions, m *walModel) {
	t.Helper()
	m.check(t, w, 1<<20)
	w.Close()
	w = mustOpenWAL(t, dir, opts)
	defer w.Close()
	m.check(t, w, 1<<20)
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
