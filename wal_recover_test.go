package kommander

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

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
