// Package kommander is a Raft consensus library: a program embeds it to keep a replicated,
// durable log, and so a replicated state machine, across a cluster of nodes.
//
// The log is split into many independent Raft groups called partitions, so that one node
// leads some partitions and follows others. All partitions of a node share one write-ahead
// log, one fsync per batch and one network connection per peer, which is where throughput
// comes from.
//
// # Using it
//
// The application implements StateMachine, fills a Config and calls NewNode, Node.Start,
// Node.Replicate and Node.Stop. Example, in example_test.go, is the place to start: it
// runs three nodes in one process on a MemoryNetwork with a FakeClock, writes through a
// partition's leader and reads the value back, and it runs with the tests.
// ExampleMemoryNetwork shows a failover the same way: that is how an application tests
// itself without sleeping.
//
// Replicate returns once the entry is committed and applied on this node, with its index,
// its term and the value Apply gave it. The one rule for its errors: errors.Is(err,
// ErrTimeout) means the outcome is unknown (the entry may still be applied); any other
// error means the entry was not, and never will be, applied.
//
// A read that must see every acknowledged write calls ReadBarrier and then reads the local
// state machine: the leader confirms with one round of heartbeats that it still leads
// (ReadIndex), a follower asks the leader for that index, and the call returns once this
// node has applied up to it; nothing is written to the log. ReadBarrierLease (with
// Config.LeaseReads) lets the leader skip the round while its lease holds, at the price of
// a clock-drift assumption. Reading the state machine without either is fast but may be
// stale.
//
// The members can change while the cluster runs, one node at a time through the log:
// AddNode adds a node (a learner first, promoted to voter once it caught up), RemoveNode
// removes one, on any member (a node that does not lead a partition forwards the change to
// its leader). A node started with Config.Join waits to be added. TransferLeadership hands
// a partition's leadership over; Stop does so for every partition first, and a leader
// balancer spreads the leaderships over the live nodes.
//
// A node whose storage fails a write, an fsync or a read, or whose Apply returns an error,
// fails: it stops accepting writes (ErrStopped), answers every caller still waiting, and
// Status says why. It never reports a write it could not make durable as a success. Bytes
// in the WAL that a crash cannot explain are ErrCorrupt, with the file and offset; a torn
// tail, which no caller was acknowledged for, is cut off when the WAL opens. Status and
// Metrics show each partition's role, term, leader, commit and applied index, and the
// node's counters.
//
// # Partitions on a subset of the nodes
//
// By default every node hosts every partition. Config.ReplicationFactor places each
// partition on that many nodes instead (9 nodes, 64 partitions, 3 replicas each, say), so
// that a cluster grows past one machine's disk and CPU. The placement is computed from
// the sorted member IDs: every node hosts within one of its fair share of replicas, and is
// the first leader of within one of its fair share of partitions (it campaigns first).
// A node that hosts no replica of a partition still serves it: Replicate, ReplicateBatch,
// ReadBarrier, Leader and WaitForLeader ask a node that hosts one. A replica moves by
// adding the new one and then removing the old one, through the log; a node creates the
// replica when the partition's leader starts replicating to it.
//
// # Layers
//
// From the bottom up:
//
//   - The Raft core: one Raft group as a pure, deterministic state machine. It has no
//     goroutines, no clock and no I/O: time is ticks, and every effect (entries and hard
//     state to save, messages to send, entries to apply) is data it hands out in a ready
//     batch and is told about when done.
//   - The partition: one Raft group as the node hosts it, with its queue of proposals, the
//     callers waiting for their entries and the committed entries waiting to be applied.
//   - The node loop: one goroutine per node that drives every partition. Each pass feeds
//     the groups what arrived (messages, ticks, proposals), gathers their ready batches and
//     turns them into one storage write for all of them and one send per peer before that
//     write (at most one more after it). An apply goroutine beside the loop calls the
//     StateMachine, so a slow Apply never stops heartbeats or votes. An idle partition
//     quiesces: it stops its heartbeats and election timers, and the loop skips it until
//     a write, a read or a message wakes it; the nodes watch each other instead, with one
//     message per peer per heartbeat interval, and fail over the partitions of a silent
//     node.
//   - The WAL and the transports: one segmented, checksummed log per node with group
//     commit (any Storage can take its place), and one binary encoding carried by TCP, by
//     HTTP, or, in tests, by the in-memory network.
//
// # A write, step by step
//
//  1. Replicate puts the proposal on its partition's queue and wakes the node loop.
//  2. In its next pass the loop hands the queue to the partition's Raft group. On the
//     leader the entries join its log; a follower sends them to the leader in a MsgForward
//     message (unless Config.DisableForwarding), and the leader proposes them.
//  3. The pass collects the ready batch of every partition with work. The leader's appends
//     to its followers go out at once, before its own fsync; then one Storage.Save writes
//     the entries and hard states of all partitions with a single fsync.
//  4. A follower saves the appended entries the same way and acknowledges them only once
//     they are durable. The leader counts its own copy only after its own fsync.
//  5. An entry of the leader's term held by a majority is committed, and with it every
//     entry before it; the commit index reaches the followers with the leader's next
//     message to them.
//  6. The loop hands committed entries that are durable on this node to the apply
//     goroutine, which calls StateMachine.Apply in log order, partition by partition.
//  7. The caller's Replicate returns with the entry's index, term and result.
//
// # Files
//
// One concept per file; doc_test.go keeps this map and the files in step.
//
//	doc.go                this overview
//	node.go               Node, NewNode, Start, Stop, the public types, shutdown
//	errors.go             the errors a caller acts on, and NotLeaderError
//	node_propose.go       Replicate, ReplicateBatch: admitting and queueing proposals,
//	                      handing them to Raft, expiring their waits
//	node_read.go          ReadBarrier, ReadBarrierLease: reads waiting for their read index,
//	                      their retries, and their release once applied
//	node_forward.go       proposals forwarded between a follower and its partition's leader
//	node_hosting.go       which partitions a node hosts: its placement, its state, and replicas
//	                      a leader starts on it; the first voters' head start at bootstrap
//	node_proxy.go         the calls of a partition a node does not host, run by a node that
//	                      hosts it: the protocol, and the asking node's requests and retries
//	node_proxy_serve.go   the hosting node's side: each request taken once, run, answered
//	node_loop.go          the node loop and one pass of it
//	node_active.go        the partitions a pass visits: all but the quiesced ones with nothing
//	                      to do
//	node_yield.go         whether the loop yields before a Save, so that others add to it
//	node_inbox.go         what arrives for the loop between two passes, bounded
//	node_outbox.go        what a pass sends, gathered into one Send per peer
//	node_persist.go       the persister: one Storage.Save, one fsync, per pass
//	node_apply.go         the applier: the goroutine that calls StateMachine.Apply
//	node_status.go        the partitions' leaders and status for the public API
//	node_incarnation.go   one node ID on one data directory: a node that lost its data is refused
//	node_membership.go    AddNode, AddLearner, RemoveNode, Members: changes asked of any node,
//	                      forwarded to the leader, followed as they commit; removed nodes stop
//	node_transfer.go      TransferLeadership, and handing leadership off before Stop
//	node_balancer.go      the leader balancer: its policy and its rounds
//	node_addrbook.go      the address book: members' addresses, versioned, gossiped and kept
//	node_liveness.go      the node's watch of its peers, one message per peer per interval:
//	                      it wakes the quiesced partitions of a silent leader
//	node_snapshot.go      taking snapshots beside Apply, compacting behind them, installing
//	                      one from a leader, restoring the newest usable one at start
//	node_snapshot_transfer.go  sending and receiving snapshots chunk by chunk, checked
//	partition.go          one Raft group as the node hosts it: proposals, waiters, apply queue
//	config.go             Config and Peer, the defaults and Validate
//	placement.go          which nodes host each partition under a replication factor, with
//	                      replicas and first leaders spread evenly
//	node_discovery.go     the node's side of discovery: announcing, following moved members
//	bootstrap.go          BootstrapExpect: brand-new nodes agree on one set by durable
//	                      promises to a coordinator, and the node forms its cluster from it
//	discovery.go          the Discovery interface, StaticDiscovery, and what the registry and
//	                      multicast share: the table of announced nodes, watchers, a repeater
//	registry.go           RegistryServer: registrations with a TTL, ownership by incarnation,
//	                      gossip between registries
//	registry_protocol.go  the registry's HTTP protocol: paths, JSON bodies, limits, signatures
//	registry_client.go    RegistryDiscovery: registering, renewing, listing, deregistering
//	multicast.go          MulticastDiscovery: announcing on a UDP group, expiring silent nodes
//	multicast_format.go   the multicast datagram, byte by byte, its encoder and decoder
//	multicast_sockopt_unix.go     the multicast TTL, loopback and interface on Unix
//	multicast_sockopt_windows.go  the same on Windows
//	multicast_sockopt_other.go    elsewhere: only the defaults
//	metrics.go            Metrics and their publication through expvar
//	clock.go              Clock, the real clock and FakeClock
//
//	raft.go               the pure Raft state machine: step, tick, check-quorum, the rules for
//	                      all servers
//	raft_log.go           the in-memory log over stable storage
//	raft_progress.go      follower progress (probe, replicate) and the in-flight window
//	raft_tracker.go       who votes, and what the group tracks of each voter and learner
//	raft_config.go        membership through the log: single-server changes, learners, the
//	                      configuration in effect, its encoding
//	raft_transfer.go      leadership transfer: catch the target up, msgTimeoutNow, give up
//	raft_election.go      PreVote, elections, votes, becoming leader, the leader lease
//	raft_replication.go   appends, heartbeats, rejections and their hints, the commit rule
//	raft_quiesce.go       idle groups stop their timers; what quiesces and what wakes them
//	raft_read.go          linearizable reads without a log write: ReadIndex rounds, the
//	                      followers' requests, the leader's lease for reads
//	raft_ready.go         the ready batch handed to the node, and advance
//	raft_snapshot.go      a follower behind the compacted log gets a snapshot; installing one
//	raft_types.go         Entry, Message, HardState: what the core, WAL, codec and node share
//
//	storage.go            the Storage interface and Update, what one Save carries
//	wal.go                the WAL type, its options and its Storage methods
//	wal_format.go         the byte format of segments, frames and records, and the crash model
//	wal_recover.go        opening: replaying segments, cutting a torn tail, reporting corruption
//	wal_commit.go         group commit: many Saves, one write and one fsync
//	wal_segments.go       segment files, zeroes written ahead, freeing space
//	wal_index.go          the in-memory index of each partition and the entry cache
//	wal_fs.go             the files and file system the WAL uses, wrapped by tests
//	wal_sync_linux.go     fdatasync and directory fsync on Linux
//	wal_aio_linux.go      fdatasync through Linux AIO, waited for without holding a processor
//	wal_aio_stub_linux.go the plain fdatasync on Linux architectures without the AIO path
//	wal_sync_other.go     fsync (F_FULLFSYNC on macOS) and directory fsync elsewhere
//	wal_sync_windows.go   FlushFileBuffers on Windows, where a directory needs no fsync
//	dirlock.go            the lock that keeps a second process out of a data directory
//	dirlock_unix.go       the lock with flock on Unix
//	dirlock_windows.go    the lock with an exclusive open on Windows
//	dirlock_other.go      no lock where the platform offers none: left to the operator
//	identity.go           the cluster identity stored in a data directory and checked at start
//	memory_storage.go     MemoryStorage, for tests: survives the node, crashes, fails saves
//	memory_fs.go          an in-memory file system: for the memory snapshot store and fuzzers
//	snapshot.go           Snapshotter, and the byte format of a snapshot file
//	snapshot_store.go     SnapshotStore: snapshot files in a directory or in memory
//
//	codec.go              the one binary encoding of message batches on the wire
//	transport.go          the Transport interface, TransportKind, the one constructor
//	transport_config.go   TransportConfig, its defaults and checks, and the stats
//	transport_queue.go    per peer and lane a bounded send queue that never blocks, and backoff
//	transport_batch.go    cutting queued messages into batches, checking batches that arrive
//	transport_auth.go     the refused-peer errors, the shared-secret MAC, the instance ID
//	tcp_transport.go      TCP: a connection per peer and lane, pings, reconnects
//	tcp_handshake.go      the TCP handshake: cluster, node IDs, shared-secret proofs
//	tcp_direct.go         Send writing a batch to a plain connection itself when nothing waits
//	tcp_direct_unix.go    the non-blocking raw socket write it needs (Unix)
//	tcp_direct_other.go   elsewhere: every batch through the writer goroutine
//	http_transport.go     HTTP: the same batches as POSTs, Handler, the status page
//	http_auth.go          signing HTTP requests and checking them before they reach the node
//	http_client.go        the sending side: one keep-alive HTTP/1.1 connection per sender
//	ratelog.go            warnings an outsider can trigger, at most one line per interval
//	memory_transport.go   MemoryNetwork, for tests: cuts, partitions, loss, delay, duplicates
//
// Every failure scenario the library must survive has a tag that internal comments and
// test names cite; scenarios_test.go lists each one's rule and the tests that cover it.
package kommander
