package kommander

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"sync/atomic"
)

// This file is the node's side of snapshots: taking one (the apply goroutine captures the
// state between two Applies, a goroutine of its own writes it), compacting the log after
// it, installing one a leader sent, and restoring the newest usable one at start. Sending
// and receiving are in node_snapshot_transfer.go.

// errNoSnapshots refuses Node.Snapshot on a node that cannot take snapshots.
var errNoSnapshots = fmt.Errorf("%w: snapshots need a StateMachine that implements Snapshotter and a SnapshotStore (or a DataDir)", ErrInvalidConfig)

// snapshots is what a node keeps for taking and installing snapshots; it is off (sm nil)
// without a Snapshotter or a store.
type snapshots struct {
	sm       Snapshotter
	store    *SnapshotStore
	entries  int
	bytes    int64
	trailing uint64
	parts    []partSnapshots
	writers  sync.WaitGroup // the goroutines writing snapshots; Stop waits for them
	wanted   atomic.Bool    // some Node.Snapshot call waits: the applier looks at every partition
}

// partSnapshots is one partition's snapshot bookkeeping.
type partSnapshots struct {
	// The apply goroutine's (and an install's, which holds the applier's lock): the term
	// of the last applied entry and what was applied since the last snapshot.
	appliedTerm uint64
	// conf is the configuration as of the last applied entry, which a snapshot carries;
	// at start, that of the snapshot restored (the configuration the log goes on from).
	conf         membership
	sinceEntries int
	sinceBytes   int64
	// appliedBytes counts the bytes of every entry applied; with takenBytes and
	// durableBytes (under mu) it tells how many are not yet in a durable snapshot.
	appliedBytes atomic.Int64

	mu           sync.Mutex
	takenBytes   int64                // appliedBytes when the snapshot being written was taken
	durableBytes int64                // appliedBytes when the newest durable snapshot was taken
	running      bool                 // a snapshot is being written
	wanted       bool                 // Node.Snapshot asked for one
	waiters      []chan snapshotTaken // Node.Snapshot calls waiting for the next one to end
	newest       snapshotRef          // the newest durable snapshot (zero: none)
}

// snapshotTaken is how one snapshot ended.
type snapshotTaken struct {
	index uint64
	err   error
}

func (s *snapshots) enabled() bool { return s.sm != nil }

// init sets the node's snapshots up from cfg (NewNode, before the partitions).
func (s *snapshots) init(cfg Config, store *SnapshotStore) {
	sm, ok := cfg.StateMachine.(Snapshotter)
	if !ok || store == nil {
		return
	}
	s.sm, s.store = sm, store
	s.entries, s.bytes, s.trailing = cfg.SnapshotEntries, cfg.SnapshotBytes, uint64(cfg.SnapshotTrailingEntries)
	s.parts = make([]partSnapshots, cfg.Partitions)
}

// snapshotStoreFor returns the store cfg asks for: its own, or the one in DataDir.
func snapshotStoreFor(cfg Config) (*SnapshotStore, error) {
	if cfg.SnapshotStore != nil || cfg.DataDir == "" {
		return cfg.SnapshotStore, nil
	}
	if _, ok := cfg.StateMachine.(Snapshotter); !ok {
		return nil, nil
	}
	return NewDirSnapshotStore(filepath.Join(cfg.DataDir, "snapshots"))
}

// restore brings partition id's state machine to its newest usable snapshot at start and
// makes the stored log agree with it. applied is what the state machine says it applied;
// it returns the applied index and its term afterwards. A snapshot that fails its checks
// is skipped with the reason logged; an older one serves as long as the stored log starts
// no later than right after it (S21, S22).
func (n *Node) restoreSnapshot(id uint32, applied uint64) (uint64, error) {
	s := &n.snaps
	if !s.enabled() {
		return applied, nil
	}
	refs, err := s.store.list(id)
	if err != nil {
		return 0, err
	}
	first := n.storage.FirstIndex(id)
	for _, ref := range refs {
		if ref.index+1 < first {
			n.log.Error("snapshot unusable: the log was compacted past it", "partition", id, "snapshot", ref.name(), "log_first", first)
			break // the rest are older still
		}
		f, err := s.store.open(ref)
		if err != nil {
			n.log.Error("snapshot unusable; trying an older one", "partition", id, "err", err)
			continue
		}
		if applied < ref.index {
			err = s.sm.Restore(int(id), ref.index, f.data())
			applied = ref.index
		}
		f.Close()
		if err != nil {
			return 0, fmt.Errorf("kommander: node %s: partition %d: restore snapshot %s: %w", n.cfg.NodeID, id, ref.name(), err)
		}
		// The log must go on from the snapshot: drop it where it disagrees (a crash
		// between an install and its compaction leaves the old log behind).
		if t, err := n.storage.Term(id, ref.index); err != nil || t != ref.term {
			if err := n.storage.Compact(id, ref.index, ref.term); err != nil {
				return 0, fmt.Errorf("kommander: node %s: partition %d: compact to snapshot %s: %w", n.cfg.NodeID, id, ref.name(), err)
			}
		}
		ps := &s.parts[id]
		ps.newest = ref
		ps.conf = membership{Voters: f.layout.meta.voters, Learners: f.layout.meta.learners}
		n.log.Info("restored snapshot", "partition", id, "index", ref.index, "term", ref.term)
		return applied, nil
	}
	return applied, nil
}

