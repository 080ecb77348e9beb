package kommander

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// publish copies a partition's Raft status for the public API and reports leader changes
// (metrics, WaitForLeader, OnLeaderChange). Loop only.
func (n *Node) publish(p *partition) {
	st := p.raft.status()
	candidate, leaderChanged := p.publish(st, n.cfg.NodeID, n.now+uint64(graceTimeouts*n.elTicks))
	if candidate {
		n.metrics.elections.Add(1)
	}
	if !leaderChanged {
		return
	}
	n.metrics.leaderChanges.Add(1)
	if st.leader != "" {
		// Proposals and reads that found no leader wait in their queues, asked again only
		// in a pass that has a tick or a new proposal: now that a leader is known, the
		// next pass asks at once, not up to a tick later (or never, on a fake clock).
		n.in.markProposed()
	}
	n.apply.leaderChanged(LeaderChange{Partition: int(p.id), Leader: st.leader, Term: st.term, IsLocal: st.leader == n.cfg.NodeID})
	n.leaders.changed()
}

func (n *Node) publishAll() {
	for _, p := range n.active.list {
		n.publish(p)
	}
}

// leaderWatch lets callers wait for the next leader change of any partition (or for the
// node to stop).
type leaderWatch struct {
	mu sync.Mutex
	ch chan struct{} // closed and replaced whenever a leader changes
}

func (w *leaderWatch) init() { w.ch = make(chan struct{}) }

// next returns a channel that is closed at the next change.
func (w *leaderWatch) next() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ch
}

// changed wakes everyone waiting on next.
func (w *leaderWatch) changed() {
	w.mu.Lock()
	close(w.ch)
	w.ch = make(chan struct{})
	w.mu.Unlock()
}

// Leader returns the node ID of the partition's leader as this node knows it, and whether
// one is known. It never waits. A node that hosts no replica of the partition knows what a
// node that hosts one last told it, and asks again in the background when that is older
// than an election timeout; the first call may know nothing yet (WaitForLeader waits).
func (n *Node) Leader(partition int) (string, bool) {
	p, err := n.partition(partition)
	if errors.Is(err, ErrNotHosted) {
		l := n.proxy.knownLeader(partition)
		return l, l != ""
	}
	if err != nil {
		return "", false
	}
	l := p.leader()
	return l, l != ""
}

// IsLeader reports whether this node leads the partition.
func (n *Node) IsLeader(partition int) bool {
	p, err := n.partition(partition)
	return err == nil && p.leader() == n.cfg.NodeID
}

// WaitForLeader waits until the partition has a known leader and returns its node ID. A
// node that hosts no replica of the partition asks one that does, once per tick.
func (n *Node) WaitForLeader(ctx context.Context, partition int) (string, error) {
	if _, err := n.partition(partition); errors.Is(err, ErrNotHosted) {
		return n.proxy.waitForLeader(ctx, partition)
	} else if err != nil {
		return "", err
	}
	for {
		ch := n.leaders.next()
		if l, ok := n.Leader(partition); ok {
			return l, nil
		}
		if n.state.Load() == stateStopped {
			return "", fmt.Errorf("kommander: node %s: %w", n.cfg.NodeID, ErrStopped)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return "", fmt.Errorf("kommander: partition %d: no leader: %w", partition, ctx.Err())
		}
	}
}

// Status returns the node's view of every partition it hosts.
func (n *Node) Status() Status {
	parts := n.hosted.load()
	s := Status{NodeID: n.cfg.NodeID, Partitions: make([]PartitionStatus, len(parts))}
	for i, p := range parts {
		s.Partitions[i] = p.publicStatus()
	}
	if f := n.failed.Load(); f != nil {
		s.Err = (*f).Error()
	}
	return s
}
