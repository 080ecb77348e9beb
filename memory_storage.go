package kommander

import (
	"errors"
	"fmt"
	"sync"
)

// errStorageClosed is returned by writes to a closed MemoryStorage.
var errStorageClosed = errors.New("kommander: storage closed")

// MemoryStorage is a Storage that keeps everything in memory, for tests. It survives the
// Node that used it, so a test can stop or crash a node and start a new one on the same
// storage, as a real node restarts on the same data directory.
//
// Saves are durable at once by default. SetNoSync(true) makes later Saves behave like
// writes that reached the page cache but not the disk: readable, but lost by Crash until
// Sync. A node that runs on such storage acknowledges writes before they are durable,
// which is exactly the bug a crash test must catch.
type MemoryStorage struct {
	mu       sync.RWMutex
	current  memoryState
	durable  *memoryState // nil while every save is synced (durable == current)
	unsynced [][]Update
	closed   bool
	saveErr  error
	saves    uint64
}

type memoryState struct {
	parts map[uint32]*memoryPartition
}

type memoryPartition struct {
	hs        HardState
	snapIndex uint64 // compaction point: entries up to it are gone
	snapTerm  uint64
	ents      []Entry // ents[i].Index == snapIndex+1+i
}

// NewMemoryStorage returns an empty MemoryStorage whose saves are durable.
func NewMemoryStorage() *MemoryStorage {
	return &MemoryStorage{current: memoryState{parts: make(map[uint32]*memoryPartition)}}
}

func (s memoryState) clone() memoryState {
	c := memoryState{parts: make(map[uint32]*memoryPartition, len(s.parts))}
	for id, p := range s.parts {
		cp := *p
		cp.ents = append([]Entry(nil), p.ents...)
		c.parts[id] = &cp
	}
	return c
}

func (s memoryState) part(id uint32) *memoryPartition {
	p := s.parts[id]
	if p == nil {
		p = &memoryPartition{}
		s.parts[id] = p
	}
	return p
}

// apply writes one batch into s; it checks the whole batch before changing anything, so
// that a bad batch leaves s as it was.
func (s memoryState) apply(batch []Update) error {
	for _, u := range batch {
		if len(u.Entries) == 0 {
			continue
		}
		p := s.parts[u.Partition]
		var snap, last uint64
		if p != nil {
			snap, last = p.snapIndex, p.snapIndex+uint64(len(p.ents))
		}
		first := u.Entries[0].Index
		if first <= snap || first > last+1 {
			return fmt.Errorf("kommander: memory storage: partition %d: entries from %d do not follow the log (compacted through %d, last %d)", u.Partition, first, snap, last)
		}
		for i, e := range u.Entries {
			if e.Index != first+uint64(i) {
				return fmt.Errorf("kommander: memory storage: partition %d: entry indexes not consecutive at %d", u.Partition, e.Index)
			}
		}
	}
	for _, u := range batch {
		p := s.part(u.Partition)
		if len(u.Entries) > 0 {
			keep := u.Entries[0].Index - p.snapIndex - 1
			p.ents = append(p.ents[:keep], u.Entries...)
		}
		if u.SaveHardState {
			p.hs = u.HardState
		}
	}
	return nil
}

// Save implements Storage.
func (s *MemoryStorage) Save(batch []Update) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errStorageClosed
	}
	if s.saveErr != nil {
		return s.saveErr
	}
	if err := s.current.apply(batch); err != nil {
		s.saveErr = err
		return err
	}
	s.saves++
	if s.durable != nil {
		s.unsynced = append(s.unsynced, cloneUpdates(batch))
	}
	return nil
}

func cloneUpdates(batch []Update) []Update {
	c := make([]Update, len(batch))
	for i, u := range batch {
		c[i] = u
		c[i].Entries = append([]Entry(nil), u.Entries...)
	}
	return c
}

// SetNoSync switches whether saves stay unsynced (lost by Crash) until Sync. Turning it
// off syncs what is pending.
func (s *MemoryStorage) SetNoSync(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on && s.durable == nil {
		d := s.current.clone()
		s.durable = &d
	}
	if !on {
		s.syncLocked()
		s.durable = nil
	}
}

