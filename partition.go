package kommander

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
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
	leaderTerm uint64 // the last term in which this process published that it leads

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
	// awaitingRoom is set while Raft withholds committed entries because applyQ is full.
	awaitingRoom bool
	// listed is set while the partition is on the applier's list of partitions with
	// entries to apply (applier.enqueue), so that it is there once.
	listed atomic.Bool
	// snapshotsBehind is set while the log holds too much past the newest durable
	// snapshot (Node.checkBehind): the partition takes no more entries meanwhile.
	snapshotsBehind bool
	// handedTo is the index of the last committed entry handed to the applier (applyQ).
	handedTo uint64
	// fwdHigh is, per incarnation of a node, the highest entry ID forwarded by it that this
	// node took as the leader of term fwdTerm (firstForward). Loop only.
	fwdTerm uint64
	fwdHigh map[forwardKey]uint64
	// applied is the index of the last entry applied (or skipped as internal), and
	// appliedTerm its term (forwardsLost).
	applied     uint64
	appliedTerm uint64
	// status is what the loop last published.
	status PartitionStatus
	// reads are the ReadBarrier calls in flight (node_read.go).
	reads partitionReads
	// mem is the partition's membership as the node follows it (node_membership.go).
	mem partitionMembership
	// mark is the partition's place in the loop's active set (node_active.go).
	mark partitionMark
}

// newPartition wraps a partition's restored Raft group; hs is the hard state it was
// restored from, applied the state machine's last applied index.
func newPartition(id uint32, r *raft, hs HardState, applied uint64) *partition {
	return &partition{id: id, raft: r, waiting: make(map[uint64]waiter), applied: applied, savedTerm: hs.Term, savedVote: hs.Vote, maxBacklog: maxApplyBacklog}
}

// Bounds of a partition's apply queue. Past them the partition takes no more entries
// into its log (appends from a leader are dropped, to be retried by the leader once the
// state machine caught up; proposals fail with ErrOverloaded), so a slow state machine
// costs bounded memory and never blocks the loop.
const (
	maxApplyBacklog      = 1 << 16
	maxApplyBacklogBytes = 64 << 20
)

// proposal is one Replicate or ReplicateBatch call in flight: its commands, their entry
// IDs, and the answer once there is one.
type proposal struct {
	cmds    []Command
	firstID uint64 // entry i carries ID firstID+i

	// Guarded by the partition's mu.
	stage     proposalStage
	index     uint64 // first index, for stageLocal
	term      uint64 // term of the entries (stageLocal), or of the leader (stageForwarded)
	leader    string // the leader it was forwarded to, for stageForwarded
	remaining int    // entries not yet applied
	deadline  uint64 // node tick after which the proposal is answered with ErrTimeout; 0 none
	results   []Result
	err       error
	done      chan struct{} // closed once results or err is final
	// onDone, when set, is called once the proposal is answered, under the partition's
	// mu: a proposal run for another node answers it from there (node_proxy.go).
	onDone func()

	// Storage for a single command and its result (Replicate), so that one allocation
	// holds them with the proposal.
	one       [1]Command
	oneResult [1]Result
}

// couldBe reports whether e can be the entry of the proposal's command i: a local
// proposal's entries sit at known indexes of a known term, a forwarded one's were appended
// by the leader of its term or a later one.
func (pr *proposal) couldBe(e *Entry, i int) bool {
	switch pr.stage {
	case stageLocal:
		return e.Term == pr.term && e.Index == pr.index+uint64(i)
	case stageForwarded:
		return e.Term >= pr.term
	}
	return false
}

// proposalStage says where a proposal is.
type proposalStage uint8

const (
	stageQueued    proposalStage = iota // waiting for the loop
	stageLocal                          // appended to this node's log as leader
	stageForwarded                      // sent to the leader in a MsgForward
	stageDone                           // answered
)

// waiter locates a proposed entry's caller.
type waiter struct {
	p *proposal
	i int // position of the entry in p.cmds
}

// finish answers the proposal; the caller holds the partition's mu.
func (pr *proposal) finish(err error) {
	if pr.stage == stageDone {
		return
	}
	pr.stage = stageDone
	pr.err = err
	close(pr.done)
	if pr.onDone != nil {
		pr.onDone()
	}
}

