package kommander

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// StateMachine is the application's replicated state. A node calls it from one goroutine
// of its own, beside the Raft loop, so a slow Apply delays only later applies.
type StateMachine interface {
	// Apply applies committed entries of one partition, in log order. Each entry is
	// applied exactly once per node lifetime (after a restart, from Applied+1 on). Only
	// application entries (EntryNormal) are passed; entry.Index is its log index. Apply
	// may set results[i] to a value that the Replicate call of entries[i] returns (in
	// Result.Value), for example the outcome of a compare-and-set or the value a read
	// returns. A non-nil error stops the node: it cannot continue with a state machine
	// that diverged.
	Apply(partition int, entries []Entry, results []any) error
	// Applied returns the index of the last entry of the partition the state machine has
	// durably applied, or 0. It is called once per partition when the node starts; a state
	// machine that keeps nothing across restarts returns 0 and is replayed the whole log.
	Applied(partition int) uint64
}

// Command is one entry to replicate: an application command type and its payload.
type Command struct {
	// Type names the command, like a method name ("SetValue").
	Type string
	// Data is the command's payload. The node keeps it until the entry is applied; do not
	// modify it after the call.
	Data []byte
}

// Result is what Replicate returns for an entry that was committed and applied.
type Result struct {
	// Index and Term locate the entry in the partition's log.
	Index, Term uint64
	// Value is what the StateMachine's Apply put in results for the entry.
	Value any
}

// LeaderChange tells the application that a partition has a new leader, or none.
type LeaderChange struct {
	// Partition is the partition whose leader changed.
	Partition int
	// Leader is the new leader's node ID, or "" when the partition has no leader.
	Leader string
	// Term is the term in which it leads.
	Term uint64
	// IsLocal is set when the leader is this node.
	IsLocal bool
}

// Status is a node's view of its partitions, for monitoring. It marshals to JSON.
type Status struct {
	// NodeID is the node's ID.
	NodeID string `json:"node"`
	// Partitions holds one status per partition the node hosts (all of them unless
	// Config.ReplicationFactor places partitions on subsets), in partition order.
	Partitions []PartitionStatus `json:"partitions"`
	// Err is set once the node failed (a storage or state machine error) and stopped
	// accepting writes.
	Err string `json:"error,omitempty"`
}

// PartitionStatus is one partition's Raft state as a node sees it.
type PartitionStatus struct {
	// Partition is the partition number.
	Partition int `json:"partition"`
	// Role is "leader", "candidate", "pre-candidate" or "follower".
	Role string `json:"role"`
	// Term is the node's current term in the partition.
	Term uint64 `json:"term"`
	// Leader is the leader's node ID, or "" when none is known.
	Leader string `json:"leader"`
	// Commit is the highest index known to be committed.
	Commit uint64 `json:"commit"`
	// Applied is the highest index applied to the state machine.
	Applied uint64 `json:"applied"`
	// LastIndex is the index of the last entry in the node's log.
	LastIndex uint64 `json:"last_index"`
	// Pending is the number of entries proposed on this node and not yet answered.
	Pending int `json:"pending"`
	// Quiesced is true while the partition is idle on this node: no heartbeats, no
	// election timer, until a write, a read or a message wakes it.
	Quiesced bool `json:"quiesced"`
}

// node states.
const (
	stateNew int32 = iota
	stateRunning
	stateStopping
	stateStopped
)

// Node is one member of a kommander cluster: it runs every partition's Raft group, one
// loop that turns their output into batched storage writes and network sends, and one
// goroutine that applies committed entries to the StateMachine.
type Node struct {
	cfg       Config
	log       *slog.Logger
	storage   Storage
	ownsStore bool
	dirLock   *dirLock // DataDir's lock, when the node took it (a Storage of the caller's)
	transport Transport
	parts     []*partition      // the hosted partitions, in partition order (node_hosting.go)
	addrs     map[string]string // member ID -> address ("" while unknown); loop only once started
	tick      time.Duration
	elTicks   int
	hbTicks   int
	rand      *rand.Rand
	idSeq     atomic.Uint64
	readSeq   atomic.Uint64 // read request IDs (Message.Context of MsgReadIndex)
	metrics   metrics

	state    atomic.Int32
	failed   atomic.Pointer[error] // sticky failure: storage or state machine
	done     chan struct{}         // closed once the node failed or stopped
	doneOnce sync.Once

	in        inbox        // what arrives between loop passes
	out       outbox       // what a pass sends, by peer; loop only
	persist   persister    // the batch being saved; loop only, beside its goroutine
	early     []Message    // scratch for takeEarly; loop only
	fwd       forwarder    // proposals to and from the nodes that lead; loop only
	apply     applier      // the apply goroutine and the leader-change notifications
	leaders   leaderWatch  // wakes WaitForLeader
	inc       incarnations // one node ID, one data directory; loop only
	live      liveness     // when each peer was last heard from; loop only
	active    activeSet    // the partitions a pass visits; loop only
	yield     batchYield   // whether the loop yields before a Save; loop only
	snaps     snapshots    // taking, installing and restoring snapshots
	transfers transfers    // snapshots to and from peers
	mem       memberState  // membership changes, leadership transfers, removal
	book      addressBook  // the versioned address records; loop only

	// Placement (node_hosting.go): which partitions the node hosts, and how it serves the
	// others (node_proxy.go).
	place          atomic.Pointer[placement]   // set before Start, replaced when a bootstrap forms the cluster
	slots          []atomic.Pointer[partition] // by partition number; nil: not hosted
	hosted         hostedList                  // parts, for the goroutines beside the loop
	firstCampaigns []uint32                    // loop only
	proxy          proxy

	// loop only.
	now        uint64  // ticks since start
	leaseTicks tickLog // when lease reads are on, the times of the recent ticks
	proposeBuf []Entry // reused for the entries handed to Raft's propose

	// startLoops starts the node's goroutines (runLoops); a test that drives the node by
	// hand replaces it. admitted runs once a proposal passed the checks, before it is
	// queued; a test pauses there to fail or stop the node in between.
	startLoops func()
	admitted   func()

	stop shutdown

	boot     *bootstrapper // with BootstrapExpect: forming the cluster; loop only
	discView uint64        // the version of the discovery view followed last; loop only
	disc     nodeDiscovery // the view of discovery, and its watcher
	// addDiscovered adds a node discovery found to the cluster (AutoJoin): AddNode, or
	// what a test puts in its place. Nil: AutoJoin does not run.
	addDiscovered func(ctx context.Context, id, addr string) error
}

// shutdown is the progress of Stop, which may be called again after a ctx ended it early.
type shutdown struct {
	loop     chan struct{} // closed to end the loop and ticker goroutines
	loopDone chan struct{} // closed by the loop goroutine as it ends
	mu       sync.Mutex    // one Stop at a time; guards the three flags below
	begun    bool          // the loop (and later apply) were told to end
	waitLoop bool          // the loop and apply goroutines run and must be waited for
	done     bool          // Stop finished: everything closed
}

// NewNode checks cfg, opens storage and restores every partition's Raft state from it.
// It does not touch the network; Start does.
func NewNode(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	n := &Node{
		cfg:      cfg,
		log:      cfg.Logger.With("node", cfg.NodeID),
		storage:  cfg.Storage,
		admitted: func() {},
		done:     make(chan struct{}),
		stop:     shutdown{loop: make(chan struct{}), loopDone: make(chan struct{})},
	}
	n.startLoops = n.runLoops
	n.tick, n.elTicks, n.hbTicks = tickTimes(cfg)
	if cfg.LeaseReads {
		n.leaseTicks.at = make([]time.Time, n.elTicks+1)
	}
	seed := cfg.RandSeed
	if seed == 0 {
		var b [8]byte
		_, _ = crand.Read(b[:])
		seed = int64(binary.LittleEndian.Uint64(b[:]))
	}
	n.rand = rand.New(rand.NewPCG(uint64(seed), 0x6b6f6d6d616e6465))
	// Entry IDs carry an incarnation of their own, random and never derived from RandSeed:
	// a node restarted with the same seed must not hand out the IDs of its previous life,
	// or an entry of that life could be taken for a new proposal's (S35).
	var inc [8]byte
	if _, err := crand.Read(inc[:]); err != nil {
		return nil, fmt.Errorf("kommander: node %s: read a random entry ID incarnation: %w", cfg.NodeID, err)
	}
	n.idSeq.Store(newIDIncarnation(binary.LittleEndian.Uint64(inc[:])))
	ok := false
	defer func() {
		if !ok {
			n.closeStorage()
		}
	}()
	if n.storage == nil {
		s, err := openDefaultStorage(cfg) // the WAL locks DataDir
		if err != nil {
			return nil, fmt.Errorf("kommander: node %s: open storage in %s: %w", cfg.NodeID, cfg.DataDir, err)
		}
		n.storage, n.ownsStore = s, true
	} else if w, isWAL := cfg.Storage.(*WAL); cfg.DataDir != "" && !(isWAL && filepath.Clean(w.dir) == filepath.Clean(cfg.DataDir)) {
		// A WAL in DataDir holds the lock already.
		l, err := lockDir(cfg.DataDir)
		if err != nil {
			return nil, fmt.Errorf("kommander: node %s: %w", cfg.NodeID, err)
		}
		n.dirLock = l
	}
	peers, err := n.initialPeers()
	if err != nil {
		return nil, err
	}
	n.disc.rlog = newRateLog(n.log, cfg.Clock, transportLogInterval)
	n.disc.changed = make(chan struct{}, 1)
	if _, static := cfg.Discovery.(staticDiscovery); !static && !cfg.DisableAutoJoin {
		n.addDiscovered = n.autoJoinAdd
	}
	// A node that has yet to bootstrap builds its partitions with no voters; they stay
	// idle (bootPass) until the cluster forms, and formCluster rebuilds them.
	var voters []string
	if n.boot == nil || n.boot.formed() {
		voters = voterIDs(cfg.NodeID, peers)
		if err := validateFactor(cfg.ReplicationFactor, voters); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
		}
	}
	snapStore, err := snapshotStoreFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kommander: node %s: %w", cfg.NodeID, err)
	}
	n.snaps.init(cfg, snapStore)
	n.in.init()
	switch {
	case n.boot == nil || n.boot.formed():
		var inc uint64
		if n.boot != nil {
			inc = n.boot.st.Incarnation
		}
		if err := n.setMembers(peers, voters, inc); err != nil {
			return nil, err
		}
	case n.boot.joining():
		n.cfg.Join = true
		if err := n.setMembers(n.boot.st.joinPeers(), nil, n.boot.st.Incarnation); err != nil {
			return nil, err
		}
	default:
		n.inc.init(cfg.NodeID, "", clusterIdentity{}, false, voters, n.elTicks)
		n.addrs = map[string]string{}
		n.initBook(nil)
		n.out = newOutbox(cfg.NodeID, voters, &n.metrics)
	}
	n.persist.init(n.storage)
	n.fwd = forwarder{self: cfg.NodeID, out: &n.out, metrics: &n.metrics, log: n.log, newIDs: n.nextIDs, wake: n.in.markProposed}
	pl := newPlacement(voters, cfg.Partitions, cfg.ReplicationFactor)
	n.place.Store(&pl)
	n.slots = make([]atomic.Pointer[partition], cfg.Partitions)
	for i := 0; i < cfg.Partitions; i++ {
		if host, err := n.hostsAtStart(uint32(i)); err != nil || !host {
			if err != nil {
				return nil, err
			}
			continue
		}
		p, err := n.newPartition(uint32(i), partitionVoters(cfg, pl.voters(i)))
		if err != nil {
			return nil, err
		}
		n.initMembers(p)
		if !p.raft.membership().isMember(cfg.NodeID) {
			continue // removed, or never added yet (node_hosting.go)
		}
		n.host(p)
		n.planFirstCampaign(p)
	}
	n.followMembers()
	n.proxy.init(n)
	n.apply.init(n)
	n.transfers.init(n)
	n.leaders.init()
	n.initActive()
	n.publishAll()
	ok = true
	return n, nil
}

