package kommander

import (
	"errors"
	"fmt"
)

// Errors a caller acts on. Every error the node returns wraps one of them (test with
// errors.Is), except context errors for a call that never reached the node.
//
// The rule for Replicate: errors.Is(err, ErrTimeout) means the outcome is unknown (the
// entry may yet be applied); any other error means the entry was not, and will never be,
// applied.
var (
	// ErrNotLeader means this node does not lead the partition and did not forward the
	// proposal (forwarding is off, or no leader was known in time). The error is a *NotLeaderError
	// that names the leader when one is known.
	ErrNotLeader = errors.New("kommander: not the leader")
	// ErrStopped means the node is stopped (or stopping, or failed and stopped accepting
	// writes).
	ErrStopped = errors.New("kommander: node stopped")
	// ErrTimeout means the entry was proposed, but whether it will be applied is unknown;
	// the caller may retry only if the command is idempotent, or read to find out.
	ErrTimeout = errors.New("kommander: outcome unknown")
	// ErrTooLarge means the entry (or batch) is larger than Config.MaxEntrySize (or
	// Config.MaxMessageBytes).
	ErrTooLarge = errors.New("kommander: entry too large")
	// ErrOverloaded means the partition already has Config.MaxPendingProposals entries
	// waiting, or its state machine is far behind; nothing was proposed. Back off, retry.
	ErrOverloaded = errors.New("kommander: too many pending proposals")
	// ErrNoPartition means the partition number is out of range.
	ErrNoPartition = errors.New("kommander: no such partition")
	// ErrRemoved means this node was removed from the cluster (from every partition it
	// hosted, or from the partition of the call): it takes no more part in it. Err returns
	// it once the node was removed from every partition.
	ErrRemoved = errors.New("kommander: node removed from the cluster")
	// ErrMembershipChange means a membership change or a leadership transfer is already
	// in progress in the partition, so the leader refused this one; nothing changed. Retry.
	ErrMembershipChange = errors.New("kommander: a membership change is in progress")
)

// NotLeaderError is the error for a proposal made on a node that is not the leader and
// did not forward it. errors.Is(err, ErrNotLeader) holds for it.
type NotLeaderError struct {
	// Partition is the partition the proposal was for.
	Partition int
	// Leader is the leader's node ID, or "" when no leader is known.
	Leader string
	// LeaderAddr is the leader's address as this node knows it, or "".
	LeaderAddr string
}

// Error describes the error with its leader hint.
func (e *NotLeaderError) Error() string {
	if e.Leader == "" {
		return fmt.Sprintf("kommander: partition %d: not the leader, and no leader is known", e.Partition)
	}
	return fmt.Sprintf("kommander: partition %d: not the leader; the leader is %s (%s)", e.Partition, e.Leader, e.LeaderAddr)
}

// Is makes errors.Is(err, ErrNotLeader) true.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }
