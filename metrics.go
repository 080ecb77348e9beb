package kommander

import (
	"expvar"
	"fmt"
	"sync/atomic"
)

// Metrics is a snapshot of a node's counters (totals since NewNode) and gauges.
type Metrics struct {
	// Proposals counts entries submitted through Replicate on this node.
	Proposals uint64 `json:"proposals"`
	// Forwarded counts entries forwarded to another node's leader.
	Forwarded uint64 `json:"forwarded"`
	// Reads counts ReadBarrier and ReadBarrierLease calls on this node; they write nothing
	// to the log and cost no fsync.
	Reads uint64 `json:"reads"`
	// Rejected counts entries refused at once (ErrTooLarge, ErrOverloaded).
	Rejected uint64 `json:"rejected"`
	// Applied counts application entries handed to the StateMachine.
	Applied uint64 `json:"applied"`
	// Fsyncs counts Storage.Save calls: one fsync each, covering every partition.
	Fsyncs uint64 `json:"fsyncs"`
	// EntriesSaved counts entries written to storage.
	EntriesSaved uint64 `json:"entries_saved"`
	// BytesSaved counts the approximate bytes of the entries written to storage.
	BytesSaved uint64 `json:"bytes_saved"`
	// EntriesPerFsync is EntriesSaved / Fsyncs: the batching the loop achieved.
	EntriesPerFsync float64 `json:"entries_per_fsync"`
	// Elections counts the times a partition of this node became a candidate.
	Elections uint64 `json:"elections"`
	// LeaderChanges counts the times this node saw a partition's leader change.
	LeaderChanges uint64 `json:"leader_changes"`
	// LeaderTransfers counts the leadership transfers this node started as a leader (on
	// request, before stopping, or to balance leaders).
	LeaderTransfers uint64 `json:"leader_transfers"`
	// MessagesSent counts Raft messages handed to the transport.
	MessagesSent uint64 `json:"messages_sent"`
	// MessagesReceived counts Raft messages received from the transport.
	MessagesReceived uint64 `json:"messages_received"`
	// MessagesDropped counts messages dropped by the node: a full inbox, an unknown
	// partition or peer.
	MessagesDropped uint64 `json:"messages_dropped"`
	// Snapshots counts snapshots this node took; SnapshotsInstalled those it installed
	// from a leader; SnapshotsSent the transfers to followers it completed.
	Snapshots          uint64 `json:"snapshots"`
	SnapshotsInstalled uint64 `json:"snapshots_installed"`
	SnapshotsSent      uint64 `json:"snapshots_sent"`
	// PendingProposals is the number of entries proposed on this node and not yet answered.
	PendingProposals int `json:"pending_proposals"`
	// Leaders is the number of partitions this node leads.
	Leaders int `json:"leaders"`
}

// metrics holds the node's counters; every field is updated atomically.
type metrics struct {
	proposals, forwarded, rejected, applied atomic.Uint64
	reads                                   atomic.Uint64
	fsyncs, entriesSaved, bytesSaved        atomic.Uint64
	elections, leaderChanges                atomic.Uint64
	sent, received, dropped                 atomic.Uint64
	snapshots, snapshotsInstalled           atomic.Uint64
	snapshotsSent                           atomic.Uint64
	transfers                               atomic.Uint64
}

// Metrics returns a snapshot of the node's counters and gauges.
func (n *Node) Metrics() Metrics {
	m := Metrics{
		Proposals:        n.metrics.proposals.Load(),
		Forwarded:        n.metrics.forwarded.Load(),
		Reads:            n.metrics.reads.Load(),
		Rejected:         n.metrics.rejected.Load(),
		Applied:          n.metrics.applied.Load(),
		Fsyncs:           n.metrics.fsyncs.Load(),
		EntriesSaved:     n.metrics.entriesSaved.Load(),
		BytesSaved:       n.metrics.bytesSaved.Load(),
		Elections:        n.metrics.elections.Load(),
		LeaderChanges:    n.metrics.leaderChanges.Load(),
		LeaderTransfers:  n.metrics.transfers.Load(),
		MessagesSent:     n.metrics.sent.Load(),
		MessagesReceived: n.metrics.received.Load(),
		MessagesDropped:  n.metrics.dropped.Load(),

		Snapshots:          n.metrics.snapshots.Load(),
		SnapshotsInstalled: n.metrics.snapshotsInstalled.Load(),
		SnapshotsSent:      n.metrics.snapshotsSent.Load(),
	}
	if m.Fsyncs > 0 {
		m.EntriesPerFsync = float64(m.EntriesSaved) / float64(m.Fsyncs)
	}
	for _, p := range n.parts {
		p.mu.Lock()
		m.PendingProposals += p.pending
		if p.status.Leader == n.cfg.NodeID {
			m.Leaders++
		}
		p.mu.Unlock()
	}
	return m
}

// PublishExpvar publishes the node's Metrics and Status under the expvar name
// "kommander.<NodeID>", served by expvar's /debug/vars handler. It fails if the name is
// already taken (expvar names are process-wide and cannot be removed).
func (n *Node) PublishExpvar() error {
	name := "kommander." + n.cfg.NodeID
	if expvar.Get(name) != nil {
		return fmt.Errorf("kommander: expvar %q is already published", name)
	}
	expvar.Publish(name, expvar.Func(func() any {
		return struct {
			Metrics Metrics `json:"metrics"`
			Status  Status  `json:"status"`
		}{n.Metrics(), n.Status()}
	}))
	return nil
}