// startConf returns the configuration partition id's log goes on from: the restored
// snapshot's, or boot.
func (s *snapshots) startConf(id uint32, boot membership) membership {
	if s.enabled() && len(s.parts[id].conf.Voters) > 0 {
		return s.parts[id].conf
	}
	return boot
}

// initConf records the configuration as of the applied entry at start.
func (s *snapshots) initConf(id uint32, m membership) {
	if s.enabled() {
		s.parts[id].conf = m
	}
}

// confApplied records the configuration of a configuration entry the apply goroutine
// passed: later snapshots carry it.
func (s *snapshots) confApplied(id uint32, e *Entry) {
	if !s.enabled() {
		return
	}
	if m, err := decodeMembership(e.Data); err == nil {
		s.parts[id].conf = m
	}
}

// initAppliedTerm records the term of the applied entry at start.
func (s *snapshots) initAppliedTerm(id uint32, term uint64) {
	if s.enabled() {
		s.parts[id].appliedTerm = term
	}
}

// applied counts entries the apply goroutine applied, up to one of term; it reports
// whether a snapshot is due.
func (s *snapshots) applied(id uint32, term uint64, entries int, bytes int64) bool {
	if !s.enabled() {
		return false
	}
	ps := &s.parts[id]
	ps.appliedTerm = term
	ps.sinceEntries += entries
	ps.sinceBytes += bytes
	ps.appliedBytes.Add(bytes)
	return ps.sinceEntries >= s.entries || ps.sinceBytes >= s.bytes
}

// snapshotBacklogFactor bounds the log behind the newest durable snapshot: once a
// partition applied more than this many snapshot intervals (SnapshotEntries or
// SnapshotBytes) past it, because its snapshots take longer to write than writes take to
// fill an interval, the partition takes no more entries until one completes (see
// partition.applyFull): proposals fail with ErrOverloaded, a leader refuses forwards and a
// follower drops appends, to be sent again. Without it a slow Snapshotter would let the
// log, and the disk, grow without bound.
const snapshotBacklogFactor = 4

// checkBehind records on p whether its log holds more than snapshotBacklogFactor
// intervals past its newest durable snapshot. It runs after each apply and when a snapshot
// ends or is installed; the partition's snapshot lock, then its lock (maybeSnapshot's
// order), make each check and its record one step, so that a stale check never overwrites
// a newer one.
func (n *Node) checkBehind(p *partition) {
	s := &n.snaps
	if !s.enabled() {
		return
	}
	ps := &s.parts[p.id]
	ps.mu.Lock()
	p.mu.Lock()
	applied, newest := p.applied, ps.newest.index
	behind := applied-min(applied, newest) > uint64(snapshotBacklogFactor*s.entries) ||
		ps.appliedBytes.Load()-ps.durableBytes > snapshotBacklogFactor*s.bytes
	was := p.snapshotsBehind
	p.snapshotsBehind = behind
	p.mu.Unlock()
	ps.mu.Unlock()
	if behind && !was {
		n.log.Warn("snapshots fall behind the writes: the partition takes no more entries until one completes",
			"partition", p.id, "applied", applied, "snapshot", newest)
	}
}

