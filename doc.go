// Package kommander is a Raft consensus library: a program embeds it to keep a replicated,
// durable log, and so a replicated state machine, across a cluster of nodes.
//
// The log is split into many independent Raft groups called partitions, so that one node
// leads some partitions and follows others. All partitions of a node share one write-ahead
// log, one fsync per batch and one network connection per peer, which is where throughput
// comes from.
//
// The layers, from the bottom:
//
//   - raft.go: one Raft group as a pure, deterministic state machine (no goroutines, clock
//     or I/O); time is ticks and every effect is data handed out in a ready batch.
//   - wal.go: the segmented, checksummed, group-committed log shared by all partitions.
//   - node.go and partition.go: the public API and the loop that turns Readies into I/O.
//   - codec.go, tcp_transport.go, http_transport.go: one binary encoding, two transports.
//
// Tests (ours and our users') run whole clusters in one process with a fake clock and an
// in-memory network that can drop, delay, duplicate and partition traffic.
package kommander