// appendEntries appends the proposal's commands to ents as log entries.
func (pr *proposal) appendEntries(ents []Entry) []Entry {
	for i, c := range pr.cmds {
		ents = append(ents, Entry{Kind: EntryNormal, ID: pr.firstID + uint64(i), Type: c.Type, Data: c.Data})
	}
	return ents
}

// admit queues a proposal for the loop, unless the partition has maxPending entries
// waiting already or its state machine is far behind (ErrOverloaded). The caller holds mu.
func (p *partition) admit(pr *proposal, maxPending int) error {
	if p.pending+len(pr.cmds) > maxPending {
		return fmt.Errorf("kommander: partition %d: %d entries pending: %w", p.id, p.pending, ErrOverloaded)
	}
	if p.snapshotsBehind {
		return fmt.Errorf("kommander: partition %d: its snapshots fall behind the writes (see Config.SnapshotEntries): %w", p.id, ErrOverloaded)
	}
	if p.applyFull() {
		return fmt.Errorf("kommander: partition %d: the state machine is %d entries behind: %w", p.id, len(p.applyQ), ErrOverloaded)
	}
	p.pending += len(pr.cmds)
	p.queue = append(p.queue, pr)
	return nil
}

// queued returns the proposals not yet handed to Raft or forwarded, oldest first; the
// caller takes them off with proposedLocally or forwarded. The caller holds mu.
func (p *partition) queued() []*proposal { return p.queue }

// dequeue takes the first k queued proposals off the queue. The caller holds mu.
func (p *partition) dequeue(k int) {
	clear(p.queue[:k])
	if k == len(p.queue) && cap(p.queue) <= maxKeptQueue {
		// Keep the array for the next proposals: one grown from nil on every pass cost an
		// allocation per doubling, each pass.
		p.queue = p.queue[:0]
		return
	}
	p.queue = p.queue[k:]
	if len(p.queue) == 0 {
		p.queue = nil
	}
}

// maxKeptQueue bounds the capacity of an emptied proposal or apply queue that a partition
// keeps for reuse: a burst's array is left to the garbage collector.
const maxKeptQueue = 1024

// proposedLocally records that the first queued proposals, prs, were appended to this
// leader's log from index first on, in term. The caller holds mu.
func (p *partition) proposedLocally(prs []*proposal, first, term uint64) {
	idx := first
	for _, pr := range prs {
		pr.stage, pr.index, pr.term = stageLocal, idx, term
		idx += uint64(len(pr.cmds))
		p.await(pr)
		p.local = append(p.local, pr)
	}
	p.dequeue(len(prs))
}

// forwarded records that the first queued proposals, prs, were forwarded to leader; they
// are answered with ErrTimeout if nothing is heard of them by deadline. The caller holds mu.
func (p *partition) forwarded(prs []*proposal, leader string, term, deadline uint64) {
	for _, pr := range prs {
		pr.stage, pr.leader, pr.term = stageForwarded, leader, term
		p.await(pr)
		pr.deadline = deadline
	}
	p.dequeue(len(prs))
}

// ledTerm reports whether this process led the partition in term (and took forwards in
// it, or published that it led it): it then knows every forward it took in it.
func (p *partition) ledTerm(term uint64) bool {
	return term != 0 && (p.fwdTerm == term || p.leaderTerm == term)
}

// leadsTerm reports whether this node leads the partition in exactly term. Loop only.
func (p *partition) leadsTerm(term uint64) bool {
	st := p.raft.status()
	return st.role == roleLeader && st.term == term
}

// firstForward reports whether ents, forwarded by from in term (which this node leads),
// were never received before, and remembers them (see forwarder.receive): the IDs of one
// incarnation of a node only grow, and its forwards of one partition arrive in order, so
// the highest ID taken per sender incarnation in this term is all there is to keep. A
// message is a copy as a whole or not at all. Loop only.
func (p *partition) firstForward(from string, term uint64, ents []Entry) bool {
	if p.fwdTerm != term || p.fwdHigh == nil {
		p.fwdTerm, p.fwdHigh = term, make(map[forwardKey]uint64)
	}
	for i := range ents {
		id := ents[i].ID
		if id == 0 {
			return false // never forwarded without an ID
		}
		if high, seen := p.fwdHigh[forwardKey{from, idIncarnation(id)}]; seen && id <= high {
			return false
		}
	}
	for i := range ents {
		k := forwardKey{from, idIncarnation(ents[i].ID)}
		p.fwdHigh[k] = max(p.fwdHigh[k], ents[i].ID)
	}
	return true
}

