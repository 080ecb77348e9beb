package main

import (
	"encoding/binary"
	"hash/fnv"
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
