package kommander

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// encodeTestSnapshot returns a whole snapshot file of m holding data.
func encodeTestSnapshot(t testing.TB, m snapshotMeta, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := newSnapshotWriter(&b, m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.finish(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestSnapshotFileRoundTrip(t *testing.T) {
	m := snapshotMeta{partition: 7, index: 1234, term: 9, voters: []string{"a", "bb", "ccc"}}
	data := []byte("the state machine's state")
	file := encodeTestSnapshot(t, m, data)
	l, err := decodeSnapshot(bytes.NewReader(file), int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(l.meta) != fmt.Sprint(m) {
		t.Fatalf("meta = %+v, want %+v", l.meta, m)
	}
	if got := file[l.dataOff : l.dataOff+l.dataLn]; !bytes.Equal(got, data) {
		t.Fatalf("data = %q", got)
	}
}

// S27: a snapshot file carries the learners beside the voters; a file of the first format
// version, which has no learners, still reads.
func TestSnapshotFileCarriesLearnersAndReadsVersion1S27(t *testing.T) {
	m := snapshotMeta{partition: 2, index: 99, term: 4, voters: []string{"n1", "n2"}, learners: []string{"n3"}}
	file := encodeTestSnapshot(t, m, []byte("state"))
	l, err := decodeSnapshot(bytes.NewReader(file), int64(len(file)))
	if err != nil || fmt.Sprint(l.meta) != fmt.Sprint(m) {
		t.Fatalf("meta = %+v, %v; want %+v", l.meta, err, m)
	}
	// Version 1: the same header without the learner count, and its own CRC.
	m.learners = nil
	v2 := encodeTestSnapshot(t, m, []byte("state"))
	l2, err := decodeSnapshot(bytes.NewReader(v2), int64(len(v2)))
	if err != nil {
		t.Fatal(err)
	}
	hdrEnd := int(l2.dataOff) - 4 // the CRC
	v1 := append([]byte(snapMagicV1), v2[8:hdrEnd-2]...)
	v1 = binary.LittleEndian.AppendUint32(v1, crc32.Checksum(v1, snapCRC))
	v1 = append(v1, v2[l2.dataOff:]...)
	l1, err := decodeSnapshot(bytes.NewReader(v1), int64(len(v1)))
	if err != nil || fmt.Sprint(l1.meta) != fmt.Sprint(m) {
		t.Fatalf("version 1: meta = %+v, %v; want %+v", l1.meta, err, m)
	}
	if got := v1[l1.dataOff : l1.dataOff+l1.dataLn]; string(got) != "state" {
		t.Fatalf("version 1 data %q", got)
	}
}

// S21: a truncated or bit-flipped snapshot never decodes, wherever the damage is.
func TestSnapshotFileDamageIsDetectedS21(t *testing.T) {
	m := snapshotMeta{partition: 1, index: 50, term: 3, voters: []string{"n1", "n2", "n3"}}
	data := bytes.Repeat([]byte("0123456789"), 100)
	file := encodeTestSnapshot(t, m, data)
	for cut := 0; cut < len(file); cut++ {
		if _, err := decodeSnapshot(bytes.NewReader(file[:cut]), int64(cut)); !errors.Is(err, ErrSnapshotCorrupt) {
			t.Fatalf("truncated to %d bytes: err = %v, want ErrSnapshotCorrupt", cut, err)
		}
	}
	for bit := 0; bit < 8*len(file); bit++ {
		bad := bytes.Clone(file)
		bad[bit/8] ^= 1 << (bit % 8)
		if _, err := decodeSnapshot(bytes.NewReader(bad), int64(len(bad))); !errors.Is(err, ErrSnapshotCorrupt) {
			t.Fatalf("bit %d flipped: err = %v, want ErrSnapshotCorrupt", bit, err)
		}
	}
}

func FuzzSnapshotDecode(f *testing.F) {
	f.Add(encodeTestSnapshot(f, snapshotMeta{partition: 0, index: 1, term: 1, voters: []string{"a"}}, []byte("x")))
	f.Add(encodeTestSnapshot(f, snapshotMeta{partition: 3, index: 99, term: 4}, nil))
	f.Fuzz(func(t *testing.T, file []byte) {
		l, err := decodeSnapshot(bytes.NewReader(file), int64(len(file)))
		if err != nil {
			if !errors.Is(err, ErrSnapshotCorrupt) {
				t.Fatalf("error %v does not wrap ErrSnapshotCorrupt", err)
			}
			return
		}
		// Whatever decodes re-encodes to the same bytes: nothing in a file is unchecked.
		again := encodeTestSnapshot(t, l.meta, file[l.dataOff:l.dataOff+l.dataLn])
		if !bytes.Equal(again, file) {
			t.Fatalf("re-encoding differs:\n in  %x\n out %x", file, again)
		}
	})
}

func TestSnapshotStores(t *testing.T) {
	dir, err := NewDirSnapshotStore(filepath.Join(t.TempDir(), "snaps"))
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*SnapshotStore{"dir": dir, "memory": NewMemorySnapshotStore()} {
		t.Run(name, func(t *testing.T) {
			write := func(r snapshotRef, data string) {
				k, err := s.create(r)
				if err != nil {
					t.Fatal(err)
				}
				w, err := newSnapshotWriter(k, snapshotMeta{partition: r.partition, index: r.index, term: r.term})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := io.WriteString(w, data); err != nil {
					t.Fatal(err)
				}
				if err := w.finish(); err != nil {
					t.Fatal(err)
				}
				if err := k.commit(); err != nil {
					t.Fatal(err)
				}
			}
			old, newer := snapshotRef{2, 10, 1}, snapshotRef{2, 20, 2}
			write(old, "old")
			write(newer, "new")
			write(snapshotRef{3, 30, 2}, "other partition")
			k, err := s.create(snapshotRef{2, 40, 2}) // abandoned: never listed
			if err != nil {
				t.Fatal(err)
			}
			k.abort()
			refs, err := s.list(2)
			if err != nil || fmt.Sprint(refs) != fmt.Sprint([]snapshotRef{newer, old}) {
				t.Fatalf("list = %v, %v", refs, err)
			}
			f, err := s.open(newer)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(f.data())
			f.Close()
			if string(got) != "new" {
				t.Fatalf("data = %q", got)
			}
			if err := s.removeOlder(newer); err != nil {
				t.Fatal(err)
			}
			if refs, _ := s.list(2); len(refs) != 1 {
				t.Fatalf("after removeOlder: %v", refs)
			}
		})
	}
}

// S21: a snapshot file damaged on disk is refused when opened, and a crash's temporary
// file is removed when the store opens.
func TestSnapshotStoreRefusesDamagedFilesS21(t *testing.T) {
	dir := t.TempDir()
	s, err := NewDirSnapshotStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := snapshotRef{0, 5, 1}
	file := encodeTestSnapshot(t, snapshotMeta{partition: 0, index: 5, term: 1}, []byte("state"))
	rng := rand.New(rand.NewPCG(1, 2))
	file[len(file)-1-rng.IntN(10)] ^= 0x10
	if err := os.WriteFile(filepath.Join(dir, r.name()), file, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, r.name()+".1.tmp"), file, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.open(r); !errors.Is(err, ErrSnapshotCorrupt) {
		t.Fatalf("open = %v, want ErrSnapshotCorrupt", err)
	}
	if _, err := NewDirSnapshotStore(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, r.name()+".1.tmp")); !os.IsNotExist(err) {
		t.Fatalf("temporary file still there: %v", err)
	}
}
