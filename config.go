package kommander

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"
)

// Defaults of Config. Each is explained on the Config field it fills.
const (
	DefaultPartitions          = 1
	DefaultElectionTimeout     = time.Second
	DefaultHeartbeatInterval   = 100 * time.Millisecond
	DefaultMaxEntrySize        = 1 << 20
	DefaultMaxPendingProposals = 4096
	DefaultMaxMessageBytes     = 4 << 20
	DefaultMaxInflightMessages = 256
	DefaultSnapshotEntries     = 10000
	DefaultSnapshotBytes       = 16 << 20
	DefaultSnapshotTrailing    = 2000
	DefaultSnapshotTransfers   = 2
	DefaultMaxLearnerLag       = 1000
)

// Config configures a Node. The zero value of every field but NodeID and StateMachine is
// usable; NewNode fills defaults (see Validate for the rules a Config must meet).
type Config struct {
	// NodeID names this node in the cluster. Required. It must be unique and stable across
	// restarts: it is what votes are recorded against.
	NodeID string

	// Addr is where peers reach this node (host:port for TCP and HTTP). The transport
	// listens on it. Not used with CustomTransport.
	Addr string

	// DataDir is where the default Storage (the WAL) keeps its files. Required unless
	// Storage is set. The node locks it for as long as it runs (a second process that
	// points at it fails at once with ErrDirLocked), and keeps in it the cluster identity
	// it was first started with: ClusterName, NodeID, Partitions, the members of Peers and
	// ReplicationFactor. A later start with other values fails with ErrIdentityMismatch.
	// With a Storage of your own and no DataDir, neither check is made.
	DataDir string

	// Partitions is the number of independent Raft groups, numbered 0..Partitions-1.
	// Default 1. Every node of a cluster must use the same number; it cannot change later,
	// because PartitionFor maps keys by it.
	Partitions int

	// ReplicationFactor is how many nodes host each partition. Default 0: every member
	// hosts every partition. A factor of 1 to the number of members places each partition
	// on that many of them, chosen from the sorted member IDs so that every node hosts
	// within one of its fair share of replicas and is the first leader of within one of
	// its fair share of partitions: this is how a cluster grows past one machine's disk and
	// CPU. Every node must use the same factor; it is part of the cluster identity kept in
	// DataDir. A node that hosts no replica of a partition still serves it: Replicate,
	// ReplicateBatch, ReadBarrier, Leader and WaitForLeader ask a node that hosts one.
	ReplicationFactor int

	// Peers lists every voting member of the cluster, this node included, with the address
	// at which it is reached. A single-node cluster may leave it empty. It is shorthand for
	// Discovery: StaticDiscovery(Peers...).
	Peers []Peer

	// Discovery finds the members of the cluster when Peers is empty. Nil means
	// StaticDiscovery(Peers...). Any other Discovery needs BootstrapExpect, to form the
	// cluster the first time. The node announces itself through it from Start until Stop,
	// which closes it, and follows it: a member found at a new address is reached there.
	//
	// Trust: discovery says where nodes are, never who votes. A member's address changes
	// only on word of an authenticated discovery (RegistryOptions.Secret,
	// MulticastOptions.Secret, or a Discovery of your own, which the node trusts); an
	// unauthenticated one can neither move a member nor, as the registry and multicast
	// keep an ID to the incarnation that holds it, take a live member's ID over. Nodes it
	// finds still prove the transport's Secret (or TLS) when they connect.
	Discovery Discovery

	// BootstrapExpect, when set, makes a brand-new node form the cluster through
	// Discovery: it waits until it has discovered BootstrapExpect nodes (itself included)
	// and they agree, over the transport, on the same set; that set becomes the voters of
	// every partition. A node that formed (or whose DataDir holds a configuration) never
	// bootstraps again, and a new node that finds the cluster formed without it waits to
	// be added. It must be more than half of the nodes that may start together as new
	// nodes, or two groups could each form a cluster; three is usual. Needs DataDir, where
	// the node records its promise. Default 0: the members are Peers.
	BootstrapExpect int

	// DisableAutoJoin stops the leader of partition 0 from adding the nodes discovery
	// shows that are not members yet (as learners, promoted to voters once caught up).
	// Default off: with a Discovery other than a static one, nodes join by themselves.
	DisableAutoJoin bool

	// bootstrapStore, set by tests, replaces the bootstrap state file in DataDir.
	bootstrapStore bootstrapStore

	// StateMachine receives committed entries. Required.
	StateMachine StateMachine

	// Transport selects the network transport, TCP (default) or HTTP. It is ignored when
	// CustomTransport is set.
	Transport TransportKind

	// CustomTransport, when set, is used instead of a TCP or HTTP transport: for example
	// a MemoryNetwork's Transport in tests. The node closes it on Stop.
	CustomTransport Transport

	// ClusterName is checked in the transport handshake so that nodes of different clusters
	// never talk to each other by accident. Default "kommander".
	ClusterName string

	// Secret, when set, is a shared secret every node must prove it knows before its
	// messages are accepted (HMAC; the secret never crosses the wire).
	Secret []byte

	// TLS, when set, secures the transport; set ClientCAs and ClientAuth for mutual TLS.
	TLS *tls.Config

	// Storage keeps the logs and hard states. Nil means the WAL in DataDir. A Storage
	// passed here is not closed by Stop: it belongs to the caller.
	Storage Storage

	// UnsafeNoSync turns off fsync in the default WAL. Only for tests and benchmarks: a
	// crash then loses entries that were acknowledged.
	UnsafeNoSync bool

	// ElectionTimeout is the time a follower waits without hearing from a leader before it
	// starts an election; the actual timeout is randomized in [ElectionTimeout,
	// 2*ElectionTimeout) per node and per partition so that votes rarely split.
	// Default 1s: long enough to ride out GC pauses and slow fsyncs, short enough for
	// failover within a few seconds. Raft counts time in ticks of HeartbeatInterval or
	// ElectionTimeout/10, whichever is shorter; a node takes no ticks while its fsync runs.
	ElectionTimeout time.Duration

	// HeartbeatInterval is how often a leader with nothing to send tells its followers it
	// is alive. Default 100ms, a tenth of the default ElectionTimeout, so a follower
	// misses several heartbeats before it gives up on a leader. It must be below
	// ElectionTimeout, or followers time out between heartbeats.
	HeartbeatInterval time.Duration

	// Clock is the source of time. Nil means the real clock; tests pass a FakeClock.
	Clock Clock

	// Logger receives the node's logs. Nil means slog.Default().
	Logger *slog.Logger

	// MaxEntrySize is the largest entry (type plus data, in bytes) Replicate accepts;
	// larger ones fail with ErrTooLarge. Default 1 MiB.
	MaxEntrySize int

	// MaxPendingProposals bounds, per partition, the proposals that wait to be committed
	// and applied on this node; beyond it Replicate fails at once with ErrOverloaded
	// instead of queueing without bound. Default 4096.
	MaxPendingProposals int

	// MaxMessageBytes bounds the entries in one append or forwarded proposal, in bytes,
	// and so the size of a ReplicateBatch. Default 4 MiB (always at least MaxEntrySize
	// plus room for headers): large enough to batch well, small enough that one message
	// never holds up a connection for long.
	MaxMessageBytes int

	// MaxInflightMessages bounds the appends a leader has in flight to one follower, per
	// partition. Default 256.
	MaxInflightMessages int

	// SnapshotStore is where the node keeps its partitions' snapshots. Nil means the
	// directory "snapshots" in DataDir; a node with a custom Storage and no DataDir takes
	// and receives no snapshots unless it is given a store. Snapshots need a StateMachine
	// that implements Snapshotter; without one the node keeps its whole log.
	SnapshotStore *SnapshotStore

	// SnapshotEntries and SnapshotBytes make the node snapshot a partition once its log
	// holds that many entries, or that many bytes of them, applied since its last
	// snapshot. Defaults 10000 entries and 16 MiB. Node.Snapshot takes one on demand. A
	// partition whose log holds four times as much past its newest durable snapshot (its
	// snapshots take longer to write than the writes take to fill an interval) takes no
	// more entries until one completes: writes fail with ErrOverloaded, so that the disk
	// stays bounded.
	SnapshotEntries int
	SnapshotBytes   int64

	// SnapshotTrailingEntries is how many entries before a snapshot's index the log keeps
	// when it is compacted after the snapshot, so that a follower a little behind catches
	// up from the log rather than with the whole snapshot. Default 2000.
	SnapshotTrailingEntries int

	// MaxSnapshotTransfers bounds the snapshots this node sends at once, over all
	// partitions and peers; more wait their turn. Default 2.
	MaxSnapshotTransfers int

	// DisableForwarding makes Replicate on a follower fail with a *NotLeaderError naming
	// the leader, instead of forwarding the proposal to it (the default).
	DisableForwarding bool

	// DisableQuiescence keeps every partition's timers running while it is idle. Default
	// off: a partition with nothing to do stops its heartbeats and election timers after a
	// few heartbeat intervals, the nodes watch each other with one small message per peer
	// per HeartbeatInterval instead, and the first write, read or message wakes it.
	DisableQuiescence bool

	// LeaseReads allows ReadBarrierLease: while the leader's lease holds it serves reads
	// without a round of heartbeats. The lease lasts a confirmed heartbeat round's send
	// time plus the election timeout less 10% and three ticks, counted in the node's ticks;
	// it is safe only if no node's clock runs more than 10% slower than another's and a
	// node that restarts stays down for at least an election timeout (a restarted node
	// forgets that it heard from the leader and may vote at once). The node stops using
	// the lease while its ticks fall behind its clock. Default off: ReadBarrier needs
	// no timing assumption.
	LeaseReads bool

	// OnLeaderChange, when set, is called whenever this node learns of a new leader (or of
	// no leader) for a partition. It is called from the node's apply goroutine, in order,
	// and must not block for long.
	OnLeaderChange func(LeaderChange)

	// Join says that this node is new to a cluster that already runs: its partitions start
	// with no voters and wait for a leader to add it (Node.AddNode, called on any member),
	// and Peers is only the address book of the members it may hear from, not the cluster's
	// configuration. Leave it unset on the nodes that form a new cluster, and on a joined
	// node's later restarts it changes nothing: the configuration is in its log by then.
	Join bool

	// MaxLearnerLag is how many entries behind the leader's log a learner may be when
	// Node.AddNode promotes it to voter; until then the promotion waits, so that a new
	// voter does not stall commits while it catches up. Default 1000.
	MaxLearnerLag int

	// DisableLeaderBalancing turns off the leader balancer. By default a node that leads
	// more partitions than its share hands some, one at a time and at most one every few
	// election timeouts, to live, caught-up voters that lead fewer, until every live node
	// leads its share within one (after a restart, for example, the restarted node leads
	// nothing until it is handed its share).
	DisableLeaderBalancing bool

	// RandSeed seeds the node's randomized election timeouts (entry IDs never derive from
	// it, so a node restarted with the same seed never reuses one). 0 means a random seed. Set
	// it, with a FakeClock and a MemoryNetwork, for a reproducible test cluster.
	RandSeed int64
}

