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
	"sync"
	"sync/atomic"
	"time"
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
	// Partitions holds one status per partition, in partition order.
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
	clock     Clock
	sm        StateMachine
	storage   Storage
	ownsStore bool
	transport Transport
	parts     []*partition
	voters    []string
	peerIdx   map[string]int // voter ID -> position in voters
	addrs     map[string]string
	tick      time.Duration
	elTicks   int
	hbTicks   int
	rand      *rand.Rand
	idSeq     atomic.Uint64
	metrics   metrics

	state  atomic.Int32
	failed atomic.Pointer[error] // sticky failure: storage or state machine

	// inbox: what arrives between loop passes.
	inMu     sync.Mutex
	inbox    []Message
	spare    []Message
	ticks    int
	proposed bool // some partition has queued proposals
	wake     chan struct{}
	// A tick the ticker goroutine received and the loop has not taken yet; tickAck lets
	// the ticker goroutine receive the next one.
	tickPending atomic.Bool
	tickAck     chan struct{}

	// loop only.
	now     uint64 // ticks since start
	out     [][]Message
	updates []Update
	readies []partitionReady
	// proposeBuf is reused for the entries handed to Raft's propose.
	proposeBuf []Entry
	// The batch being persisted: its Readies and updates above, and the state of its Save.
	persisting      bool
	persistFinished bool
	persistSaved    bool // the batch needed a Save (not only commit indexes)
	persistErr      error
	tickedInSave    bool // a tick was taken while the running Save runs
	forwardedIDs    recentIDs
	saveEntries     uint64
	saveBytes       uint64
	persistReq      chan struct{} // to the persister goroutine; nil when driven by hand
	persistDone     chan error
	persistStop     chan struct{}

	applyWake    chan struct{}
	notifyMu     sync.Mutex
	notify       []LeaderChange
	leaderMu     sync.Mutex
	leaderCh     chan struct{} // closed and replaced whenever a leader changes
	stopLoop     chan struct{}
	loopDone     chan struct{}
	stopApply    chan struct{}
	applyDone    chan struct{}
	stopMu       sync.Mutex // one Stop at a time; guards the three flags below
	stopBegun    bool       // the loop (and later apply) were told to end
	stopLoops    bool       // the loop and apply goroutines run and must be waited for
	stopDone     bool       // Stop finished: everything closed
	applyMu      sync.Mutex // one applier at a time
	applySpare   []Entry
	applyResults []any
}

type partitionReady struct {
	p  *partition
	rd raftReady
}

// maxInbox bounds the received messages waiting for the loop; beyond it messages are
// dropped (Raft tolerates loss) rather than buffered without bound.
const maxInbox = 1 << 16

// NewNode checks cfg, opens storage and restores every partition's Raft state from it.
// It does not touch the network; Start does.
func NewNode(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	n := &Node{
		cfg:       cfg,
		log:       cfg.Logger.With("node", cfg.NodeID),
		clock:     cfg.Clock,
		sm:        cfg.StateMachine,
		storage:   cfg.Storage,
		wake:      make(chan struct{}, 1),
		applyWake: make(chan struct{}, 1),
		leaderCh:  make(chan struct{}),
		stopLoop:  make(chan struct{}),
		loopDone:  make(chan struct{}),
		stopApply: make(chan struct{}),
		applyDone: make(chan struct{}),
	}
	n.tick, n.elTicks, n.hbTicks = tickTimes(cfg)
	seed := cfg.RandSeed
	if seed == 0 {
		var b [8]byte
		_, _ = crand.Read(b[:])
		seed = int64(binary.LittleEndian.Uint64(b[:]))
	}
	n.rand = rand.New(rand.NewPCG(uint64(seed), 0x6b6f6d6d616e6465))
	n.idSeq.Store(n.rand.Uint64())
	if n.storage == nil {
		s, err := openDefaultStorage(cfg)
		if err != nil {
			return nil, fmt.Errorf("kommander: node %s: open storage in %s: %w", cfg.NodeID, cfg.DataDir, err)
		}
		n.storage, n.ownsStore = s, true
	}
	ok := false
	defer func() {
		if !ok && n.ownsStore {
			_ = n.storage.Close()
		}
	}()
	peers, err := cfg.Discovery.Peers(context.Background())
	if err != nil {
		return nil, fmt.Errorf("kommander: node %s: discover peers: %w", cfg.NodeID, err)
	}
	if err := validatePeers(cfg.NodeID, peers); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	n.voters = voterIDs(cfg.NodeID, peers)
	n.peerIdx = make(map[string]int, len(n.voters))
	for i, id := range n.voters {
		n.peerIdx[id] = i
	}
	n.addrs = make(map[string]string, len(peers))
	for _, p := range peers {
		addr := p.Addr
		if addr == "" {
			addr = p.ID
		}
		n.addrs[p.ID] = addr
	}
	n.out = make([][]Message, len(n.voters))
	for i := 0; i < cfg.Partitions; i++ {
		p, err := n.newPartition(uint32(i))
		if err != nil {
			return nil, err
		}
		n.parts = append(n.parts, p)
	}
	ok = true
	return n, nil
}