// newPartition restores one partition's Raft group from storage.
func (n *Node) newPartition(id uint32, voters []string) (*partition, error) {
	hs, err := n.storage.HardState(id)
	if err != nil {
		return nil, fmt.Errorf("kommander: node %s: partition %d: read hard state: %w", n.cfg.NodeID, id, err)
	}
	log := partitionLog{s: n.storage, partition: id}
	// The state machine may have applied more than the stored commit index says (commit
	// is saved lazily), never more than the log holds; what it applied was committed.
	applied, err := n.restoreSnapshot(id, n.cfg.StateMachine.Applied(int(id)))
	if err != nil {
		return nil, err
	}
	first, last := log.firstIndex(), log.lastIndex()
	if applied > last {
		return nil, fmt.Errorf("kommander: node %s: partition %d: the state machine applied index %d but the log ends at %d", n.cfg.NodeID, id, applied, last)
	}
	if applied < first-1 {
		return nil, fmt.Errorf("kommander: node %s: partition %d: the state machine applied index %d but the log starts at %d (a snapshot is needed)", n.cfg.NodeID, id, applied, first)
	}
	if hs.Commit < applied {
		hs.Commit = applied
	}
	appliedTerm, err := log.term(applied)
	if err != nil {
		return nil, fmt.Errorf("kommander: node %s: partition %d: term of the applied index %d: %w", n.cfg.NodeID, id, applied, err)
	}
	n.snaps.initAppliedTerm(id, appliedTerm)
	conf := n.snaps.startConf(id, membership{Voters: voters})
	r, err := newRaft(raftConfig{
		id:               n.cfg.NodeID,
		partition:        id,
		voters:           conf.Voters,
		learners:         conf.Learners,
		maxLearnerLag:    uint64(n.cfg.MaxLearnerLag),
		electionTicks:    n.elTicks,
		heartbeatTicks:   n.hbTicks,
		storage:          log,
		hardState:        hs,
		applied:          applied,
		rand:             rand.New(rand.NewPCG(n.rand.Uint64(), uint64(id))),
		maxMsgBytes:      uint64(n.cfg.MaxMessageBytes),
		maxInflightMsgs:  n.cfg.MaxInflightMessages,
		maxInflightBytes: uint64(n.cfg.MaxInflightMessages) * uint64(n.cfg.MaxMessageBytes),
		checkQuorum:      true,
		preVote:          true,
		quiesce:          !n.cfg.DisableQuiescence,
	})
	if err != nil {
		return nil, fmt.Errorf("kommander: node %s: partition %d: %w", n.cfg.NodeID, id, err)
	}
	n.snaps.initConf(id, r.membershipAt(applied))
	return newPartition(id, r, hs, applied), nil
}

// Start connects the node to its peers and starts its loop and apply goroutines.
func (n *Node) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !n.state.CompareAndSwap(stateNew, stateRunning) {
		return fmt.Errorf("kommander: node %s: Start called twice or after Stop: %w", n.cfg.NodeID, ErrStopped)
	}
	t := n.cfg.CustomTransport
	if t == nil && len(n.out.peers) == 0 && n.cfg.Addr == "" {
		t = nullTransport{} // a single node with no address talks to no one
	}
	if t == nil {
		var err error
		if t, err = newNetworkTransport(n.cfg, func() any { return n.Status() }); err != nil {
			n.state.Store(stateStopped)
			n.markDone()
			return fmt.Errorf("kommander: node %s: transport: %w", n.cfg.NodeID, err)
		}
	}
	n.transport = t
	for _, id := range n.out.peers {
		if a := n.addrs[id]; a != "" {
			t.SetPeer(id, a)
		}
	}
	if err := t.Start(n.deliver); err != nil {
		n.state.Store(stateStopped)
		n.markDone()
		return fmt.Errorf("kommander: node %s: start transport: %w", n.cfg.NodeID, err)
	}
	if err := n.startDiscovery(ctx); err != nil {
		_ = t.Close()
		n.state.Store(stateStopped)
		n.markDone()
		return err
	}
	n.startLoops()
	return nil
}