// forwardKey names one incarnation of a node that forwards proposals.
type forwardKey struct {
	from        string
	incarnation uint64
}

// await registers a proposal's entries as waiting to be applied. The caller holds mu.
func (p *partition) await(pr *proposal) {
	pr.deadline = 0
	for i := range pr.cmds {
		p.waiting[pr.firstID+uint64(i)] = waiter{p: pr, i: i}
	}
}

// awaitLeader gives the queued proposals until deadline for a leader to be known. The
// caller holds mu.
func (p *partition) awaitLeader(deadline uint64) {
	for _, pr := range p.queue {
		if pr.deadline == 0 {
			pr.deadline = deadline
		}
	}
}

// refuseQueued answers the queued proposals with a *NotLeaderError naming leader: this
// node does not lead the partition and does not forward. The caller holds mu.
func (p *partition) refuseQueued(leader, leaderAddr string) {
	for _, pr := range p.queue {
		p.pending -= len(pr.cmds)
		pr.finish(&NotLeaderError{Partition: int(p.id), Leader: leader, LeaderAddr: leaderAddr})
	}
	p.queue = p.queue[:0]
}

// refusedBy answers with ErrOverloaded the proposals forwarded to leader whose entries
// (by ID) it refused: it appended none of them, so they will never be applied.
func (p *partition) refusedBy(leader string, term uint64, ids []Entry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range ids {
		w, ok := p.waiting[ids[i].ID]
		if !ok || w.p.stage != stageForwarded || w.p.leader != leader || w.p.term != term {
			continue
		}
		p.forget(w.p)
		w.p.finish(fmt.Errorf("kommander: partition %d: the leader %s did not take the forwarded entry, which was not applied: %w", p.id, leader, ErrOverloaded))
	}
}

// requeueRefused queues again, with fresh entry IDs (newIDs), the proposals forwarded to
// leader in term whose entries (by ID) it refused without appending them, asking for them
// to be sent again: they go to the next leader. Fresh IDs, because the next leader may
// have taken later proposals of this node in its term already (partition.firstForward
// would take the old IDs for copies). It reports whether it queued any.
func (p *partition) requeueRefused(leader string, term uint64, ids []Entry, newIDs func(k int) uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	queued := false
	for i := range ids {
		w, ok := p.waiting[ids[i].ID]
		if !ok || w.p.stage != stageForwarded || w.p.leader != leader || w.p.term != term {
			continue
		}
		p.requeue(w.p, newIDs)
		queued = true
	}
	return queued
}

// requeue queues a forwarded proposal again, under fresh IDs from newIDs, to be sent to
// the next leader: its old IDs are forgotten. The caller holds mu.
func (p *partition) requeue(pr *proposal, newIDs func(k int) uint64) {
	for j := range pr.cmds {
		delete(p.waiting, pr.firstID+uint64(j))
	}
	pr.firstID, pr.stage, pr.deadline = newIDs(len(pr.cmds)), stageQueued, 0
	p.queue = append(p.queue, pr)
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

// expire answers every proposal whose deadline is at or before now: one handed to Raft or
// forwarded has an unknown outcome (ErrTimeout); one still queued found no leader in time
// and was never proposed (ErrNotLeader).
func (p *partition) expire(now uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
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
		if pr.stage == stageForwarded {
			pr.finish(fmt.Errorf("kommander: partition %d: %w: no outcome in time for the entry forwarded to %s", p.id, ErrTimeout, pr.leader))
		} else {
			pr.finish(fmt.Errorf("kommander: partition %d: %w: the leader changed after the entry was proposed", p.id, ErrTimeout))
		}
	}
	for j := 0; j < len(p.queue); j++ {
		pr := p.queue[j]
		if pr.deadline != 0 && pr.deadline <= now {
			p.forget(pr)
			j--
			pr.finish(&NotLeaderError{Partition: int(p.id)})
		}
	}
	p.dropAnswered()
}