// maybeSnapshot takes a snapshot of p if one is due or asked for and none is being
// written. It runs in the apply goroutine, between two Applies, so the state machine is
// at p's applied index.
func (n *Node) maybeSnapshot(p *partition, due bool) {
	s := &n.snaps
	if !s.enabled() {
		return
	}
	ps := &s.parts[p.id]
	ps.mu.Lock()
	if ps.running && due {
		ps.wanted = true // due again: take the next one as soon as this one ends
	}
	if ps.running || (!due && !ps.wanted) {
		ps.mu.Unlock()
		return
	}
	p.mu.Lock()
	index := p.applied
	p.mu.Unlock()
	if index == 0 || index == ps.newest.index {
		// Nothing applied since the newest snapshot: it is the answer.
		ps.wanted = false
		ps.endLocked(snapshotTaken{index: ps.newest.index})
		ps.mu.Unlock()
		return
	}
	ps.running, ps.wanted = true, false
	ps.takenBytes = ps.appliedBytes.Load()
	ps.mu.Unlock()
	wt, err := s.sm.Snapshot(int(p.id))
	ref := snapshotRef{partition: p.id, index: index, term: ps.appliedTerm}
	conf := ps.conf
	ps.sinceEntries, ps.sinceBytes = 0, 0
	if err != nil {
		n.snapshotEnded(ref, fmt.Errorf("kommander: node %s: partition %d: state machine snapshot: %w", n.cfg.NodeID, p.id, err))
		return
	}
	s.writers.Add(1)
	go func() {
		defer s.writers.Done()
		n.snapshotEnded(ref, n.writeSnapshot(ref, conf, wt))
	}()
}

// writeSnapshot writes the snapshot wt captured, makes it durable, then compacts the log
// behind it. It runs beside the loop and the apply goroutine: writes go on meanwhile.
func (n *Node) writeSnapshot(ref snapshotRef, conf membership, wt io.WriterTo) error {
	s := &n.snaps
	sink, err := s.store.create(ref)
	if err != nil {
		return err
	}
	w, err := newSnapshotWriter(sink, snapshotMeta{partition: ref.partition, index: ref.index, term: ref.term,
		voters: conf.Voters, learners: conf.Learners})
	if err == nil {
		_, err = wt.WriteTo(w)
	}
	if err == nil {
		err = w.finish()
	}
	if err != nil {
		sink.abort()
		return fmt.Errorf("kommander: node %s: partition %d: write snapshot at %d: %w", n.cfg.NodeID, ref.partition, ref.index, err)
	}
	if err := sink.commit(); err != nil {
		return err
	}
	return n.compactBehind(ref)
}

// compactBehind drops the log entries a durable snapshot ref makes unnecessary and the
// snapshots older than the one before it. It keeps the trailing window for followers a
// little behind, and everything after the previous snapshot, so that a start that finds
// ref damaged still has an older snapshot and the log after it (S21).
func (n *Node) compactBehind(ref snapshotRef) error {
	s := &n.snaps
	refs, err := s.store.list(ref.partition)
	if err != nil {
		return err
	}
	var prev snapshotRef
	for _, r := range refs {
		if r.index < ref.index {
			if prev.index == 0 {
				prev = r
			} else if err := s.store.remove(r); err != nil {
				n.log.Warn("could not remove an old snapshot", "err", err)
			}
		}
	}
	to := prev.index
	if ref.index > s.trailing {
		to = min(to, ref.index-s.trailing)
	} else {
		to = 0
	}
	if to < n.storage.FirstIndex(ref.partition) {
		return nil
	}
	term, err := n.storage.Term(ref.partition, to)
	if err != nil {
		return nil // compacted meanwhile by an install: nothing to do
	}
	if err := n.storage.Compact(ref.partition, to, term); err != nil {
		n.failStop(fmt.Errorf("kommander: node %s: partition %d: compact the log to %d: %w", n.cfg.NodeID, ref.partition, to, err), err)
		return err
	}
	return nil
}

// snapshotEnded records how a snapshot ended and answers the Node.Snapshot calls waiting.
func (n *Node) snapshotEnded(ref snapshotRef, err error) {
	if err != nil {
		n.log.Error("snapshot failed", "partition", ref.partition, "index", ref.index, "err", err)
	}
	ps := &n.snaps.parts[ref.partition]
	ps.mu.Lock()
	ps.running = false
	if err == nil {
		ps.newest = ref
		ps.durableBytes = ps.takenBytes
		n.metrics.snapshots.Add(1)
	}
	ps.endLocked(snapshotTaken{index: ref.index, err: err})
	if ps.wanted {
		n.snaps.wanted.Store(true)
		n.apply.signal()
	}
	ps.mu.Unlock()
	if p, err := n.partition(int(ref.partition)); err == nil {
		n.checkBehind(p) // writes held back for this snapshot may go on
	}
}

// endLocked answers the waiting Node.Snapshot calls. The caller holds mu.
func (ps *partSnapshots) endLocked(t snapshotTaken) {
	for _, c := range ps.waiters {
		c <- t
	}
	ps.waiters = nil
}

// newestSnapshot returns the newest durable snapshot of a partition.
func (s *snapshots) newestSnapshot(id uint32) snapshotRef {
	ps := &s.parts[id]
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.newest
}