// Sync makes every earlier save durable.
func (s *MemoryStorage) Sync() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.syncLocked()
}

func (s *MemoryStorage) syncLocked() {
	if s.durable == nil {
		return
	}
	for _, b := range s.unsynced {
		if err := s.durable.apply(b); err != nil {
			panic("kommander: memory storage: a batch that applied once no longer applies: " + err.Error())
		}
	}
	s.unsynced = nil
}

// Crash simulates a power loss: every save not yet synced is lost, and the storage is
// open again for the node that restarts on it.
func (s *MemoryStorage) Crash() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.durable != nil {
		s.current = s.durable.clone()
		s.unsynced = nil
	}
	s.closed = false
}

// FailSaves makes every later Save fail with err (a dying disk); nil clears it.
func (s *MemoryStorage) FailSaves(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.saveErr = err
}

// Saves returns how many Save calls succeeded: with one fsync per Save on a real disk,
// the number of fsyncs.
func (s *MemoryStorage) Saves() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.saves
}

// Reopen lets a closed storage be used again, as a restarted node reopens its WAL.
func (s *MemoryStorage) Reopen() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = false
}

// HardState implements Storage.
func (s *MemoryStorage) HardState(partition uint32) (HardState, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if p := s.current.parts[partition]; p != nil {
		return p.hs, nil
	}
	return HardState{}, nil
}

// FirstIndex implements Storage.
func (s *MemoryStorage) FirstIndex(partition uint32) uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if p := s.current.parts[partition]; p != nil {
		return p.snapIndex + 1
	}
	return 1
}

// LastIndex implements Storage.
func (s *MemoryStorage) LastIndex(partition uint32) uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if p := s.current.parts[partition]; p != nil {
		return p.snapIndex + uint64(len(p.ents))
	}
	return 0
}

// Term implements Storage.
func (s *MemoryStorage) Term(partition uint32, index uint64) (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p := s.current.parts[partition]
	if p == nil {
		p = &memoryPartition{}
	}
	switch {
	case index < p.snapIndex:
		return 0, ErrCompacted
	case index == p.snapIndex:
		return p.snapTerm, nil
	case index > p.snapIndex+uint64(len(p.ents)):
		return 0, ErrUnavailable
	}
	return p.ents[index-p.snapIndex-1].Term, nil
}

// Entries implements Storage.
func (s *MemoryStorage) Entries(partition uint32, lo, hi, maxBytes uint64) ([]Entry, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p := s.current.parts[partition]
	if p == nil {
		p = &memoryPartition{}
	}
	if lo <= p.snapIndex {
		return nil, ErrCompacted
	}
	if hi > p.snapIndex+uint64(len(p.ents))+1 {
		return nil, ErrUnavailable
	}
	if lo >= hi {
		return nil, nil
	}
	src := p.ents[lo-p.snapIndex-1 : hi-p.snapIndex-1]
	var size uint64
	n := 0
	for n < len(src) {
		size += src[n].size()
		if n > 0 && size > maxBytes {
			break
		}
		n++
	}
	return append([]Entry(nil), src[:n]...), nil
}

// Compact implements Storage.
func (s *MemoryStorage) Compact(partition uint32, index, term uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errStorageClosed
	}
	compact(s.current.part(partition), index, term)
	if s.durable != nil {
		compact(s.durable.part(partition), index, term)
	}
	return nil
}

func compact(p *memoryPartition, index, term uint64) {
	if index <= p.snapIndex {
		return
	}
	last := p.snapIndex + uint64(len(p.ents))
	if index >= last {
		p.ents = nil
	} else {
		p.ents = append([]Entry(nil), p.ents[index-p.snapIndex:]...)
	}
	p.snapIndex, p.snapTerm = index, term
}

// Close implements Storage. A closed MemoryStorage refuses writes until Reopen or Crash.
func (s *MemoryStorage) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}
