package kommander

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

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
	beforeSync func() // if set, runs at the start of every Sync
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
	hook := f.fs.beforeSync
	f.fs.mu.Unlock()
	if hook != nil {
		hook()
	}
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
	dir := t.TempDir()
	w := mustOpenWAL(t, dir, syncedWALOptions(64<<10))
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

// TestWALSavesQueuedBehindAnFsyncShareTheNext: while one round's fsync runs, every Save
// that arrives queues up, and the next round writes all of them with one fsync. The first
// fsync is held until the other writers have queued, so the outcome does not depend on
// scheduling (counting fsyncs of freely racing writers would).
func TestWALSavesQueuedBehindAnFsyncShareTheNext(t *testing.T) {
	fs := &countingFS{}
	w, err := openWAL(t.TempDir(), syncedWALOptions(64<<20), fs)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// A first Save creates the segment, with fsyncs of its own that are not counted.
	if err := w.Save([]Update{{Partition: 99, Entries: []Entry{{Term: 1, Index: 1}}}}); err != nil {
		t.Fatal(err)
	}
	const writers = 32
	var held sync.Once
	fs.mu.Lock()
	fs.beforeSync = func() {
		held.Do(func() {
			// Hold the first round's fsync until every other writer waits in the queue.
			deadline := time.Now().Add(10 * time.Second)
			for {
				w.qmu.Lock()
				queued := len(w.queue) + w.lastRound
				w.qmu.Unlock()
				if queued == writers {
					return
				}
				if time.Now().After(deadline) {
					t.Errorf("only %d of %d Saves queued behind the fsync", queued, writers)
					return
				}
				runtime.Gosched()
			}
		})
	}
	fs.mu.Unlock()
	before := fs.syncs.Load()
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.Save([]Update{{Partition: uint32(g), Entries: []Entry{{Term: 1, Index: 1, Data: []byte("x")}}}}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if syncs := fs.syncs.Load() - before; syncs != 2 {
		t.Fatalf("%d Saves took %d fsyncs, want 2 (the held round and one for all that queued behind it)", writers, syncs)
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