// Snapshot takes a snapshot of the partition now, at the last entry applied on this node,
// and compacts the log behind it; it returns the snapshot's index once it is durable. It
// needs a StateMachine that implements Snapshotter. Writes go on meanwhile.
func (n *Node) Snapshot(ctx context.Context, partition int) (uint64, error) {
	p, err := n.partition(partition)
	if err != nil {
		return 0, err
	}
	if !n.snaps.enabled() {
		return 0, errNoSnapshots
	}
	if err := n.Err(); err != nil {
		return 0, err
	}
	ps := &n.snaps.parts[p.id]
	c := make(chan snapshotTaken, 1)
	ps.mu.Lock()
	ps.wanted = true
	ps.waiters = append(ps.waiters, c)
	ps.mu.Unlock()
	n.snaps.wanted.Store(true)
	n.apply.signal()
	select {
	case t := <-c:
		return t.index, t.err
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-n.done:
		return 0, n.Err()
	}
}

// install restores the state machine from a snapshot a leader sent (received, checked and
// stored already) and compacts the log to it: Raft's raftReady asked for it. It runs in
// the loop, before that raftReady's entries are saved. The apply goroutine is held off
// meanwhile; the committed entries waiting for it are all older than the snapshot.
func (n *Node) install(p *partition, meta *snapshotMeta) error {
	s := &n.snaps
	ref := snapshotRef{partition: p.id, index: meta.index, term: meta.term}
	if !s.enabled() {
		return fmt.Errorf("kommander: node %s: partition %d: asked to install snapshot %s without snapshots", n.cfg.NodeID, p.id, ref.name())
	}
	f, err := s.store.open(ref)
	if err != nil {
		return err
	}
	defer f.Close()
	n.apply.mu.Lock()
	err = s.sm.Restore(int(p.id), meta.index, f.data())
	if err == nil {
		// The log must not go back to the entries the snapshot replaces before the
		// state machine holds it; only then do the status and the callers learn of it.
		err = n.storage.Compact(p.id, meta.index, meta.term)
		p.restored(meta.index, meta.term)
	}
	ps := &s.parts[p.id]
	ps.appliedTerm, ps.sinceEntries, ps.sinceBytes = meta.term, 0, 0
	ps.mu.Lock()
	ps.durableBytes = ps.appliedBytes.Load() // the snapshot holds everything applied
	ps.mu.Unlock()
	ps.conf = membership{Voters: meta.voters, Learners: meta.learners}
	n.apply.mu.Unlock()
	if err != nil {
		return fmt.Errorf("kommander: node %s: partition %d: install snapshot %s: %w", n.cfg.NodeID, p.id, ref.name(), err)
	}
	ps.mu.Lock()
	if ref.index > ps.newest.index {
		ps.newest = ref
	}
	ps.mu.Unlock()
	n.checkBehind(p) // a follower that dropped appends meanwhile takes them again
	if err := s.store.removeOlder(ref); err != nil {
		n.log.Warn("could not remove old snapshots", "partition", p.id, "err", err)
	}
	n.metrics.snapshotsInstalled.Add(1)
	n.log.Info("installed a snapshot from the leader", "partition", p.id, "index", meta.index, "term", meta.term)
	return nil
}

// restored empties the apply queue of p, whose state machine now holds a snapshot up to
// index, of term term, and answers the proposals it took: whether a proposal of this
// node's is among the entries the snapshot holds is unknown (ErrTimeout). Those forwarded
// to a leader of a later term than the snapshot's go on waiting: none of their entries can
// be in it.
func (p *partition) restored(index, term uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.applyQ)
	p.applyQ, p.applyBytes = nil, 0
	p.applied, p.handedTo = index, index
	p.appliedTerm = max(p.appliedTerm, term)
	if p.awaitingRoom {
		p.awaitingRoom = false
	}
	for _, pr := range append([]*proposal(nil), p.local...) {
		if pr.stage != stageDone && pr.index <= index {
			p.forget(pr)
			pr.finish(fmt.Errorf("kommander: partition %d: %w: the node installed a snapshot that may hold the entry", p.id, ErrTimeout))
		}
	}
	for _, pr := range p.waitingForwarded(func(pr *proposal) bool { return pr.term <= term }) {
		p.forget(pr)
		pr.finish(fmt.Errorf("kommander: partition %d: %w: the node installed a snapshot that may hold the forwarded entry", p.id, ErrTimeout))
	}
	p.dropAnswered()
}

// errSnapshotTransfer is the cause of a transfer a node abandoned.
var errSnapshotTransfer = errors.New("kommander: snapshot transfer abandoned")
