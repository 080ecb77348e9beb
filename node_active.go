package kommander

import "sync/atomic"

// activeSet is the partitions the loop visits in a pass: every partition but those that
// are quiesced and settled (raft_quiesce.go), so that a node with thousands of idle
// partitions spends its passes on the few with work. A partition joins when anything
// reaches it: a message, a proposal or a read (through the inbox), a snapshot, a wake-up
// by the node's liveness watch. It leaves at a tick when it is quiesced and nothing of it
// waits for the loop: no ready work, no proposal, read or waiter, no committed entries
// held back, and its quiesced status published; its Raft group then gives back the
// buffers it keeps for the next burst. A partition outside the set is exactly
// one on which a tick does nothing and a pass would find nothing to do. Loop only, but
// for inbox.markPartition.
type activeSet struct {
	list []*partition
}

// partitionMark is what a partition keeps of its place in the active set.
type partitionMark struct {
	active   bool        // in the active set; loop only
	signaled atomic.Bool // queued in the inbox for the loop to activate
}

// initActive puts every partition in the active set: each settles and leaves on its own.
func (n *Node) initActive() {
	n.active.list = make([]*partition, 0, len(n.parts))
	for _, p := range n.parts {
		n.activate(p)
	}
}

// activate puts p in the active set.
func (n *Node) activate(p *partition) {
	if !p.mark.active {
		p.mark.active = true
		n.active.list = append(n.active.list, p)
	}
}

// activateSignaled activates the partitions that proposals and reads were queued for
// since the last pass.
func (n *Node) activateSignaled() {
	in := &n.in
	in.mu.Lock()
	sig := in.signaled
	in.signaled = in.spareSignaled[:0]
	in.mu.Unlock()
	for _, p := range sig {
		p.mark.signaled.Store(false)
		n.activate(p)
	}
	clear(sig)
	in.mu.Lock()
	in.spareSignaled = sig[:0]
	in.mu.Unlock()
}

// sweepActive drops the partitions that are quiesced and settled from the active set. It
// runs at ticks. With quiescence off nothing ever leaves.
func (n *Node) sweepActive() {
	if n.cfg.DisableQuiescence {
		return
	}
	kept := n.active.list[:0]
	for _, p := range n.active.list {
		if p.settled() {
			p.mark.active = false
			p.raft.releaseIdleMemory()
			continue
		}
		kept = append(kept, p)
	}
	clear(n.active.list[len(kept):])
	n.active.list = kept
}

// settled reports whether nothing of the partition waits for the loop (see activeSet).
// Loop only.
func (p *partition) settled() bool {
	r := p.raft
	if !r.quiesced() || r.readyOut || r.hasReady() || r.log.applying < min(r.log.committed, r.log.stable) ||
		p.reads.open.Load() != 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue) == 0 && len(p.waiting) == 0 && !p.awaitingRoom && p.status.Quiesced
}