// newPartition restores one partition's Raft group from storage.
func (n *Node) newPartition(id uint32) (*partition, error) {
	hs, err := n.storage.HardState(id)
	if err != nil {
		return nil, fmt.Errorf("kommander: node %s: partition %d: read hard state: %w", n.cfg.NodeID, id, err)
	}
	log := partitionLog{s: n.storage, partition: id}
	// The state machine may have applied more than the stored commit index says (commit
	// is saved lazily), never more than the log holds; what it applied was committed.
	applied := n.sm.Applied(int(id))
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
	r, err := newRaft(raftConfig{
		id:               n.cfg.NodeID,
		partition:        id,
		voters:           n.voters,
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
	})
	if err != nil {
		return nil, fmt.Errorf("kommander: node %s: partition %d: %w", n.cfg.NodeID, id, err)
	}
	if h := n.cfg.testHooks; h != nil && h.maxUnstableBytes > 0 {
		r.maxUnstableBytes = h.maxUnstableBytes
	}
	p := &partition{id: id, raft: r, waiting: make(map[uint64]waiter), applied: applied, savedTerm: hs.Term, savedVote: hs.Vote, maxBacklog: maxApplyBacklog}
	if h := n.cfg.testHooks; h != nil && h.applyBacklog > 0 {
		p.maxBacklog = h.applyBacklog
	}
	n.publish(p)
	return p, nil
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
	if t == nil && len(n.voters) == 1 && n.cfg.Addr == "" {
		t = nullTransport{} // a single node with no address talks to no one
	}
	if t == nil {
		var err error
		if t, err = newNetworkTransport(n.cfg, func() any { return n.Status() }); err != nil {
			n.state.Store(stateStopped)
			return fmt.Errorf("kommander: node %s: transport: %w", n.cfg.NodeID, err)
		}
	}
	n.transport = t
	for _, id := range n.voters {
		if id != n.cfg.NodeID {
			t.SetPeer(id, n.addrs[id])
		}
	}
	if err := t.Start(n.deliver); err != nil {
		n.state.Store(stateStopped)
		return fmt.Errorf("kommander: node %s: start transport: %w", n.cfg.NodeID, err)
	}
	if n.cfg.testHooks != nil && n.cfg.testHooks.manual {
		return nil
	}
	// The ticker exists before Start returns, so that a test's next FakeClock.Advance
	// reaches the loop.
	n.persistReq, n.persistDone, n.persistStop = make(chan struct{}), make(chan error, 1), make(chan struct{})
	go n.runPersister()
	ticker := n.clock.NewTicker(n.tick)
	n.tickAck = make(chan struct{}, 1)
	go n.runTicker(ticker)
	go n.runLoop()
	go n.runApply()
	return nil
}

// Stop stops the node: new proposals fail with ErrStopped, the loop ends, committed
// entries already handed to the apply goroutine are applied (unless ctx ends first), and
// the callers still waiting get ErrStopped (not proposed) or ErrTimeout (outcome
// unknown). It closes the transport and the storage it opened. Stop is idempotent.
//
// If ctx ends first, the callers are answered all the same and Stop returns ctx's error.
// Only a loop stuck in a Save keeps the transport and storage open then; a later Stop
// finishes the job.
func (n *Node) Stop(ctx context.Context) error {
	n.stopMu.Lock()
	defer n.stopMu.Unlock()
	if n.stopDone {
		return nil
	}
	return n.stop(ctx)
}