// runLoops starts the persister, ticker, loop and apply goroutines. The ticker exists
// before Start returns, so that a test's next FakeClock.Advance reaches the loop.
func (n *Node) runLoops() {
	go n.persist.run()
	go n.runTicker(n.cfg.Clock.NewTicker(n.tick))
	go n.runLoop()
	go n.apply.run()
}

// Stop stops the node. First it hands the leadership of every partition it leads to
// another live voter (bounded by ctx and a few election timeouts), so that a planned
// restart costs the cluster no election. Then new proposals fail with ErrStopped, the loop ends, committed
// entries already handed to the apply goroutine are applied (unless ctx ends first), and
// the callers still waiting get ErrStopped (not proposed) or ErrTimeout (outcome
// unknown). It closes the transport and the storage it opened. Stop is idempotent.
//
// If ctx ends first, the callers are answered all the same and Stop returns ctx's error.
// Only a loop stuck in a Save keeps the transport and storage open then; a later Stop
// finishes the job.
func (n *Node) Stop(ctx context.Context) error {
	n.handOffLeadership(ctx)
	n.stop.mu.Lock()
	defer n.stop.mu.Unlock()
	if n.stop.done {
		return nil
	}
	return n.stopLocked(ctx)
}

// stopLocked is Stop under stop.mu.
func (n *Node) stopLocked(ctx context.Context) error {
	if !n.stop.begun {
		n.stop.begun = true
		prev := n.state.Swap(stateStopping)
		n.stop.waitLoop = prev == stateRunning
		if n.stop.waitLoop {
			close(n.stop.loop)
		}
	}
	if n.stop.waitLoop {
		select {
		case <-n.stop.loopDone:
		case <-ctx.Done():
			// The loop may still be inside a Save: storage stays open. No caller
			// waits for it, though (S26's rule: every caller gets an answer).
			n.failAll(ErrStopped)
			return fmt.Errorf("kommander: node %s: stop: loop did not end: %w", n.cfg.NodeID, ctx.Err())
		}
		n.stop.waitLoop = false
		close(n.apply.stop)
		select {
		case <-n.apply.done:
		case <-ctx.Done():
			// Apply is stuck in the StateMachine; it uses neither the transport nor
			// the storage, so everything is closed all the same, and it ends on its own.
			err := fmt.Errorf("kommander: node %s: stop: apply did not end: %w", n.cfg.NodeID, ctx.Err())
			return errors.Join(err, n.closeAll())
		}
	}
	return n.closeAll()
}

// closeAll answers every caller still waiting and closes the transport and the storage the
// node opened: the end of stop, once the loop ended.
func (n *Node) closeAll() error {
	n.stop.done = true
	n.failAll(ErrStopped)
	n.snaps.writers.Wait() // they use the storage
	n.transfers.close()
	var errs []error
	if err := n.stopDiscovery(); err != nil {
		errs = append(errs, err)
	}
	if n.boot != nil && n.boot.rlog != nil {
		n.boot.rlog.close()
	}
	if n.transport != nil {
		if err := n.transport.Close(); err != nil {
			errs = append(errs, fmt.Errorf("kommander: node %s: close transport: %w", n.cfg.NodeID, err))
		}
	}
	if err := n.closeStorage(); err != nil {
		errs = append(errs, err)
	}
	n.state.Store(stateStopped)
	n.markDone()
	n.leaders.changed()
	return errors.Join(errs...)
}

// closeStorage closes the storage the node opened and releases the data directory's lock.
func (n *Node) closeStorage() error {
	var errs []error
	if n.ownsStore {
		if err := n.storage.Close(); err != nil {
			errs = append(errs, fmt.Errorf("kommander: node %s: close storage: %w", n.cfg.NodeID, err))
		}
		n.ownsStore = false
	}
	if err := n.dirLock.unlock(); err != nil {
		errs = append(errs, fmt.Errorf("kommander: node %s: unlock %s: %w", n.cfg.NodeID, n.cfg.DataDir, err))
	}
	return errors.Join(errs...)
}

