package kommander

import "errors"

// ErrCompacted is returned by a Storage read of an index that compaction (a snapshot)
// has already removed.
var ErrCompacted = errors.New("kommander: log index compacted")

// ErrUnavailable is returned by a Storage read of an index beyond the last stored entry.
var ErrUnavailable = errors.New("kommander: log index not available")

// Update is what one partition asks Storage to save in one batch.
type Update struct {
	// Partition is the Raft group the update belongs to.
	Partition uint32
	// HardState is saved when SaveHardState is set.
	HardState HardState
	// SaveHardState says whether HardState is part of this update.
	SaveHardState bool
	// Entries are appended to the partition's log. Their indexes are consecutive. If the
	// first index is at or below the stored last index, the stored suffix from that index on
	// is replaced (a conflicting suffix is truncated) in the same atomic batch.
	Entries []Entry
}

// Storage is where a node keeps the logs and hard states of all its partitions. The WAL
// implements it; tests and users may supply their own.
//
// Save is the only write on the hot path and must be durable when it returns nil. All
// methods may be called from several goroutines at once.
type Storage interface {
	// Save writes every update in the batch atomically and durably: when it returns nil,
	// all of them are on stable storage. A non-nil error is permanent (a failed fsync cannot
	// be retried safely); the node stops accepting writes after one.
	Save(batch []Update) error
	// HardState returns the last saved hard state of a partition (zero if none).
	HardState(partition uint32) (HardState, error)
	// FirstIndex returns the index of the first entry still stored for a partition: the
	// compaction point + 1, or 1 for a log that was never compacted.
	FirstIndex(partition uint32) uint64
	// LastIndex returns the index of the last stored entry of a partition, or
	// FirstIndex-1 when there is none.
	LastIndex(partition uint32) uint64
	// Term returns the term of the entry at index. Term(FirstIndex-1) is the term of the
	// compaction point (0 for an uncompacted log). Below that it returns ErrCompacted,
	// beyond LastIndex ErrUnavailable. It must be cheap: no disk read.
	Term(partition uint32, index uint64) (uint64, error)
	// Entries returns the entries in [lo, hi), stopping early once their sizes add up to
	// maxBytes (but always returning at least one entry when lo < hi). It returns
	// ErrCompacted when lo < FirstIndex and ErrUnavailable when hi > LastIndex+1.
	Entries(partition uint32, lo, hi, maxBytes uint64) ([]Entry, error)
	// Compact records that a partition no longer needs entries up to and including index
	// (whose term is term), because a snapshot covers them. Space is reclaimed later.
	Compact(partition uint32, index, term uint64) error
	// Close releases the storage. Writes after Close fail.
	Close() error
}

// logStorage is the read-only view of one partition's stable log that the Raft core uses
// for entries no longer held in memory. The node adapts a Storage to it.
type logStorage interface {
	firstIndex() uint64
	lastIndex() uint64
	term(index uint64) (uint64, error)
	entries(lo, hi, maxBytes uint64) ([]Entry, error)
}

// partitionLog adapts one partition of a Storage to logStorage.
type partitionLog struct {
	s         Storage
	partition uint32
}

func (p partitionLog) firstIndex() uint64                { return p.s.FirstIndex(p.partition) }
func (p partitionLog) lastIndex() uint64                 { return p.s.LastIndex(p.partition) }
func (p partitionLog) term(index uint64) (uint64, error) { return p.s.Term(p.partition, index) }
func (p partitionLog) entries(lo, hi, maxBytes uint64) ([]Entry, error) {
	return p.s.Entries(p.partition, lo, hi, maxBytes)
}