// stop is Stop under stopMu.
func (n *Node) stop(ctx context.Context) error {
	manual := n.cfg.testHooks != nil && n.cfg.testHooks.manual
	if !n.stopBegun {
		n.stopBegun = true
		prev := n.state.Swap(stateStopping)
		n.stopLoops = prev == stateRunning && !manual
		if n.stopLoops {
			close(n.stopLoop)
		} else if manual {
			n.applyPending()
		}
	}
	if n.stopLoops {
		select {
		case <-n.loopDone:
		case <-ctx.Done():
			// The loop may still be inside a Save: storage stays open. No caller
			// waits for it, though (S26's rule: every caller gets an answer).
			n.failAll(ErrStopped)
			return fmt.Errorf("kommander: node %s: stop: loop did not end: %w", n.cfg.NodeID, ctx.Err())
		}
		n.stopLoops = false
		close(n.stopApply)
		select {
		case <-n.applyDone:
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
	n.stopDone = true
	n.failAll(ErrStopped)
	var errs []error
	if n.transport != nil {
		if err := n.transport.Close(); err != nil {
			errs = append(errs, fmt.Errorf("kommander: node %s: close transport: %w", n.cfg.NodeID, err))
		}
	}
	if n.ownsStore {
		if err := n.storage.Close(); err != nil {
			errs = append(errs, fmt.Errorf("kommander: node %s: close storage: %w", n.cfg.NodeID, err))
		}
	}
	n.state.Store(stateStopped)
	n.leaderMu.Lock()
	close(n.leaderCh)
	n.leaderCh = make(chan struct{})
	n.leaderMu.Unlock()
	return errors.Join(errs...)
}

// failAll answers every proposal still waiting: queued ones were never proposed (cause),
// the others have an unknown outcome (ErrTimeout wrapping cause).
func (n *Node) failAll(cause error) {
	for _, p := range n.parts {
		p.mu.Lock()
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
		p.mu.Unlock()
	}
}

// ID returns the node's ID.
func (n *Node) ID() string { return n.cfg.NodeID }

// Partitions returns the number of partitions.
func (n *Node) Partitions() int { return len(n.parts) }

// PartitionFor maps a key to a partition: FNV-1a (64-bit) of the key, modulo the number
// of partitions. The mapping is stable across versions and platforms; it is part of the
// on-disk contract of applications that route keys by it.
func (n *Node) PartitionFor(key []byte) int { return KeyPartition(key, len(n.parts)) }

// KeyPartition maps key to one of partitions partitions the way Node.PartitionFor does.
func KeyPartition(key []byte, partitions int) int {
	if partitions <= 1 {
		return 0
	}
	h := fnv.New64a()
	_, _ = h.Write(key)
	return int(h.Sum64() % uint64(partitions))
}

func (n *Node) partition(i int) (*partition, error) {
	if i < 0 || i >= len(n.parts) {
		return nil, fmt.Errorf("%w: %d (the node has %d)", ErrNoPartition, i, len(n.parts))
	}
	return n.parts[i], nil
}

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

// barrierType is the reserved command type of ReadBarrier's entries; they are never
// handed to the StateMachine.
const barrierType = "kommander.barrier"

// ReadBarrier returns once every entry committed in the partition before the call is
// applied on this node: a read of the local state machine after it is linearizable. It
// costs one small log entry (forwarded to the leader like any proposal); errors are those
// of Replicate.
func (n *Node) ReadBarrier(ctx context.Context, partition int) error {
	_, err := n.replicate(ctx, partition, []Command{{Type: barrierType}})
	return err
}

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
	first := n.idSeq.Add(uint64(len(cmds))) - uint64(len(cmds)) + 1
	if first == 0 || first+uint64(len(cmds)) < first { // keep 0 meaning "no ID"
		first = n.idSeq.Add(uint64(len(cmds))) - uint64(len(cmds)) + 1
	}
	pr.firstID, pr.remaining, pr.done = first, len(cmds), make(chan struct{})
	if h := n.cfg.testHooks; h != nil && h.admitted != nil {
		h.admitted()
	}
	p.mu.Lock()
	// Again under mu: failAll (a failed Save, a Stop) answers what is queued under mu
	// after marking the node failed or stopping, so a proposal queued after it would
	// never be answered.
	if err := n.writable(); err != nil {
		p.mu.Unlock()
		return err
	}
	if pending := p.pending; pending+len(cmds) > n.cfg.MaxPendingProposals {
		p.mu.Unlock()
		n.metrics.rejected.Add(1)
		return fmt.Errorf("kommander: partition %d: %d entries pending: %w", partition, pending, ErrOverloaded)
	}
	if p.applyFull() {
		behind := len(p.applyQ)
		p.mu.Unlock()
		n.metrics.rejected.Add(1)
		return fmt.Errorf("kommander: partition %d: the state machine is %d entries behind: %w", partition, behind, ErrOverloaded)
	}
	p.pending += len(cmds)
	p.queue = append(p.queue, pr)
	p.mu.Unlock()
	n.metrics.proposals.Add(uint64(len(cmds)))
	n.inMu.Lock()
	n.proposed = true
	n.inMu.Unlock()
	n.signal()
	return nil
}

// writable returns nil when the node accepts proposals.
func (n *Node) writable() error {
	if f := n.failed.Load(); f != nil {
		return fmt.Errorf("kommander: node %s failed and accepts no writes: %w: %w", n.cfg.NodeID, ErrStopped, *f)
	}
	if s := n.state.Load(); s != stateRunning {
		if s == stateNew {
			return fmt.Errorf("kommander: node %s is not started: %w", n.cfg.NodeID, ErrStopped)
		}
		return fmt.Errorf("kommander: node %s: %w", n.cfg.NodeID, ErrStopped)
	}
	return nil
}

// Leader returns the node ID of the partition's leader as this node knows it, and whether
// one is known.
func (n *Node) Leader(partition int) (string, bool) {
	p, err := n.partition(partition)
	if err != nil {
		return "", false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status.Leader, p.status.Leader != ""
}

// IsLeader reports whether this node leads the partition.
func (n *Node) IsLeader(partition int) bool {
	l, ok := n.Leader(partition)
	return ok && l == n.cfg.NodeID
}

// WaitForLeader waits until the partition has a known leader and returns its node ID.
func (n *Node) WaitForLeader(ctx context.Context, partition int) (string, error) {
	if _, err := n.partition(partition); err != nil {
		return "", err
	}
	for {
		n.leaderMu.Lock()
		ch := n.leaderCh
		n.leaderMu.Unlock()
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

// Status returns the node's view of every partition.
func (n *Node) Status() Status {
	s := Status{NodeID: n.cfg.NodeID, Partitions: make([]PartitionStatus, len(n.parts))}
	for i, p := range n.parts {
		p.mu.Lock()
		s.Partitions[i] = p.status
		s.Partitions[i].Applied = p.applied
		s.Partitions[i].Pending = p.pending
		p.mu.Unlock()
	}
	if f := n.failed.Load(); f != nil {
		s.Err = (*f).Error()
	}
	return s
}

// fail records a sticky failure: from now on the node accepts no writes and its loop
// stops driving Raft (S26).
func (n *Node) fail(err error) {
	if n.failed.CompareAndSwap(nil, &err) {
		n.log.Error("node failed; it accepts no more writes", "err", err)
	}
}

// nullTransport is the transport of a single-node cluster without an address.
type nullTransport struct{}

func (nullTransport) Start(func([]Message)) error { return nil }
func (nullTransport) SetPeer(string, string)      {}
func (nullTransport) Send(string, []Message)      {}
func (nullTransport) Close() error                { return nil }

// signal wakes the loop.
func (n *Node) signal() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// deliver is the transport's callback: it queues a received batch for the loop.
func (n *Node) deliver(batch []Message) {
	n.inMu.Lock()
	if len(n.inbox)+len(batch) > maxInbox {
		n.inMu.Unlock()
		n.metrics.dropped.Add(uint64(len(batch)))
		return
	}
	n.inbox = append(n.inbox, batch...)
	n.inMu.Unlock()
	n.metrics.received.Add(uint64(len(batch)))
	n.signal()
}

// runLoop is the node's loop goroutine: it waits for messages, proposals and ticks, and
// runs passes while there is work, checking for ticks between passes so that a busy node
// still heartbeats.
func (n *Node) runLoop() {
	defer close(n.loopDone)
	defer func() {
		// Never leave a Save running behind Stop: storage is closed next.
		if n.persisting && !n.persistFinished {
			<-n.persistDone
		}
		close(n.persistStop)
	}()
	busy := false
	for {
		if busy {
			select {
			case <-n.stopLoop:
				return
			default:
			}
		} else {
			select {
			case <-n.stopLoop:
				return
			case <-n.wake:
			case err := <-n.persistDone:
				n.persistErr, n.persistFinished = err, true
			}
		}
		// While an fsync runs, one tick is taken and the next waits (the ticker goroutine
		// holds one, a time.Ticker one more): Raft time then moves with the disk, and a
		// FakeClock cannot run ahead of a slow Save. But never none: under steady load one
		// Save follows the next, and a loop that waited for a gap between them would never
		// tick, so an isolated leader would never notice it lost its quorum (S18).
		took := false
		inSave := n.persisting && !n.persistFinished
		if (!inSave || !n.tickedInSave) && n.tickPending.CompareAndSwap(true, false) {
			n.addTick()
			took = true
		}
		busy = n.runPass()
		if took {
			select {
			case n.tickAck <- struct{}{}:
			default:
			}
		}
	}
}

// runTicker is the goroutine that receives the ticker's ticks and hands them to the loop
// one at a time: the next is received only once the loop has taken and run the previous
// one. The loop thus never blocks on the timer channel itself, which costs the runtime a
// timer heap update and often a wake-up of the network poller each time.
func (n *Node) runTicker(ticker Ticker) {
	defer ticker.Stop()
	for {
		select {
		case <-n.stopLoop:
			return
		case <-ticker.C():
		}
		n.tickPending.Store(true)
		n.signal()
		select {
		case <-n.stopLoop:
			return
		case <-n.tickAck:
		}
	}
}

// addTick records that one tick of time passed; the next pass ticks every partition.
func (n *Node) addTick() {
	if n.persisting && !n.persistFinished {
		n.tickedInSave = true
	}
	n.inMu.Lock()
	n.ticks++
	n.inMu.Unlock()
}

// runApply is the apply goroutine.
func (n *Node) runApply() {
	defer close(n.applyDone)
	for {
		select {
		case <-n.applyWake:
			n.applyPending()
		case <-n.stopApply:
			n.applyPending()
			return
		}
	}
}

func (n *Node) signalApply() {
	select {
	case n.applyWake <- struct{}{}:
	default:
	}
}

// runPass is one turn of the loop. It feeds Raft what arrived (messages, ticks,
// proposals). If the previous batch's Save is still running, that is all: Raft takes
// input while a raftReady is outstanding, and what comes in forms the next batch. Otherwise
// it completes the previous batch (sends what had to wait for the fsync, advances Raft),
// gathers the raftReady of every partition with work, sends the leaders' appends, hands
// committed entries to the apply goroutine and starts one Storage.Save (one fsync) for all
// partitions' entries and hard states. It reports whether there was work, so that the
// caller runs it again at once; the caller also wakes when the Save returns.
//
// Driven by hand (testHooks.manual), the Save runs inside the pass, or, with
// deferPersist, when the test calls completePersist.
func (n *Node) runPass() bool {
	if n.failed.Load() != nil {
		return false
	}
	n.inMu.Lock()
	msgs := n.inbox
	n.inbox = n.spare[:0]
	ticks := n.ticks
	n.ticks = 0
	proposed := n.proposed
	n.proposed = false
	n.inMu.Unlock()

	for i := range msgs {
		m := &msgs[i]
		if int(m.Partition) >= len(n.parts) || m.To != n.cfg.NodeID {
			n.metrics.dropped.Add(1)
			continue
		}
		p := n.parts[m.Partition]
		if m.Type == MsgForwardRefused {
			n.refused(p, m)
			continue
		}
		if m.Type == MsgForward {
			if m.Entries = n.forwardedIDs.unseen(m.Entries); len(m.Entries) == 0 {
				n.metrics.dropped.Add(1) // a duplicate
				continue
			}
		}
		if len(m.Entries) > 0 && (m.Type == MsgAppend || m.Type == MsgForward) && p.backlogged() {
			// The state machine is far behind: take no more entries for now. The leader
			// resends unacknowledged appends; a forwarded proposal is refused.
			n.metrics.dropped.Add(1)
			if m.Type == MsgForward {
				n.refuse(p, m)
			}
			continue
		}
		if err := p.raft.step(*m); err != nil {
			if m.Type == MsgForward && errors.Is(err, errNotLeader) {
				n.reforward(p, m)
				continue
			}
			if m.Type == MsgForward {
				// Too much unsaved: Raft took none of it, and the follower's caller gets
				// a definite answer now instead of a timeout much later.
				n.refuse(p, m)
			}
			n.log.Debug("raft rejected a message", "partition", m.Partition, "type", m.Type, "from", m.From, "err", err)
		}
	}
	clear(msgs)
	n.spare = msgs[:0]
	for t := 0; t < ticks; t++ {
		n.now++
		for _, p := range n.parts {
			p.raft.tick()
		}
	}
	if proposed || ticks > 0 {
		for _, p := range n.parts {
			n.proposeQueued(p)
		}
	}
	if ticks > 0 {
		n.expireWaiters()
	}

	if n.persisting {
		if !n.persistFinished && !n.pollPersist() {
			// The fsync of the previous batch is still running: what arrived meanwhile
			// has been stepped into Raft and goes out with the next batch.
			n.flushOut() // forwarded proposals
			return false
		}
		n.finishPersist()
		if n.failed.Load() != nil {
			return false
		}
	}

	n.readies = n.readies[:0]
	for _, p := range n.parts {
		if p.raft.hasReady() {
			n.readies = append(n.readies, partitionReady{p: p, rd: p.raft.ready()})
		}
		if err := p.raft.readError(); err != nil {
			// S26: the log cannot be read back; nothing computed from it may go out.
			n.fail(fmt.Errorf("kommander: node %s: partition %d: %w", n.cfg.NodeID, p.id, err))
			n.failAll(fmt.Errorf("%w: %w", ErrStopped, err))
			return false
		}
	}
	if len(n.readies) == 0 {
		if ticks > 0 {
			n.publishAll()
		}
		return n.flushOut() // forwarded proposals
	}

	// A leader's appends go out before its own fsync: the followers' writes then overlap
	// with ours (thesis §10.2.1). The leader counts itself toward a quorum only after
	// advance, once its Save returned.
	for i := range n.readies {
		n.queueOut(n.readies[i].rd.Messages)
	}
	n.flushOut()

	// Committed entries are durable on this node already (Raft hands out only those), so
	// they go to the apply goroutine now, not after this pass's fsync.
	applyNeeded := false
	for i := range n.readies {
		r := &n.readies[i]
		if len(r.rd.CommittedEntries) > 0 {
			r.p.mu.Lock()
			r.p.applyQ = append(r.p.applyQ, r.rd.CommittedEntries...)
			for j := range r.rd.CommittedEntries {
				r.p.applyBytes += r.rd.CommittedEntries[j].size()
			}
			r.p.mu.Unlock()
			applyNeeded = true
		}
	}
	if applyNeeded {
		n.signalApply()
	}

	// One Save, one fsync, for every partition. A hard state whose only change is the
	// commit index does not need one of its own: the commit index need not be durable
	// for safety (a restarted node learns it again), so it rides along with the next save.
	n.updates = n.updates[:0]
	n.saveEntries, n.saveBytes = 0, 0
	needSave := false
	for i := range n.readies {
		r := &n.readies[i]
		if len(r.rd.Entries) == 0 && !r.rd.SaveHardState {
			continue
		}
		hs := r.rd.HardState
		if len(r.rd.Entries) > 0 || (r.rd.SaveHardState && (hs.Term != r.p.savedTerm || hs.Vote != r.p.savedVote)) {
			needSave = true
		}
		n.updates = append(n.updates, Update{
			Partition:     r.p.id,
			HardState:     hs,
			SaveHardState: r.rd.SaveHardState,
			Entries:       r.rd.Entries,
		})
		n.saveEntries += uint64(len(r.rd.Entries))
		for j := range r.rd.Entries {
			n.saveBytes += r.rd.Entries[j].size()
		}
	}
	n.persisting, n.persistFinished, n.persistSaved, n.persistErr = true, false, needSave, nil
	n.tickedInSave = false
	switch {
	case !needSave:
		n.persistFinished = true
		n.finishPersist()
	case n.persistReq != nil:
		// The fsync runs beside the loop: messages and proposals that arrive meanwhile
		// are stepped into Raft and form the next batch.
		n.persistReq <- struct{}{}
	case n.cfg.testHooks != nil && n.cfg.testHooks.deferPersist:
		// A simulation decides when the fsync completes (completePersist).
	default:
		n.completePersist()
		n.finishPersist()
	}
	return true
}

// completePersist runs the pending Save: in the persister goroutine, or in the caller for
// a node driven by hand.
func (n *Node) completePersist() {
	n.persistErr = n.storage.Save(n.updates)
	n.persistFinished = true
}

// pollPersist reports, without waiting, whether the running Save has returned.
func (n *Node) pollPersist() bool {
	if n.persistDone == nil {
		return n.persistFinished
	}
	select {
	case err := <-n.persistDone:
		n.persistErr, n.persistFinished = err, true
	default:
	}
	return n.persistFinished
}

// runPersister is the goroutine that performs the loop's Saves, one at a time.
func (n *Node) runPersister() {
	for {
		select {
		case <-n.persistReq:
			n.persistDone <- n.storage.Save(n.updates)
		case <-n.persistStop:
			return
		}
	}
}

// finishPersist completes a batch once its Save returned: it sends what had to wait for
// the fsync and acknowledges the Readies to Raft.
func (n *Node) finishPersist() {
	n.persisting, n.persistFinished = false, false
	if err := n.persistErr; err != nil {
		// S26: a failed fsync cannot be retried; nothing of this batch may be
		// acknowledged, and the node stops driving Raft.
		n.fail(fmt.Errorf("kommander: node %s: save %d entries: %w", n.cfg.NodeID, n.saveEntries, err))
		n.failAll(fmt.Errorf("%w: %w", ErrStopped, err))
		return
	}
	if n.persistSaved {
		n.metrics.fsyncs.Add(1)
		n.metrics.entriesSaved.Add(n.saveEntries)
		n.metrics.bytesSaved.Add(n.saveBytes)
		for i := range n.readies {
			r := &n.readies[i]
			if r.rd.SaveHardState {
				r.p.savedTerm, r.p.savedVote = r.rd.HardState.Term, r.rd.HardState.Vote
			}
		}
	}
	clear(n.updates)
	n.updates = n.updates[:0]
	for i := range n.readies {
		n.queueOut(n.readies[i].rd.MessagesAfterPersist)
	}
	n.flushOut()
	for i := range n.readies {
		r := &n.readies[i]
		r.p.raft.advance(r.rd)
		n.publish(r.p)
	}
	clear(n.readies)
	n.readies = n.readies[:0]
}

// queueOut sorts messages by destination peer.
func (n *Node) queueOut(msgs []Message) {
	for _, m := range msgs {
		i, ok := n.peerIdx[m.To]
		if !ok || m.To == n.cfg.NodeID {
			n.metrics.dropped.Add(1)
			continue
		}
		n.out[i] = append(n.out[i], m)
	}
}

// flushOut sends what queueOut gathered: one Send per peer, carrying the messages of all
// partitions. The transport may keep the slices, so each Send gets a fresh one.
func (n *Node) flushOut() (sent bool) {
	for i, msgs := range n.out {
		if len(msgs) == 0 {
			continue
		}
		n.metrics.sent.Add(uint64(len(msgs)))
		n.transport.Send(n.voters[i], msgs)
		n.out[i] = nil
		sent = true
	}
	return sent
}

// proposeQueued hands a partition's queued proposals to Raft when this node leads it, or
// forwards them to the leader.
func (n *Node) proposeQueued(p *partition) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queue) == 0 {
		return
	}
	st := p.raft.status()
	switch {
	case st.leader == n.cfg.NodeID && st.role == roleLeader:
		// Proposals go to Raft in chunks of about MaxMessageBytes (a proposal is never
		// split), so that one raftReady stays bounded however much was queued.
		for len(p.queue) > 0 {
			k, size := n.chunk(p.queue)
			// Raft copies the entries into its log: the buffer is the loop's to reuse.
			ents := n.proposeBuf[:0]
			for _, pr := range p.queue[:k] {
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
			idx := first
			for _, pr := range p.queue[:k] {
				pr.stage, pr.index, pr.term = stageLocal, idx, term
				idx += uint64(len(pr.cmds))
				n.await(p, pr)
				p.local = append(p.local, pr)
			}
			clear(p.queue[:k])
			p.queue = p.queue[k:]
		}
		p.queue = nil
	case st.leader == "":
		// Wait for an election; give up after a while with a definite error.
		for _, pr := range p.queue {
			if pr.deadline == 0 {
				pr.deadline = n.now + uint64(noLeaderTimeouts*n.elTicks)
			}
		}
	case n.cfg.DisableForwarding:
		for _, pr := range p.queue {
			p.pending -= len(pr.cmds)
			pr.finish(&NotLeaderError{Partition: int(p.id), Leader: st.leader, LeaderAddr: n.addrs[st.leader]})
		}
		p.queue = p.queue[:0]
	default:
		// One MsgForward per chunk of about MaxMessageBytes, so that no message exceeds
		// what the transport carries.
		for len(p.queue) > 0 {
			k, _ := n.chunk(p.queue)
			var ents []Entry
			for _, pr := range p.queue[:k] {
				ents = pr.appendEntries(ents)
				pr.stage, pr.leader = stageForwarded, st.leader
				n.await(p, pr)
				// The MsgForward or the leader's answer may be lost: bound the wait (S14).
				pr.deadline = n.now + uint64(noLeaderTimeouts*n.elTicks)
			}
			n.metrics.forwarded.Add(uint64(len(ents)))
			n.queueOut([]Message{{Type: MsgForward, Partition: p.id, From: n.cfg.NodeID, To: st.leader, Term: st.term, Entries: ents}})
			clear(p.queue[:k])
			p.queue = p.queue[k:]
		}
		p.queue = nil
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

// maxForwardHops bounds how often a forwarded proposal is passed on by nodes that are no
// longer (or not yet) the leader; the hop count travels in Message.Hops.
const maxForwardHops = 2

// reforward passes a forwarded proposal that reached a node which does not lead the
// partition on to the leader it knows. Raft refused the entries, so no log holds them and
// passing them on cannot apply them twice; without it, proposals forwarded just before a
// leader change would wait for their deadline.
func (n *Node) reforward(p *partition, m *Message) {
	st := p.raft.status()
	if st.leader == "" || st.leader == n.cfg.NodeID || st.leader == m.From || m.Hops >= maxForwardHops {
		n.metrics.dropped.Add(1)
		return
	}
	fwd := *m
	fwd.From, fwd.To, fwd.Term, fwd.Hops = n.cfg.NodeID, st.leader, st.term, m.Hops+1
	n.metrics.forwarded.Add(uint64(len(fwd.Entries)))
	n.queueOut([]Message{fwd})
}

// refuse tells the node that forwarded a proposal that this leader did not take it (its
// state machine is behind, or too much is unsaved): a MsgForwardRefused that carries only
// the entries' IDs.
func (n *Node) refuse(p *partition, m *Message) {
	ids := make([]Entry, len(m.Entries))
	for i := range m.Entries {
		ids[i] = Entry{Kind: EntryNormal, ID: m.Entries[i].ID}
	}
	n.queueOut([]Message{{Type: MsgForwardRefused, Partition: p.id, From: n.cfg.NodeID, To: m.From, Term: p.raft.status().term, Entries: ids}})
}

// refused answers the proposals a leader refused (see refuse) with ErrOverloaded: the
// leader appended none of their entries, so they will never be applied.
func (n *Node) refused(p *partition, m *Message) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range m.Entries {
		w, ok := p.waiting[m.Entries[i].ID]
		if !ok || w.p.stage != stageForwarded || w.p.leader != m.From {
			continue
		}
		p.forget(w.p)
		w.p.finish(fmt.Errorf("kommander: partition %d: the leader %s did not take the forwarded entry, which was not applied: %w", p.id, m.From, ErrOverloaded))
	}
}

// noLeaderTimeouts is how many election timeouts a proposal waits for a leader to be known
// before it fails with ErrNotLeader; graceTimeouts is how long a proposal whose leader lost
// its leadership waits to learn its fate before it fails with ErrTimeout.
const (
	noLeaderTimeouts = 10
	graceTimeouts    = 3
)

// await registers a proposal's entries as waiting to be applied. The caller holds mu.
func (n *Node) await(p *partition, pr *proposal) {
	pr.deadline = 0
	for i := range pr.cmds {
		p.waiting[pr.firstID+uint64(i)] = waiter{p: pr, i: i}
	}
}

// expireWaiters answers the proposals whose deadline passed.
func (n *Node) expireWaiters() {
	for _, p := range n.parts {
		p.mu.Lock()
		p.expire(n.now,
			func(pr *proposal) error {
				if pr.stage == stageForwarded {
					return fmt.Errorf("kommander: partition %d: %w: no outcome in time for the entry forwarded to %s", p.id, ErrTimeout, pr.leader)
				}
				return fmt.Errorf("kommander: partition %d: %w: the leader changed after the entry was proposed", p.id, ErrTimeout)
			},
			func(pr *proposal) error {
				return &NotLeaderError{Partition: int(p.id)}
			})
		p.mu.Unlock()
	}
}

// publish copies a partition's Raft status for the public API and notices leader changes.
// Loop only.
func (n *Node) publish(p *partition) {
	st := p.raft.status()
	role := st.role.String()
	if role == p.lastRole && st.leader == p.lastLeader && st.term == p.lastTerm {
		p.mu.Lock()
		p.status.Commit, p.status.LastIndex = st.commit, st.lastIndex
		p.mu.Unlock()
		return
	}
	leaderChanged := st.leader != p.lastLeader
	if role != p.lastRole && role == roleCandidate.String() {
		n.metrics.elections.Add(1)
	}
	wasLeader := p.lastRole == roleLeader.String()
	p.lastRole, p.lastLeader, p.lastTerm = role, st.leader, st.term
	p.mu.Lock()
	p.status = PartitionStatus{Partition: int(p.id), Role: role, Term: st.term, Leader: st.leader, Commit: st.commit, LastIndex: st.lastIndex}
	if leaderChanged || (wasLeader && role != roleLeader.String()) {
		// S18, S19: proposals that went through a leader that is no longer one get a
		// bounded time to be applied; after it they are answered as unknown.
		deadline := n.now + uint64(graceTimeouts*n.elTicks)
		for _, w := range p.waiting {
			pr := w.p
			if (pr.stage == stageLocal && st.leader != n.cfg.NodeID) || (pr.stage == stageForwarded && pr.leader != st.leader) {
				if pr.deadline == 0 || pr.deadline > deadline {
					pr.deadline = deadline
				}
			}
		}
	}
	p.mu.Unlock()
	if !leaderChanged {
		return
	}
	n.metrics.leaderChanges.Add(1)
	n.notifyMu.Lock()
	if n.cfg.OnLeaderChange != nil {
		n.notify = append(n.notify, LeaderChange{Partition: int(p.id), Leader: st.leader, Term: st.term, IsLocal: st.leader == n.cfg.NodeID})
	}
	n.notifyMu.Unlock()
	n.leaderMu.Lock()
	close(n.leaderCh)
	n.leaderCh = make(chan struct{})
	n.leaderMu.Unlock()
	if n.cfg.OnLeaderChange != nil {
		n.signalApply()
	}
}

func (n *Node) publishAll() {
	for _, p := range n.parts {
		n.publish(p)
	}
}

// applyPending applies every partition's committed entries, in log order, and answers
// the proposals they complete. It runs in the apply goroutine (or in a test's).
func (n *Node) applyPending() {
	n.applyMu.Lock()
	defer n.applyMu.Unlock()
	n.notifyMu.Lock()
	notes := n.notify
	n.notify = nil
	n.notifyMu.Unlock()
	for _, c := range notes {
		n.cfg.OnLeaderChange(c)
	}
	for _, p := range n.parts {
		for n.applyPartition(p) {
		}
	}
}

// maxApplyBatch bounds the entries handed to one Apply call.
const maxApplyBatch = 1024

// applyPartition applies up to maxApplyBatch committed entries of p and reports whether
// it applied any.
func (n *Node) applyPartition(p *partition) bool {
	if n.failed.Load() != nil {
		return false
	}
	p.mu.Lock()
	k := min(len(p.applyQ), maxApplyBatch)
	if k == 0 {
		p.mu.Unlock()
		return false
	}
	ents := append(n.applySpare[:0], p.applyQ[:k]...)
	for i := range ents {
		p.applyBytes -= ents[i].size()
	}
	clear(p.applyQ[:k])
	p.applyQ = p.applyQ[k:]
	if len(p.applyQ) == 0 {
		p.applyQ = nil
	}
	p.mu.Unlock()

	// The entries to apply are gathered in place at the front of ents (a copy of our
	// own); barriers, rare, apart.
	last := ents[len(ents)-1].Index
	normal := ents[:0]
	var barriers []Entry
	for i := range ents {
		e := ents[i]
		if e.Kind == EntryNormal && e.Index > p.applied {
			if e.Type == barrierType {
				barriers = append(barriers, e)
			} else {
				normal = append(normal, e)
			}
		}
	}
	if cap(n.applyResults) < len(normal) {
		n.applyResults = make([]any, len(normal))
	}
	results := n.applyResults[:len(normal)]
	if len(normal) > 0 {
		if err := n.sm.Apply(int(p.id), normal, results); err != nil {
			n.fail(fmt.Errorf("kommander: node %s: partition %d: apply entries %d..%d: %w", n.cfg.NodeID, p.id, normal[0].Index, normal[len(normal)-1].Index, err))
			n.failAll(fmt.Errorf("%w: %w", ErrStopped, err))
			return false
		}
	}
	n.metrics.applied.Add(uint64(len(normal)))
	p.mu.Lock()
	if last > p.applied {
		p.applied = last
	}
	// The barriers are matched before the sweep of p.local in resolveApplied, which
	// would take a barrier applied in this batch, not yet matched, for a lost entry.
	if len(barriers) > 0 {
		p.matchApplied(barriers, make([]any, len(barriers)))
	}
	p.resolveApplied(normal, results)
	p.mu.Unlock()
	clear(results)
	clear(ents)
	n.applySpare = ents[:0]
	return true
}