// failAll answers every proposal still waiting: queued ones were never proposed (cause),
// the others have an unknown outcome (ErrTimeout wrapping cause).
func (p *partition) failAll(cause error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pr := range append([]*proposal(nil), p.queue...) {
		p.forget(pr)
		pr.finish(fmt.Errorf("kommander: partition %d: not proposed: %w", p.id, cause))
	}
	seen := make(map[*proposal]bool)
	for _, w := range p.waiting {
		seen[w.p] = true
	}
	for pr := range seen {
		p.forget(pr)
		pr.finish(fmt.Errorf("kommander: partition %d: %w: %w", p.id, ErrTimeout, cause))
	}
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

// applyFull reports whether the apply queue is past its bounds, or the snapshots fall
// behind (Node.checkBehind): the partition takes no more entries. The caller holds mu.
func (p *partition) applyFull() bool {
	return len(p.applyQ) >= p.maxBacklog || p.applyBytes >= maxApplyBacklogBytes || p.snapshotsBehind
}

// backlogged is applyFull for the loop.
func (p *partition) backlogged() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.applyFull()
}

// pushApply queues committed entries for the applier. Loop only.
func (p *partition) pushApply(ents []Entry) {
	p.mu.Lock()
	p.handedTo = ents[len(ents)-1].Index
	p.applyQ = append(p.applyQ, ents...)
	for i := range ents {
		p.applyBytes += ents[i].size()
	}
	p.mu.Unlock()
}

// applyRoom returns how many more committed entries the apply queue takes (0 or less:
// none), and remembers when it has no room, so that the applier wakes the loop once it
// made some (popApply): Raft withholds committed entries meanwhile. Loop only.
func (p *partition) applyRoom() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	room := p.maxBacklog - len(p.applyQ)
	if p.applyBytes >= maxApplyBacklogBytes {
		room = 0
	}
	p.awaitingRoom = room <= 0
	return room
}

// popApply appends up to limit of the committed entries queued for the applier to dst and
// takes them off the queue; applied is the index of the last entry applied before them.
// roomMade reports that the loop waits for room in the queue (see applyRoom) and popApply
// made some: the caller wakes the loop.
func (p *partition) popApply(dst []Entry, limit int) (ents []Entry, applied uint64, roomMade bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := min(len(p.applyQ), limit)
	if k > 0 && p.awaitingRoom {
		p.awaitingRoom, roomMade = false, true
	}
	dst = append(dst, p.applyQ[:k]...)
	for i := range p.applyQ[:k] {
		p.applyBytes -= p.applyQ[i].size()
	}
	clear(p.applyQ[:k])
	switch {
	case k == len(p.applyQ) && cap(p.applyQ) <= maxKeptQueue:
		p.applyQ = p.applyQ[:0] // kept for the next entries, as dequeue keeps its array
	case k == len(p.applyQ):
		p.applyQ = nil
	default:
		p.applyQ = p.applyQ[k:]
	}
	return dst, p.applied, roomMade
}

// appliedTo records that the applier applied the entries up to last, of term lastTerm,
// and answers the proposals that ents (with their results) complete and the reads waiting
// for last. It reports whether it queued forwarded proposals again (forwardsLost), with
// IDs from newIDs: the loop is to send them.
func (p *partition) appliedTo(last, lastTerm uint64, ents []Entry, results []any, newIDs func(k int) uint64) (requeued bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if last > p.applied {
		p.applied = last
	}
	p.resolveApplied(ents, results)
	if len(p.reads.all) > 0 {
		p.readsApplied()
	}
	if lastTerm > p.appliedTerm {
		p.appliedTerm = lastTerm
		requeued = p.forwardsLost(lastTerm, newIDs)
	}
	return requeued
}

// waitingForwarded returns the forwarded proposals waiting for their entries for which
// match holds, each once. The caller holds mu.
func (p *partition) waitingForwarded(match func(*proposal) bool) []*proposal {
	var found []*proposal
	seen := make(map[*proposal]bool)
	for _, w := range p.waiting {
		if pr := w.p; pr.stage == stageForwarded && !seen[pr] && match(pr) {
			seen[pr] = true
			found = append(found, pr)
		}
	}
	return found
}