// Peer is a member of the cluster.
type Peer struct {
	// ID is the peer's NodeID.
	ID string
	// Addr is where the peer is reached.
	Addr string
}

// ParsePeers parses a comma-separated list of id=addr pairs, such as
// "n1=10.0.0.1:7000,n2=10.0.0.2:7000".
func ParsePeers(s string) ([]Peer, error) {
	var peers []Peer
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		id, addr, ok := strings.Cut(item, "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("kommander: peer %q is not id=addr", item)
		}
		peers = append(peers, Peer{ID: id, Addr: addr})
	}
	return peers, nil
}

// ErrInvalidConfig is returned (wrapped) by Validate and NewNode for a Config that cannot
// work.
var ErrInvalidConfig = errors.New("kommander: invalid config")

// setDefault is the one way this package fills a default: a zero value means "unset" and
// takes def. Validate rejects the values that are set but cannot work (negative sizes and
// durations), so a default never hides a mistake.
func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// withDefaults returns c with every unset field that has a default filled in.
func (c Config) withDefaults() Config {
	setDefault(&c.Partitions, DefaultPartitions)
	setDefault(&c.ElectionTimeout, DefaultElectionTimeout)
	setDefault(&c.HeartbeatInterval, DefaultHeartbeatInterval)
	setDefault(&c.Clock, RealClock())
	setDefault(&c.Logger, slog.Default())
	setDefault(&c.MaxEntrySize, DefaultMaxEntrySize)
	setDefault(&c.MaxPendingProposals, DefaultMaxPendingProposals)
	setDefault(&c.MaxMessageBytes, DefaultMaxMessageBytes)
	// A message must hold at least one largest entry and its headers.
	c.MaxMessageBytes = max(c.MaxMessageBytes, c.MaxEntrySize+4096)
	setDefault(&c.MaxInflightMessages, DefaultMaxInflightMessages)
	setDefault(&c.SnapshotEntries, DefaultSnapshotEntries)
	setDefault(&c.SnapshotBytes, DefaultSnapshotBytes)
	setDefault(&c.SnapshotTrailingEntries, DefaultSnapshotTrailing)
	setDefault(&c.MaxSnapshotTransfers, DefaultSnapshotTransfers)
	setDefault(&c.MaxLearnerLag, DefaultMaxLearnerLag)
	setDefault(&c.ClusterName, "kommander")
	setDefault(&c.Discovery, StaticDiscovery(c.Peers...))
	return c
}