// fail records a sticky failure: from now on the node accepts no writes and its loop
// stops driving Raft (S26).
func (n *Node) fail(err error) {
	if n.failed.CompareAndSwap(nil, &err) {
		n.log.Error("node failed; it accepts no more writes", "err", err)
		n.markDone()
	}
}

// markDone closes Done's channel, once.
func (n *Node) markDone() { n.doneOnce.Do(func() { close(n.done) }) }

// Done returns a channel that is closed when the node can no longer serve: it failed (a
// storage or state machine error; see Err) or Stop finished. A program that embeds a node
// should watch it, and on a failure stop and exit so that a supervisor restarts it: a
// failed node accepts no writes and never recovers by itself.
func (n *Node) Done() <-chan struct{} { return n.done }

// Err returns nil until Done is closed. Then it says why: for a failed node, an error that
// wraps ErrStopped and the storage or state machine error that stopped it; after Stop,
// ErrStopped.
func (n *Node) Err() error {
	if f := n.failed.Load(); f != nil {
		return fmt.Errorf("%w: %w", ErrStopped, *f)
	}
	if err := n.removedErr(); err != nil {
		return err
	}
	if n.state.Load() == stateStopped {
		return fmt.Errorf("kommander: node %s: %w", n.cfg.NodeID, ErrStopped)
	}
	return nil
}

// failStop is fail for a storage or state machine error (cause, described by err), and
// answers every caller still waiting: nothing of theirs can be applied any more.
func (n *Node) failStop(err, cause error) {
	n.fail(err)
	n.failAll(fmt.Errorf("%w: %w", ErrStopped, cause))
}

// failAll answers every proposal still waiting: queued ones were never proposed (cause),
// the others have an unknown outcome (ErrTimeout wrapping cause).
func (n *Node) failAll(cause error) {
	n.proxy.failAll(cause)
	for _, p := range n.hosted.load() {
		p.failAll(cause)
		p.mu.Lock()
		p.failReads(cause)
		p.mu.Unlock()
	}
}

// ID returns the node's ID.
func (n *Node) ID() string { return n.cfg.NodeID }

// Partitions returns the number of partitions of the cluster, hosted here or not.
func (n *Node) Partitions() int { return len(n.slots) }

// PartitionFor maps a key to a partition: FNV-1a (64-bit) of the key, modulo the number
// of partitions. The mapping is stable across versions and platforms; it is part of the
// on-disk contract of applications that route keys by it.
func (n *Node) PartitionFor(key []byte) int { return KeyPartition(key, len(n.slots)) }

// KeyPartition maps key to one of partitions partitions the way Node.PartitionFor does.
func KeyPartition(key []byte, partitions int) int {
	if partitions <= 1 {
		return 0
	}
	h := fnv.New64a()
	_, _ = h.Write(key)
	return int(h.Sum64() % uint64(partitions))
}

// partition returns the replica of partition i; the error wraps ErrNoPartition when i is
// out of range, ErrNotHosted when this node hosts no replica of it.
func (n *Node) partition(i int) (*partition, error) {
	if i < 0 || i >= len(n.slots) {
		return nil, fmt.Errorf("%w: %d (the node has %d)", ErrNoPartition, i, len(n.slots))
	}
	if p := n.slots[i].Load(); p != nil {
		return p, nil
	}
	return nil, fmt.Errorf("kommander: node %s: partition %d: %w", n.cfg.NodeID, i, ErrNotHosted)
}

// nullTransport is the transport of a single-node cluster without an address.
type nullTransport struct{}

func (nullTransport) Start(func([]Message)) error { return nil }
func (nullTransport) SetPeer(string, string)      {}
func (nullTransport) RemovePeer(string)           {}
func (nullTransport) Send(string, []Message)      {}
func (nullTransport) Close() error                { return nil }