// forwardsLost queues again, with fresh IDs, the proposals forwarded to the leader of a
// term before term, the term of an entry just applied, that are still waiting: they were
// not committed and never will be. A committed entry of a later term follows, in the log,
// every committed entry of earlier terms, and the node applies in log order, so an entry
// of the earlier leader that is not applied by now was not committed; nor can it be later,
// since every later leader holds the committed entry of the later term and so not the
// earlier leader's entries after it. The earlier leader may be gone (it handed its
// leadership over and stopped as the forward reached it): without this, such a proposal
// would wait for its deadline and fail with an unknown outcome. A proposal partly applied
// is answered instead. It reports whether it queued any. The caller holds mu.
func (p *partition) forwardsLost(term uint64, newIDs func(k int) uint64) bool {
	lost := p.waitingForwarded(func(pr *proposal) bool { return pr.term < term })
	if len(lost) == 0 {
		return false
	}
	slices.SortFunc(lost, func(a, b *proposal) int { return cmp.Compare(a.firstID, b.firstID) })
	queued := false
	for _, pr := range lost {
		if done := len(pr.cmds) - pr.remaining; done > 0 {
			p.forget(pr)
			pr.finish(fmt.Errorf("%w: partition %d: the leader of term %d took %d of %d forwarded entries; the others were not applied", ErrNotLeader, p.id, pr.term, done, len(pr.cmds)))
			continue
		}
		p.requeue(pr, newIDs)
		queued = true
	}
	return queued
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
		if c.Type != e.Type || !bytes.Equal(c.Data, e.Data) || !w.p.couldBe(e, w.i) {
			continue // an entry of another node, or of an earlier life, with the same ID
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

// needsSave reports whether rd must be saved with an fsync of its own: it has entries, or
// a term or vote that differ from the saved ones. A hard state whose only change is the
// commit index does not: the commit index need not be durable for safety (a restarted
// node learns it again), so it rides along with the next save. Loop only.
func (p *partition) needsSave(rd *raftReady) bool {
	hs := rd.HardState
	return len(rd.Entries) > 0 || (rd.SaveHardState && (hs.Term != p.savedTerm || hs.Vote != p.savedVote))
}

// saved records that rd's hard state is durable. Loop only.
func (p *partition) saved(rd *raftReady) {
	if rd.SaveHardState {
		p.savedTerm, p.savedVote = rd.HardState.Term, rd.HardState.Vote
	}
}

// publish records st, the partition's Raft status, for the public API (leader and
// status). On a leader change, or when this node stops leading, the proposals that went
// through a leader that no longer is one get until grace to be applied; after it they are
// answered as unknown (S18, S19). It reports whether this node just became a candidate and
// whether the leader changed. Loop only.
func (p *partition) publish(st raftStatus, self string, grace uint64) (candidate, leaderChanged bool) {
	if st.role == roleLeader {
		p.leaderTerm = st.term
	}
	role := st.role.String()
	if role == p.lastRole && st.leader == p.lastLeader && st.term == p.lastTerm {
		p.mu.Lock()
		p.status.Commit, p.status.LastIndex, p.status.Quiesced = st.commit, st.lastIndex, st.quiesced
		p.mu.Unlock()
		return false, false
	}
	leaderChanged = st.leader != p.lastLeader
	candidate = role != p.lastRole && role == roleCandidate.String()
	wasLeader := p.lastRole == roleLeader.String()
	p.lastRole, p.lastLeader, p.lastTerm = role, st.leader, st.term
	p.mu.Lock()
	defer p.mu.Unlock()
	p.status = PartitionStatus{Partition: int(p.id), Role: role, Term: st.term, Leader: st.leader, Commit: st.commit, LastIndex: st.lastIndex, Quiesced: st.quiesced}
	if leaderChanged || (wasLeader && role != roleLeader.String()) {
		for _, w := range p.waiting {
			pr := w.p
			if (pr.stage == stageLocal && st.leader != self) || (pr.stage == stageForwarded && pr.leader != st.leader) {
				if pr.deadline == 0 || pr.deadline > grace {
					pr.deadline = grace
				}
			}
		}
	}
	return candidate, leaderChanged
}

// leader returns the leader the loop last published, or "".
func (p *partition) leader() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status.Leader
}

// publicStatus returns the partition's status for Node.Status.
func (p *partition) publicStatus() PartitionStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.status
	s.Applied = p.applied
	s.Pending = p.pending
	return s
}