// Validate reports whether c, with defaults filled in, can work. The error wraps
// ErrInvalidConfig and says which field is wrong and why.
func (c Config) Validate() error {
	c = c.withDefaults()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	switch {
	case c.NodeID == "":
		return bad("NodeID is empty")
	case c.StateMachine == nil:
		return bad("StateMachine is nil")
	case c.Partitions < 0 || c.Partitions > 1<<16:
		return bad("Partitions is %d; it must be in [1, 65536]", c.Partitions)
	case c.ReplicationFactor < 0:
		return bad("ReplicationFactor is %d; it must be 0 (every member) or at least 1", c.ReplicationFactor)
	case c.ElectionTimeout < 0 || c.HeartbeatInterval < 0:
		return bad("ElectionTimeout (%v) and HeartbeatInterval (%v) must be positive", c.ElectionTimeout, c.HeartbeatInterval)
	case c.HeartbeatInterval >= c.ElectionTimeout:
		// S8: with heartbeats no more frequent than the election timeout, followers time
		// out between heartbeats and elections never stop.
		return bad("HeartbeatInterval (%v) must be shorter than ElectionTimeout (%v), or followers time out between heartbeats; use about a tenth", c.HeartbeatInterval, c.ElectionTimeout)
	case c.ElectionTimeout < time.Millisecond:
		return bad("ElectionTimeout (%v) is below 1ms", c.ElectionTimeout)
	case c.Storage == nil && c.DataDir == "":
		return bad("DataDir is empty and no Storage is given")
	case c.MaxEntrySize < 0 || c.MaxPendingProposals < 0 || c.MaxMessageBytes < 0 || c.MaxInflightMessages < 0:
		return bad("limits must not be negative")
	case c.MaxLearnerLag < 0:
		return bad("MaxLearnerLag is %d; it must not be negative", c.MaxLearnerLag)
	case c.SnapshotEntries < 0 || c.SnapshotBytes < 0 || c.SnapshotTrailingEntries < 0 || c.MaxSnapshotTransfers < 0:
		return bad("snapshot settings must not be negative")
	case c.Transport != TCP && c.Transport != HTTP:
		return bad("Transport %d is unknown", int(c.Transport))
	case len(c.Secret) > 0 && len(c.Secret) < minSecretBytes:
		return bad("Secret has %d bytes; use at least %d", len(c.Secret), minSecretBytes)
	case c.CustomTransport == nil && c.Addr == "" && len(c.Peers) > 1:
		return bad("Addr is empty: peers need an address to reach this node")
	case c.BootstrapExpect < 0:
		return bad("BootstrapExpect must not be negative")
	}
	sp, static := c.Discovery.(staticDiscovery)
	switch {
	case static && c.BootstrapExpect > 0:
		return bad("BootstrapExpect needs a Discovery that finds nodes (registry or multicast); with Peers, the members are Peers")
	case !static && len(c.Peers) > 0:
		return bad("Peers and Discovery exclude each other; Peers is StaticDiscovery(Peers...)")
	case !static && c.BootstrapExpect == 0:
		return bad("a Discovery other than a static one needs BootstrapExpect, the number of nodes that form the cluster")
	case c.BootstrapExpect > 0 && c.DataDir == "" && c.bootstrapStore == nil:
		return bad("BootstrapExpect needs DataDir, where the node records its bootstrap promise")
	case c.BootstrapExpect > 0 && c.CustomTransport == nil && c.Addr == "":
		return bad("Addr is empty: nodes found through discovery need an address to reach this node")
	case c.BootstrapExpect > 0 && c.ReplicationFactor > c.BootstrapExpect:
		return bad("ReplicationFactor is %d but the cluster forms with BootstrapExpect %d nodes", c.ReplicationFactor, c.BootstrapExpect)
	}
	if static {
		if err := validatePeers(c.NodeID, sp); err != nil {
			return bad("%v", err)
		}
		if err := validateFactor(c.ReplicationFactor, voterIDs(c.NodeID, sp)); err != nil {
			return bad("%v", err)
		}
	}
	return nil
}

