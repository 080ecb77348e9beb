package kommander

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"path/filepath"
	"testing"
)

// walFuzzFrames builds a segment with a valid header whose frames carry the given payloads
// with valid checksums, so that the fuzzer reaches record decoding and replay instead of
// stopping at a checksum. data is a sequence of (uint16 length, bytes).
func walFuzzFrames(seq uint64, data []byte) []byte {
	seg := make([]byte, walSegmentHeaderSize)
	copy(seg, walMagic)
	binary.LittleEndian.PutUint64(seg[8:], seq)
	binary.LittleEndian.PutUint32(seg[16:], crc32.Checksum(seg[:16], walCRC))
	for len(data) >= 2 {
		n := min(int(binary.LittleEndian.Uint16(data)), len(data)-2)
		payload := data[2 : 2+n]
		data = data[2+n:]
		if n == 0 {
			continue
		}
		off := int64(len(seg))
		var hdr [walFrameHeaderSize]byte
		binary.LittleEndian.PutUint32(hdr[:], uint32(n))
		binary.LittleEndian.PutUint32(hdr[4:], crc32.Checksum(payload, walCRC))
		binary.LittleEndian.PutUint32(hdr[8:], frameHeaderCRC(hdr[:], seq, off))
		seg = append(append(seg, hdr[:]...), payload...)
	}
	return seg
}

// walFuzzState is everything a WAL shows through Storage, for comparing two openings.
type walFuzzState map[uint32][]any

func captureWALState(t *testing.T, w *WAL) walFuzzState {
	st := walFuzzState{}
	w.mu.RLock()
	var parts []uint32
	for p := range w.parts {
		parts = append(parts, p)
	}
	w.mu.RUnlock()
	for _, p := range parts {
		first, last := w.FirstIndex(p), w.LastIndex(p)
		hs, _ := w.HardState(p)
		term, err := w.Term(p, first-1)
		if err != nil {
			t.Fatalf("partition %d: Term(first-1) = %v", p, err)
		}
		s := []any{first, last, hs, term}
		if last >= first {
			ents, err := w.Entries(p, first, last+1, 1<<62)
			if err != nil || uint64(len(ents)) != last-first+1 {
				t.Fatalf("partition %d: Entries(%d, %d) = %d entries, %v", p, first, last+1, len(ents), err)
			}
			for _, e := range ents {
				if term, err := w.Term(p, e.Index); err != nil || term != e.Term {
					t.Fatalf("partition %d: Term(%d) = %d, %v; entry has %d", p, e.Index, term, err, e.Term)
				}
				s = append(s, e.Term, e.Index, e.Kind, e.ID, e.Type, string(e.Data))
			}
		}
		st[p] = s
	}
	return st
}

// FuzzWALOpen opens a WAL directory holding arbitrary segment bytes. It must never panic
// or allocate without bound; it either fails with ErrCorrupt or opens a WAL that reads
// back consistently, keeps working, and shows the same state when opened again.
func FuzzWALOpen(f *testing.F) {
	f.Add(uint8(0), walFuzzFrames(1, nil))
	f.Add(uint8(1), []byte{3, 0, 4, 1, 0})
	f.Fuzz(func(t *testing.T, mode uint8, data []byte) {
		const dir = "/wal"
		fs := newMemFS()
		seg := data
		if mode&1 == 1 {
			seg = walFuzzFrames(1, data)
		}
		fs.files[filepath.Join(dir, walSegmentName(1))] = &memFile{fs: fs, data: seg}
		if mode&2 == 2 {
			// Make segment 1 a non-last segment: no torn tail allowed there.
			fs.files[filepath.Join(dir, walSegmentName(2))] = &memFile{fs: fs, data: walFuzzFrames(2, nil)}
		}
		opts := WALOptions{SegmentSize: minWALSegmentSize, Logger: quietLogger()}
		w, err := openWAL(dir, opts, fs)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("OpenWAL failed with an error that is not ErrCorrupt: %v", err)
			}
			return
		}
		before := captureWALState(t, w)
		next := w.LastIndex(1) + 1
		e := Entry{Term: 1, Index: next, Data: []byte("after")}
		if err := w.Save([]Update{{Partition: 1, Entries: []Entry{e}}}); err != nil {
			t.Fatalf("Save after a successful open: %v", err)
		}
		after := captureWALState(t, w)
		w.Close()
		w, err = openWAL(dir, opts, fs)
		if err != nil {
			t.Fatalf("second OpenWAL: %v", err)
		}
		defer w.Close()
		again := captureWALState(t, w)
		if !walStatesEqual(after, again) {
			t.Fatalf("state changed across reopen:\nbefore reopen %v\nafter reopen  %v\n(first open %v)", after, again, before)
		}
	})
}

func walStatesEqual(a, b walFuzzState) bool {
	if len(a) != len(b) {
		return false
	}
	for p, x := range a {
		y, ok := b[p]
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
	}
	return true
}

// FuzzWALRecord decodes arbitrary bytes as a record: no panic, a size within the input,
// and a decoded record encodes back to exactly the bytes it came from.
func FuzzWALRecord(f *testing.F) {
	f.Add(appendWALEntry(nil, 3, &Entry{Term: 2, Index: 7, Kind: EntryNoop, ID: 9, Type: "SetValue", Data: []byte("v")}))
	f.Add(appendWALHardState(nil, 1, HardState{Term: 4, Vote: "n2", Commit: 3}))
	f.Add(appendWALTruncate(nil, 1, 5))
	f.Add(appendWALMark(nil, walRecCompact, 1, 5, 2))
	f.Add(appendWALMark(nil, walRecReset, 1, 5, 2))
	f.Add([]byte{walRecMembership, 1, 0, 0, 0, 2, 0, 0, 0, 'a', 'b'})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeWALRecord(data)
		if err != nil {
			return
		}
		if r.size <= 0 || r.size > len(data) {
			t.Fatalf("record size %d for %d bytes", r.size, len(data))
		}
		var enc []byte
		switch r.typ {
		case walRecEntry:
			e := Entry{Term: r.term, Index: r.index, Kind: r.kind, ID: r.id, Type: string(r.typeName), Data: r.data}
			enc = appendWALEntry(nil, r.partition, &e)
			if uint64(r.size) != e.size()+5 {
				t.Fatalf("entry record of %d bytes for an entry of size %d", r.size, e.size())
			}
		case walRecHardState:
			enc = appendWALHardState(nil, r.partition, HardState{Term: r.term, Vote: string(r.typeName), Commit: r.commit})
		case walRecTruncate:
			enc = appendWALTruncate(nil, r.partition, r.index)
		case walRecCompact, walRecReset:
			enc = appendWALMark(nil, r.typ, r.partition, r.index, r.term)
		case walRecMembership:
			enc = binary.LittleEndian.AppendUint32(append([]byte{walRecMembership}, data[1:5]...), uint32(len(r.data)))
			enc = append(enc, r.data...)
		default:
			t.Fatalf("decoded unknown record type %d", r.typ)
		}
		if !bytes.Equal(enc, data[:r.size]) {
			t.Fatalf("re-encoding differs:\n in  %x\n out %x", data[:r.size], enc)
		}
	})
}
