package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
)

// Snapshots of the key-value store: a restarted node restores its newest snapshot and
// replays only the log after it, and a follower far behind is sent one, so neither the
// log nor the restart time grows without bound.
//
// A partition's snapshot is its values, then its lists, each a uvarint count followed by
// that many items; a value is a key and a value, a list a key, a uvarint element count and
// the elements; every key, value and element is a uvarint length and its bytes.

// kvView is a partition's state as of one applied entry. Apply never modifies a value or
// a list element in place and appends to a list only past the length captured here, so
// the view stays valid while Apply goes on.
type kvView struct {
	values map[string][]byte
	lists  map[string][][]byte
}

// Snapshot implements kommander.Snapshotter: it copies the partition's maps (not their
// contents), which is quick, and writes them later.
func (s *kvStore) Snapshot(partition int) (io.WriterTo, error) {
	if partition < 0 || partition >= len(s.parts) {
		return nil, fmt.Errorf("kv: partition %d out of range (%d)", partition, len(s.parts))
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	p := &s.parts[partition]
	v := kvView{values: maps.Clone(p.values), lists: make(map[string][][]byte, len(p.lists))}
	for k, l := range p.lists {
		v.lists[k] = l[:len(l):len(l)]
	}
	return v, nil
}

// WriteTo writes the view in the snapshot format.
func (v kvView) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	var n int64
	var tmp []byte
	put := func(b []byte) {
		tmp = binary.AppendUvarint(tmp[:0], uint64(len(b)))
		k, _ := bw.Write(tmp)
		m, _ := bw.Write(b)
		n += int64(k + m)
	}
	count := func(c int) {
		tmp = binary.AppendUvarint(tmp[:0], uint64(c))
		k, _ := bw.Write(tmp)
		n += int64(k)
	}
	count(len(v.values))
	for k, val := range v.values {
		put([]byte(k))
		put(val)
	}
	count(len(v.lists))
	for k, l := range v.lists {
		put([]byte(k))
		count(len(l))
		for _, e := range l {
			put(e)
		}
	}
	return n, bw.Flush()
}

// Restore implements kommander.Snapshotter: it replaces the partition's state with the
// snapshot's.
func (s *kvStore) Restore(partition int, _ uint64, r io.Reader) error {
	if partition < 0 || partition >= len(s.parts) {
		return fmt.Errorf("kv: partition %d out of range (%d)", partition, len(s.parts))
	}
	in := kvReader{br: bufio.NewReaderSize(r, 64<<10)}
	p := kvPartition{values: make(map[string][]byte), lists: make(map[string][][]byte)}
	for i := in.uvarint("value count"); i > 0 && in.err == nil; i-- {
		k := in.bytes("key")
		p.values[string(k)] = in.bytes("value")
	}
	for i := in.uvarint("list count"); i > 0 && in.err == nil; i-- {
		k := in.bytes("list key")
		n := in.uvarint("list length")
		l := make([][]byte, 0, min(n, 1<<16))
		for ; n > 0 && in.err == nil; n-- {
			l = append(l, in.bytes("list element"))
		}
		p.lists[string(k)] = l
	}
	if in.err != nil {
		return fmt.Errorf("kv: restore partition %d: %w", partition, in.err)
	}
	s.mu.Lock()
	s.parts[partition] = p
	s.mu.Unlock()
	return nil
}

// kvReader reads the snapshot format; the first error sticks and makes later reads
// return nothing.
type kvReader struct {
	br  *bufio.Reader
	err error
}

func (r *kvReader) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, err := binary.ReadUvarint(r.br)
	if err != nil {
		r.err = fmt.Errorf("%s: %w", what, err)
	}
	return v
}

func (r *kvReader) bytes(what string) []byte {
	n := r.uvarint(what)
	if r.err != nil {
		return nil
	}
	if n > 1<<31 {
		r.err = fmt.Errorf("%s: a length of %d", what, n)
		return nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r.br, b); err != nil {
		r.err = fmt.Errorf("%s: %w", what, err)
	}
	return b
}
