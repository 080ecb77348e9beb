package kommander

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// applier applies committed entries to the StateMachine, in its own goroutine beside the
// loop, so that a slow Apply delays only later applies; it also makes the OnLeaderChange
// calls, in order, from that goroutine. The loop queues entries on each partition
// (pushApply) and wakes it.
type applier struct {
	sm          StateMachine
	parts       *hostedList
	metrics     *metrics
	nodeID      string
	failed      *atomic.Pointer[error]
	fail        func(err, cause error) // Node.failStop
	wakeLoop    func()                 // the loop waits for room in an apply queue
	snaps       *snapshots
	snapshot    func(p *partition, due bool) // Node.maybeSnapshot
	newIDs      func(k int) uint64           // Node.nextIDs
	checkBehind func(p *partition)           // Node.checkBehind
	requeued    func()                       // tells the loop that proposals were queued again

	mu      sync.Mutex // one applier at a time
	spare   []Entry    // reused for the entries of one Apply
	results []any      // reused for their results

	// The partitions the loop queued entries for since the applier last looked, each
	// once: a wake costs the partitions with work, not every hosted one (with 10,000
	// hosted, a scan of all of them took half a millisecond per wake).
	listMu    sync.Mutex
	list      []*partition
	spareList []*partition

	notifyMu       sync.Mutex
	notify         []LeaderChange // leader changes not yet reported
	onLeaderChange func(LeaderChange)

	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

func (a *applier) init(n *Node) {
	a.sm, a.parts, a.metrics, a.nodeID = n.cfg.StateMachine, &n.hosted, &n.metrics, n.cfg.NodeID
	a.failed, a.fail, a.wakeLoop = &n.failed, n.failStop, n.in.signal
	a.onLeaderChange = n.cfg.OnLeaderChange
	a.snaps, a.snapshot = &n.snaps, n.maybeSnapshot
	a.newIDs, a.requeued, a.checkBehind = n.nextIDs, n.in.markProposed, n.checkBehind
	a.wake, a.stop, a.done = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
}

// run is the apply goroutine.
func (a *applier) run() {
	defer close(a.done)
	for {
		select {
		case <-a.wake:
			a.applyPending()
		case <-a.stop:
			a.applyPending()
			return
		}
	}
}

// enqueue puts p on the list of partitions with entries to apply, unless it is there.
// The caller queued the entries first (pushApply) and signals after.
func (a *applier) enqueue(p *partition) {
	if !p.listed.CompareAndSwap(false, true) {
		return
	}
	a.listMu.Lock()
	a.list = append(a.list, p)
	a.listMu.Unlock()
}

// takeList returns the listed partitions and starts a new list.
func (a *applier) takeList() []*partition {
	a.listMu.Lock()
	defer a.listMu.Unlock()
	list := a.list
	a.list, a.spareList = a.spareList[:0], nil
	return list
}

// giveBackList keeps a list's array for a later takeList.
func (a *applier) giveBackList(list []*partition) {
	clear(list)
	a.listMu.Lock()
	if a.spareList == nil {
		a.spareList = list[:0]
	}
	a.listMu.Unlock()
}

// signal wakes the apply goroutine.
func (a *applier) signal() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// leaderChanged queues c for OnLeaderChange, if it is set, and wakes the apply goroutine.
func (a *applier) leaderChanged(c LeaderChange) {
	if a.onLeaderChange == nil {
		return
	}
	a.notifyMu.Lock()
	a.notify = append(a.notify, c)
	a.notifyMu.Unlock()
	a.signal()
}

// applyPending reports the leader changes and applies every partition's committed
// entries, in log order, and answers the proposals they complete. It runs in the apply
// goroutine (or in a test's).
func (a *applier) applyPending() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.notifyMu.Lock()
	notes := a.notify
	a.notify = nil
	a.notifyMu.Unlock()
	for _, c := range notes {
		a.onLeaderChange(c)
	}
	for list := a.takeList(); len(list) > 0; list = a.takeList() {
		for _, p := range list {
			// Off the list before its queue is drained: entries queued from now on put
			// it back.
			p.listed.Store(false)
			for a.applyPartition(p) {
			}
		}
		a.giveBackList(list)
	}
	if a.snaps.wanted.Swap(false) {
		for _, p := range a.parts.load() {
			a.snapshot(p, false)
		}
	}
}

// maxApplyBatch bounds the entries handed to one Apply call.
const maxApplyBatch = 1024

// applyPartition applies up to maxApplyBatch committed entries of p and reports whether
// it applied any.
func (a *applier) applyPartition(p *partition) bool {
	if a.failed.Load() != nil {
		return false
	}
	ents, applied, roomMade := p.popApply(a.spare[:0], maxApplyBatch)
	if len(ents) == 0 {
		return false
	}
	if roomMade {
		a.wakeLoop()
	}
	// The entries to apply are gathered in place at the front of ents (a copy of our
	// own); read barriers that older versions logged are skipped like no-ops.
	last, lastTerm := ents[len(ents)-1].Index, ents[len(ents)-1].Term
	normal := ents[:0]
	var bytes int64
	count := len(ents)
	for i := range ents {
		e := ents[i]
		bytes += int64(e.size())
		if e.Kind == EntryNormal && e.Index > applied && e.Type != barrierType {
			normal = append(normal, e)
		}
		if e.Kind == entryConfig {
			a.snaps.confApplied(p.id, &e) // snapshots carry the configuration
		}
	}
	if cap(a.results) < len(normal) {
		a.results = make([]any, len(normal))
	}
	results := a.results[:len(normal)]
	if len(normal) > 0 {
		if err := a.sm.Apply(int(p.id), normal, results); err != nil {
			a.fail(fmt.Errorf("kommander: node %s: partition %d: apply entries %d..%d: %w", a.nodeID, p.id, normal[0].Index, normal[len(normal)-1].Index, err), err)
			return false
		}
	}
	a.metrics.applied.Add(uint64(len(normal)))
	if p.appliedTo(last, lastTerm, normal, results, a.newIDs) {
		a.requeued() // forwarded proposals lost with their leader go to the next one
	}
	clear(results)
	clear(ents)
	a.spare = ents[:0]
	if a.snaps.applied(p.id, lastTerm, count, bytes) {
		a.snapshot(p, true)
	}
	a.checkBehind(p)
	return true
}
