package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/kommander-go/kommander"
)

// The key-value state machine of `kommander node`. Every request that changes state is one
// log entry; its outcome (did a compare-and-set match, which index did an append get) is
// decided when the entry applies, identically on every node, and handed back to the caller
// through Result.Value. A linearizable read is no entry: ReadBarrier, then a read of the
// map (kvServer.read). Read entries that older versions logged still apply, changing
// nothing.

// Command types of the key-value log entries.
const (
	cmdPut       = "put"        // key, value
	cmdCAS       = "cas"        // key, old value, new value
	cmdPutAbsent = "put-absent" // key, value
	cmdDelete    = "delete"     // key
	cmdCASDelete = "cas-delete" // key, old value
	cmdAppend    = "append"     // key, element
	cmdGet       = "get"        // key: a read older versions logged; changes nothing
	cmdList      = "list"       // key: likewise
)

// errMalformedCommand is the result of an entry whose payload does not decode. Such an
// entry is answered, not fatal: every node decides the same way.
var errMalformedCommand = errors.New("kv: malformed command")

// kvValue is the result of a get: the value, and whether the key had one.
type kvValue struct {
	value []byte
	found bool
}

// kvPartition is one partition's data.
type kvPartition struct {
	values map[string][]byte
	lists  map[string][][]byte
}

// kvStore is the replicated key-value store. It keeps everything in memory and reports
// Applied 0, so a restarted node rebuilds it from its newest snapshot (kv_snapshot.go)
// and the log after it.
type kvStore struct {
	mu    sync.RWMutex // Apply writes; stale reads and Applied read
	parts []kvPartition
}

// newKVStore returns an empty store of n partitions.
func newKVStore(n int) *kvStore {
	s := &kvStore{parts: make([]kvPartition, n)}
	for i := range s.parts {
		s.parts[i] = kvPartition{values: make(map[string][]byte), lists: make(map[string][][]byte)}
	}
	return s
}

// Applied implements kommander.StateMachine: the store keeps nothing across restarts.
func (s *kvStore) Applied(int) uint64 { return 0 }

// Apply implements kommander.StateMachine.
func (s *kvStore) Apply(partition int, entries []kommander.Entry, results []any) error {
	if partition < 0 || partition >= len(s.parts) {
		return fmt.Errorf("kv: partition %d out of range (%d)", partition, len(s.parts))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := &s.parts[partition]
	for i := range entries {
		results[i] = p.apply(entries[i].Type, entries[i].Data)
	}
	return nil
}

// apply applies one command and returns its result.
func (p *kvPartition) apply(typ string, data []byte) any {
	want := fieldCount(typ)
	if want == 0 {
		return fmt.Errorf("%w: unknown type %q", errMalformedCommand, typ)
	}
	f, err := decodeFields(data, want)
	if err != nil {
		return err
	}
	key := string(f[0])
	switch typ {
	case cmdPut:
		p.values[key] = clone(f[1])
	case cmdCAS:
		cur, ok := p.values[key]
		if !ok || string(cur) != string(f[1]) {
			return false
		}
		p.values[key] = clone(f[2])
		return true
	case cmdPutAbsent:
		if _, ok := p.values[key]; ok {
			return false
		}
		p.values[key] = clone(f[1])
		return true
	case cmdDelete:
		delete(p.values, key)
	case cmdCASDelete:
		cur, ok := p.values[key]
		if !ok || string(cur) != string(f[1]) {
			return false
		}
		delete(p.values, key)
		return true
	case cmdAppend:
		p.lists[key] = append(p.lists[key], clone(f[1]))
		return uint64(len(p.lists[key]))
	case cmdGet:
		v, ok := p.values[key]
		return kvValue{value: v, found: ok} // values are never modified in place
	case cmdList:
		l := p.lists[key]
		return l[:len(l):len(l)] // appends past len never touch what the caller holds
	}
	return nil
}

// fieldCount returns the number of payload fields of a command type, or 0 for an unknown
// type.
func fieldCount(typ string) int {
	switch typ {
	case cmdDelete, cmdGet, cmdList:
		return 1
	case cmdPut, cmdPutAbsent, cmdAppend, cmdCASDelete:
		return 2
	case cmdCAS:
		return 3
	}
	return 0
}

// get reads a value from this node's state without a read barrier (a stale read).
func (s *kvStore) get(partition int, key string) ([]byte, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.parts[partition].values[key]
	return v, ok
}

// list reads a list from this node's state without a read barrier.
func (s *kvStore) list(partition int, key string) [][]byte {
	s.mu.RLock()
	defer s.mu.RUnlock()
	l := s.parts[partition].lists[key]
	return l[:len(l):len(l)]
}

// clone copies b: entry payloads may share memory with the WAL's batches.
func clone(b []byte) []byte { return append([]byte{}, b...) }

// encodeFields encodes byte strings as a command payload: each is a uvarint length and
// the bytes.
func encodeFields(fields ...[]byte) []byte {
	n := 0
	for _, f := range fields {
		n += binary.MaxVarintLen64 + len(f)
	}
	b := make([]byte, 0, n)
	for _, f := range fields {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	return b
}

// decodeFields decodes exactly want fields encoded by encodeFields.
func decodeFields(b []byte, want int) ([][]byte, error) {
	fields := make([][]byte, 0, want)
	for len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return nil, fmt.Errorf("%w: field %d: bad length", errMalformedCommand, len(fields))
		}
		fields = append(fields, b[k:k+int(n)])
		b = b[k+int(n):]
	}
	if len(fields) != want {
		return nil, fmt.Errorf("%w: %d fields, want %d", errMalformedCommand, len(fields), want)
	}
	return fields, nil
}
