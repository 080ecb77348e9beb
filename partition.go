package kommander

import (
	"bytes"
	"fmt"
	"sync"
)

// partition is one Raft group as the node keeps it: the Raft core, which only the loop
// touches, and what the public API and the apply goroutine share with the loop under mu:
// proposals waiting to be proposed, proposals waiting to be applied, committed entries
// waiting to be applied, and the status that Leader and Status read.
type partition struct {
	id   uint32
	raft *raft // loop only

	// loop only: the term and vote last saved, and what the loop last saw, to notice
	// changes.
	savedTerm  uint64
	savedVote  string
	lastRole   string
	lastLeader string
	lastTerm   uint64

	mu sync.Mutex
	// queue holds proposals not yet handed to Raft (or forwarded), in arrival order.
	queue []*proposal
	// waiting maps the entry ID of every proposal handed to Raft or forwarded to the
	// leader to the proposal and the entry's position in it.
	waiting map[uint64]waiter
	// local lists the proposals appended to this node's own log as leader, by index, so
	// that an entry of another leader applied at their index proves they were lost.
	local []*proposal
	// pending counts the entries in queue and waiting (admission control).
	pending int
	// applyQ holds committed entries not yet applied, in log order; applyBytes is their
	// size. The loop bounds them (see applyFull) without ever waiting for the applier.
	applyQ     []Entry
	applyBytes uint64
	maxBacklog int // maxApplyBacklog, or less in tests
	// applied is the index of the last entry applied (or skipped as internal).
	applied uint64
	// status is what the loop last published.
	status PartitionStatus
}

// waiter locates a proposed entry's caller.
type waiter struct {
	p *proposal
	i int // position of the entry in p.cmds
}

// proposalStage says where a proposal is.
type proposalStage uint8

const (
	stageQueued    proposalStage = iota // waiting for the loop
	stageLocal                          // appended to this node's log as leader
	stageForwarded                      // sent to the leader in a MsgForward
	stageDone                           // answered
)

// proposal is one Replicate or ReplicateBatch call in flight: its commands, their entry
// IDs, and the answer once there is one.
type proposal struct {
	cmds    []Command
	firstID uint64 // entry i carries ID firstID+i

	// Guarded by the partition's mu.
	stage     proposalStage
	index     uint64 // first index, for stageLocal
	term      uint64 // term of the entries, for stageLocal
	leader    string // the leader it was forwarded to, for stageForwarded
	remaining int    // entries not yet applied
	deadline  uint64 // node tick after which the proposal is answered with ErrTimeout; 0 none
	results   []Result
	err       error
	done      chan struct{} // closed once results or err is final

	// Storage for a single command and its result (Replicate), so that one allocation
	// holds them with the proposal.
	one       [1]Command
	oneResult [1]Result
}

// finish answers the proposal; the caller holds the partition's mu.
func (pr *proposal) finish(err error) {
	if pr.stage == stageDone {
		return
	}
	pr.stage = stageDone
	pr.err = err
	close(pr.done)
}

// appendEntries appends the proposal's commands to ents as log entries.
func (pr *proposal) appendEntries(ents []Entry) []Entry {
	for i, c := range pr.cmds {
		ents = append(ents, Entry{Kind: EntryNormal, ID: pr.firstID + uint64(i), Type: c.Type, Data: c.Data})
	}
	return ents
}

// forget removes a proposal that is no longer waiting from the partition's books. The
// caller holds mu.
func (p *partition) forget(pr *proposal) {
	for i := range pr.cmds {
		id := pr.firstID + uint64(i)
		if w, ok := p.waiting[id]; ok && w.p == pr {
			delete(p.waiting, id)
		}
	}
	if pr.stage == stageQueued {
		for i, q := range p.queue {
			if q == pr {
				p.queue = append(p.queue[:i], p.queue[i+1:]...)
				break
			}
		}
	}
	// p.local is filtered in bulk (resolveApplied, expire): removing one proposal at a
	// time would cost O(pending) per answer.
	p.pending -= len(pr.cmds)
}

// resolveApplied matches entries that were just applied (with their results) against the
// proposals waiting for them and answers the ones that are complete, all under one lock.
// It then answers the local proposals whose indexes were filled by another leader's
// entries: those were certainly not applied (Raft's Log Matching: one entry per index).
// The caller holds mu.
func (p *partition) resolveApplied(ents []Entry, results []any) {
	p.matchApplied(ents, results)
	p.sweepLocal()
}

// matchApplied is resolveApplied without the sweep of p.local: for entries applied along
// with others that go through resolveApplied. The caller holds mu.
func (p *partition) matchApplied(ents []Entry, results []any) {
	for i := range ents {
		e := &ents[i]
		if e.ID == 0 {
			continue
		}
		w, ok := p.waiting[e.ID]
		if !ok {
			continue
		}
		c := w.p.cmds[w.i]
		if c.Type != e.Type || !bytes.Equal(c.Data, e.Data) {
			continue // an entry of another node that happens to carry the same ID
		}
		delete(p.waiting, e.ID)
		pr := w.p
		pr.results[w.i] = Result{Index: e.Index, Term: e.Term, Value: results[i]}
		pr.remaining--
		if pr.remaining == 0 {
			p.forget(pr)
			pr.finish(nil)
		}
	}
}

