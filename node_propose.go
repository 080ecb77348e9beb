package kommander

import (
	"context"
	"fmt"
)

// Replicate appends one command to a partition's log and returns once it is committed and
// applied on this node, with the entry's index and term and the value Apply gave it. On a
// follower the proposal is forwarded to the leader (unless Config.DisableForwarding).
//
// errors.Is(err, ErrTimeout) means the outcome is unknown: ctx ended, or the leader
// changed, after the entry was proposed. Any other error means it was not applied.
func (n *Node) Replicate(ctx context.Context, partition int, typ string, data []byte) (Result, error) {
	if typ == barrierType {
		return Result{}, fmt.Errorf("kommander: partition %d: command type %q is reserved", partition, barrierType)
	}
	// One allocation holds the proposal, its command and its result.
	pr := &proposal{}
	pr.one[0] = Command{Type: typ, Data: data}
	pr.cmds, pr.results = pr.one[:], pr.oneResult[:]
	rs, err := n.await1(ctx, partition, pr)
	if err != nil {
		return Result{}, err
	}
	return rs[0], nil
}

// ReplicateBatch appends several commands to a partition's log as consecutive entries and
// returns once all are committed and applied on this node. A batch travels in one
// message, so its total size may not exceed Config.MaxMessageBytes (ErrTooLarge). Errors
// are those of Replicate;
// in the rare case that a leader change lets only some of the entries through, the error
// says so and the results of the applied ones have a non-zero Index.
func (n *Node) ReplicateBatch(ctx context.Context, partition int, cmds []Command) ([]Result, error) {
	for _, c := range cmds {
		if c.Type == barrierType {
			return nil, fmt.Errorf("kommander: partition %d: command type %q is reserved", partition, barrierType)
		}
	}
	return n.replicate(ctx, partition, cmds)
}

// barrierType is a reserved command type: older versions wrote read barriers to the log
// as entries of this type. It is refused in proposals, and entries of it still in a log
// are never handed to the StateMachine.
const barrierType = "kommander.barrier"

func (n *Node) replicate(ctx context.Context, partition int, cmds []Command) ([]Result, error) {
	return n.await1(ctx, partition, &proposal{cmds: cmds, results: make([]Result, len(cmds))})
}

// await1 submits a proposal (its cmds and results set) and waits for its answer.
func (n *Node) await1(ctx context.Context, partition int, pr *proposal) ([]Result, error) {
	if err := n.enqueue(partition, pr); err != nil {
		return nil, err
	}
	p := n.parts[partition]
	select {
	case <-pr.done:
		return pr.results, pr.err
	case <-ctx.Done():
	}
	p.abandon(pr, ctx.Err())
	return pr.results, pr.err
}

// submit checks and queues a proposal of cmds for the loop.
func (n *Node) submit(partition int, cmds []Command) (*proposal, error) {
	pr := &proposal{cmds: cmds, results: make([]Result, len(cmds))}
	if err := n.enqueue(partition, pr); err != nil {
		return nil, err
	}
	return pr, nil
}

// enqueue checks and queues a proposal (its cmds and results set) for the loop.
func (n *Node) enqueue(partition int, pr *proposal) error {
	cmds := pr.cmds
	p, err := n.partition(partition)
	if err != nil {
		return err
	}
	if len(cmds) == 0 {
		return fmt.Errorf("kommander: partition %d: empty batch: %w", partition, ErrTooLarge)
	}
	if err := n.writable(); err != nil {
		return err
	}
	if p.mem.removed.Load() {
		return fmt.Errorf("kommander: node %s: partition %d: %w", n.cfg.NodeID, partition, ErrRemoved)
	}
	total := 0
	for _, c := range cmds {
		size := len(c.Type) + len(c.Data)
		if size > n.cfg.MaxEntrySize {
			n.metrics.rejected.Add(1)
			return fmt.Errorf("kommander: partition %d: entry of %d bytes exceeds MaxEntrySize %d: %w", partition, size, n.cfg.MaxEntrySize, ErrTooLarge)
		}
		total += size
	}
	if len(cmds) > 1 && total > n.cfg.MaxMessageBytes {
		// A batch travels in one message; bigger ones would not fit.
		n.metrics.rejected.Add(1)
		return fmt.Errorf("kommander: partition %d: batch of %d bytes exceeds MaxMessageBytes %d: %w", partition, total, n.cfg.MaxMessageBytes, ErrTooLarge)
	}
	pr.remaining, pr.done = len(cmds), make(chan struct{})
	n.admitted()
	p.mu.Lock()
	// Again under mu: failAll (a failed Save, a Stop) answers what is queued under mu
	// after marking the node failed or stopping, so a proposal queued after it would
	// never be answered.
	err = n.writable()
	if err == nil {
		// IDs are taken under mu, so that a partition's queue holds them in increasing
		// order: a leader takes a node's forwarded proposals only in that order (S35).
		pr.firstID = n.nextIDs(len(cmds))
		if err = p.admit(pr, n.cfg.MaxPendingProposals); err != nil {
			n.metrics.rejected.Add(1)
		}
	}
	p.mu.Unlock()
	if err != nil {
		return err
	}
	n.metrics.proposals.Add(uint64(len(cmds)))
	n.in.markProposed()
	return nil
}

