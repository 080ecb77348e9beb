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
	br := bufio.NewReaderSize(r, 64<<10)
	fail := func(what string, err error) error {
		return fmt.Errorf("kv: restore partition %d: %s: %w", partition, what, err)
	}
	bytesOf := func() ([]byte, error) {
		l, err := binary.ReadUvarint(br)
		if err != nil {
			return nil, err
		}
		if l > 1<<31 {
			return nil, fmt.Errorf("a length of %d", l)
		}
		b := make([]byte, l)
		_, err = io.ReadFull(br, b)
		return b, err
	}
	p := kvPartition{values: make(map[string][]byte), lists: make(map[string][][]byte)}
	nv, err := binary.ReadUvarint(br)
	if err != nil {
		return fail("value count", err)
	}
	for i := uint64(0); i < nv; i++ {
		k, err := bytesOf()
		if err != nil {
			return fail("key", err)
		}
		if p.values[string(k)], err = bytesOf(); err != nil {
			return fail("value", err)
		}
	}
	nl, err := binary.ReadUvarint(br)
	if err != nil {
		return fail("list count", err)
	}
	for i := uint64(0); i < nl; i++ {
		k, err := bytesOf()
		if err != nil {
			return fail("list key", err)
		}
		ne, err := binary.ReadUvarint(br)
		if err != nil {
			return fail("list length", err)
		}
		l := make([][]byte, 0, min(ne, 1<<16))
		for j := uint64(0); j < ne; j++ {
			e, err := bytesOf()
			if err != nil {
				return fail("list element", err)
			}
			l = append(l, e)
		}
		p.lists[string(k)] = l
	}
	s.mu.Lock()
	s.parts[partition] = p
	s.mu.Unlock()
	return nil
}