// sweepLocal answers the local proposals at or below p.applied that are still waiting:
// another leader's entries filled their indexes. The caller holds mu.
func (p *partition) sweepLocal() {
	kept := p.local[:0]
	for _, pr := range p.local {
		if pr.stage == stageDone {
			continue
		}
		if last := pr.index + uint64(len(pr.cmds)) - 1; last > p.applied {
			kept = append(kept, pr)
			continue
		}
		done := len(pr.cmds) - pr.remaining
		p.forget(pr)
		if done == 0 {
			pr.finish(fmt.Errorf("%w: partition %d: a new leader replaced the entry at index %d (term %d); it was not applied", ErrNotLeader, p.id, pr.index, pr.term))
		} else {
			pr.finish(fmt.Errorf("%w: partition %d: a new leader replaced %d of %d entries from index %d; the others were applied", ErrNotLeader, p.id, pr.remaining, len(pr.cmds), pr.index))
		}
	}
	clear(p.local[len(kept):])
	p.local = kept
}

// dropAnswered removes answered proposals from p.local. The caller holds mu.
func (p *partition) dropAnswered() {
	kept := p.local[:0]
	for _, pr := range p.local {
		if pr.stage != stageDone {
			kept = append(kept, pr)
		}
	}
	clear(p.local[len(kept):])
	p.local = kept
}

// Bounds of a partition's apply queue. Past them the partition takes no more entries
// into its log (appends from a leader are dropped, to be retried by the leader once the
// state machine caught up; proposals fail with ErrOverloaded), so a slow state machine
// costs bounded memory and never blocks the loop.
const (
	maxApplyBacklog      = 1 << 16
	maxApplyBacklogBytes = 64 << 20
)

// applyFull reports whether the apply queue is past its bounds. The caller holds mu.
func (p *partition) applyFull() bool {
	return len(p.applyQ) >= p.maxBacklog || p.applyBytes >= maxApplyBacklogBytes
}

// backlogged is applyFull for the loop.
func (p *partition) backlogged() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.applyFull()
}

// abandon answers a proposal whose caller gave up (cause): a queued one was certainly not
// applied; one handed to Raft has an unknown outcome (ErrTimeout).
func (p *partition) abandon(pr *proposal, cause error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch pr.stage {
	case stageDone:
	case stageQueued:
		p.forget(pr)
		pr.finish(fmt.Errorf("kommander: partition %d: not proposed: %w", p.id, cause))
	default:
		p.forget(pr)
		pr.finish(fmt.Errorf("kommander: partition %d: %w: %w", p.id, ErrTimeout, cause))
	}
}

// expire answers, with err, every waiting proposal whose deadline is at or before now.
// The caller holds mu.
func (p *partition) expire(now uint64, unknown, noLeader func(*proposal) error) {
	var expired []*proposal
	for _, w := range p.waiting {
		if w.p.deadline != 0 && w.p.deadline <= now && w.p.stage != stageDone {
			expired = append(expired, w.p)
		}
	}
	for _, pr := range expired {
		if pr.stage == stageDone {
			continue
		}
		p.forget(pr)
		pr.finish(unknown(pr))
	}
	for j := 0; j < len(p.queue); j++ {
		pr := p.queue[j]
		if pr.deadline != 0 && pr.deadline <= now {
			p.forget(pr)
			j--
			pr.finish(noLeader(pr))
		}
	}
	p.dropAnswered()
}

// maxForwardedIDs bounds the forwarded entry IDs a node remembers (recentIDs).
const maxForwardedIDs = 1 << 14

// recentIDs remembers the IDs of the last maxForwardedIDs forwarded entries a node
// received, of all partitions (entry IDs come from one sequence per node), so that a
// MsgForward the network delivers twice is proposed once. Loop only.
type recentIDs struct {
	seen map[uint64]struct{}
	ring []uint64 // in arrival order
	next int      // the slot of ring to reuse next, once it is full
}

// unseen returns the entries of a received MsgForward whose IDs the node has not received
// before, and remembers them: a forwarded proposal is sent once and never resent, so a
// second copy is the network's duplicate, and proposing it again would apply the command
// twice (S12).
func (w *recentIDs) unseen(ents []Entry) []Entry {
	if w.seen == nil {
		w.seen = make(map[uint64]struct{})
	}
	kept := ents
	for i := range ents {
		if _, dup := w.seen[ents[i].ID]; dup {
			kept = nil
			for _, e := range ents {
				if _, dup := w.seen[e.ID]; !dup {
					kept = append(kept, e)
				}
			}
			break
		}
	}
	for i := range kept {
		id := kept[i].ID
		if len(w.ring) < maxForwardedIDs {
			w.ring = append(w.ring, id)
		} else {
			delete(w.seen, w.ring[w.next])
			w.ring[w.next] = id
			w.next = (w.next + 1) % maxForwardedIDs
		}
		w.seen[id] = struct{}{}
	}
	return kept
}