// Entry IDs: the top idIncarnationBits bits name the node's incarnation (random at each
// NewNode, see newIDIncarnation), the rest count its proposals from 1. A leader tells a
// node's forwarded proposals apart per incarnation (partition.firstForward). Should the
// count run out, it carries into the incarnation bits: a new incarnation, as after a
// restart.
const (
	idIncarnationBits = 24
	idSeqBits         = 64 - idIncarnationBits
	idSeqMask         = 1<<idSeqBits - 1
)

// newIDIncarnation returns the ID sequence's start for random bits r: a non-zero
// incarnation and a count of 0.
func newIDIncarnation(r uint64) uint64 {
	inc := r >> idSeqBits
	if inc == 0 {
		inc = 1
	}
	return inc << idSeqBits
}

// idIncarnation returns the incarnation part of an entry ID.
func idIncarnation(id uint64) uint64 { return id >> idSeqBits }

// nextIDs takes k consecutive entry IDs of one incarnation and returns the first; 0 stays
// "no ID".
func (n *Node) nextIDs(k int) uint64 {
	for {
		first := n.idSeq.Add(uint64(k)) - uint64(k) + 1
		last := first + uint64(k) - 1
		switch {
		case idIncarnation(first) == 0:
			// The incarnation bits wrapped around: start again at incarnation 1.
			n.idSeq.CompareAndSwap(last, 1<<idSeqBits)
		case first&idSeqMask != 0 && idIncarnation(first) == idIncarnation(last):
			return first
		}
	}
}

// writable returns nil when the node accepts proposals.
func (n *Node) writable() error {
	if f := n.failed.Load(); f != nil {
		return fmt.Errorf("kommander: node %s failed and accepts no writes: %w: %w", n.cfg.NodeID, ErrStopped, *f)
	}
	if err := n.removedErr(); err != nil {
		return err
	}
	if s := n.state.Load(); s != stateRunning {
		if s == stateNew {
			return fmt.Errorf("kommander: node %s is not started: %w", n.cfg.NodeID, ErrStopped)
		}
		return fmt.Errorf("kommander: node %s: %w", n.cfg.NodeID, ErrStopped)
	}
	return nil
}

// noLeaderTimeouts is how many election timeouts a proposal waits for a leader to be known
// before it fails with ErrNotLeader; graceTimeouts is how long a proposal whose leader lost
// its leadership waits to learn its fate before it fails with ErrTimeout.
const (
	noLeaderTimeouts = 10
	graceTimeouts    = 3
)

// proposeQueued hands a partition's queued proposals to Raft when this node leads it, or
// forwards them to the leader. Loop only.
func (n *Node) proposeQueued(p *partition) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queued()) == 0 {
		return
	}
	st := p.raft.status()
	switch {
	case st.leader == n.cfg.NodeID && st.role == roleLeader:
		n.proposeLocal(p)
	case st.leader == "":
		// Wait for an election; give up after a while with a definite error.
		p.awaitLeader(n.now + uint64(noLeaderTimeouts*n.elTicks))
	case n.cfg.DisableForwarding:
		p.refuseQueued(st.leader, n.addrs[st.leader])
	default:
		// One MsgForward per chunk of about MaxMessageBytes, so that no message exceeds
		// what the transport carries. The MsgForward or the leader's answer may be lost:
		// the wait is bounded (S14).
		deadline := n.now + uint64(noLeaderTimeouts*n.elTicks)
		for q := p.queued(); len(q) > 0; q = p.queued() {
			k, _ := n.chunk(q)
			n.fwd.forward(p, q[:k], st.leader, st.term, deadline)
		}
	}
}

// proposeLocal appends a partition's queued proposals to this leader's log, in chunks of
// about MaxMessageBytes (a proposal is never split), so that one raftReady stays bounded
// however much was queued. The caller holds mu.
func (n *Node) proposeLocal(p *partition) {
	for q := p.queued(); len(q) > 0; q = p.queued() {
		k, size := n.chunk(q)
		// Raft copies the entries into its log: the buffer is the loop's to reuse.
		ents := n.proposeBuf[:0]
		for _, pr := range q[:k] {
			ents = pr.appendEntries(ents)
		}
		first, term, err := p.raft.propose(ents)
		clear(ents)
		n.proposeBuf = ents[:0]
		if err != nil {
			// Too much unpersisted: the rest waits for the next pass.
			n.log.Debug("raft refused a proposal", "partition", p.id, "bytes", size, "err", err)
			return
		}
		p.proposedLocally(q[:k], first, term)
	}
}

// chunk returns how many of the queued proposals fit in about MaxMessageBytes (at least
// one) and their size.
func (n *Node) chunk(queue []*proposal) (k int, size uint64) {
	limit := uint64(n.cfg.MaxMessageBytes)
	for k < len(queue) {
		var s uint64
		for _, c := range queue[k].cmds {
			s += uint64(len(c.Type)+len(c.Data)) + 64
		}
		if k > 0 && size+s > limit {
			break
		}
		size += s
		k++
	}
	return k, size
}

// expireWaiters answers the proposals whose deadline passed.
func (n *Node) expireWaiters() {
	for _, p := range n.parts {
		p.expire(n.now)
		p.expireReads(n.now)
	}
}