func validatePeers(self string, peers []Peer) error {
	if len(peers) == 0 {
		return nil
	}
	seen := make(map[string]bool)
	for _, p := range peers {
		if p.ID == "" {
			return fmt.Errorf("a peer has an empty ID")
		}
		if seen[p.ID] {
			return fmt.Errorf("peer %q is listed twice", p.ID)
		}
		seen[p.ID] = true
	}
	if !seen[self] {
		return fmt.Errorf("NodeID %q is not among the peers", self)
	}
	return nil
}

// validateFactor checks a replication factor against the bootstrap members.
func validateFactor(factor int, members []string) error {
	if factor > len(members) {
		return fmt.Errorf("ReplicationFactor is %d but the cluster has %d members", factor, len(members))
	}
	return nil
}

// voterIDs returns the sorted IDs of peers, or just self for a single-node cluster.
func voterIDs(self string, peers []Peer) []string {
	if len(peers) == 0 {
		return []string{self}
	}
	ids := make([]string, 0, len(peers))
	for _, p := range peers {
		ids = append(ids, p.ID)
	}
	sort.Strings(ids)
	return ids
}

// electionTicksPerTimeout is how many Raft ticks make up one ElectionTimeout. A tick is
// ElectionTimeout/electionTicksPerTimeout or HeartbeatInterval, whichever is shorter, so
// that both timers are whole numbers of ticks within 10%.
const electionTicksPerTimeout = 10

// tickTimes returns the tick interval and the election and heartbeat timeouts in ticks.
func tickTimes(c Config) (tick time.Duration, election, heartbeat int) {
	tick = c.ElectionTimeout / electionTicksPerTimeout
	if c.HeartbeatInterval < tick {
		tick = c.HeartbeatInterval
	}
	election = int(c.ElectionTimeout / tick)
	heartbeat = int(c.HeartbeatInterval / tick)
	if heartbeat < 1 {
		heartbeat = 1
	}
	if heartbeat >= election {
		heartbeat = election - 1
	}
	return tick, election, heartbeat
}

// openDefaultStorage opens the WAL in cfg.DataDir.
func openDefaultStorage(cfg Config) (Storage, error) {
	return OpenWAL(cfg.DataDir, WALOptions{UnsafeNoSync: cfg.UnsafeNoSync, Logger: cfg.Logger})
}
