package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"sync"

	"github.com/kommander-go/kommander"
)

// counterSM is the state machine of the demo and the benchmark: it keeps, per partition,
// the number of entries applied, their bytes, and a running hash of their indexes and
// payloads, so that nodes can be checked to have applied the same log in the same order.
// Its Apply costs next to nothing, so what the benchmark measures is the library.
type counterSM struct {
	mu    sync.Mutex
	parts []counterPartition
}

type counterPartition struct {
	entries, bytes uint64
	lastIndex      uint64
	hash           uint64
}

// appliedState is a partition's counters at one moment.
type appliedState = counterPartition

func newCounterSM(partitions int) *counterSM {
	return &counterSM{parts: make([]counterPartition, partitions)}
}

// Applied implements kommander.StateMachine: nothing is kept across restarts.
func (c *counterSM) Applied(int) uint64 { return 0 }

// Apply implements kommander.StateMachine.
func (c *counterSM) Apply(partition int, entries []kommander.Entry, _ []any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := &c.parts[partition]
	h := fnv.New64a()
	var b [16]byte
	for i := range entries {
		e := &entries[i]
		h.Reset()
		binary.LittleEndian.PutUint64(b[:8], p.hash)
		binary.LittleEndian.PutUint64(b[8:], e.Index)
		_, _ = h.Write(b[:])
		_, _ = h.Write(e.Data)
		p.hash = h.Sum64()
		p.entries++
		p.bytes += uint64(len(e.Data))
		p.lastIndex = e.Index
	}
	return nil
}

// state returns a partition's counters.
func (c *counterSM) state(partition int) appliedState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.parts[partition]
}

// total returns the entries applied over all partitions.
func (c *counterSM) total() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n uint64
	for _, p := range c.parts {
		n += p.entries
	}
	return n
}

// snapshotCounterSM is counterSM with snapshots, for the benchmark: the node then
// snapshots each partition every SnapshotEntries entries and truncates its WAL, so that a
// long run measures a steady state (memory and disk bounded), as in production. The demo
// keeps the plain counterSM: its restarted nodes replay their logs, which it shows.
type snapshotCounterSM struct{ *counterSM }

// counterSnapshotSize is the size of a snapshot of one partition's counters.
const counterSnapshotSize = 32

// Snapshot implements kommander.Snapshotter: the partition's counters, as they are now.
func (s snapshotCounterSM) Snapshot(partition int) (io.WriterTo, error) {
	st := s.state(partition)
	b := make([]byte, counterSnapshotSize)
	binary.LittleEndian.PutUint64(b[0:], st.entries)
	binary.LittleEndian.PutUint64(b[8:], st.bytes)
	binary.LittleEndian.PutUint64(b[16:], st.lastIndex)
	binary.LittleEndian.PutUint64(b[24:], st.hash)
	return bytes.NewReader(b), nil
}

// Restore implements kommander.Snapshotter. The node of a benchmark never restarts with
// its state kept, so Applied, 0 at a start, stays right.
func (s snapshotCounterSM) Restore(partition int, _ uint64, r io.Reader) error {
	b := make([]byte, counterSnapshotSize+1)
	n, err := io.ReadFull(r, b)
	if err != io.ErrUnexpectedEOF || n != counterSnapshotSize {
		return fmt.Errorf("counter snapshot of partition %d: want %d bytes (read %d: %v)", partition, counterSnapshotSize, n, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.parts[partition] = counterPartition{
		entries:   binary.LittleEndian.Uint64(b[0:]),
		bytes:     binary.LittleEndian.Uint64(b[8:]),
		lastIndex: binary.LittleEndian.Uint64(b[16:]),
		hash:      binary.LittleEndian.Uint64(b[24:]),
	}
	return nil
}
