package kommander

// This file holds the data types that the Raft core, the WAL, the codec and the node share.
// They are the contract between those parts: change a field here and every part that
// encodes or stores it must change with it.

// EntryKind says what a log entry is for.
type EntryKind uint8

const (
	// EntryNormal is an application command: it is handed to the StateMachine.
	EntryNormal EntryKind = iota
	// EntryNoop is the empty entry a new leader appends in its own term (Raft §5.4.2,
	// thesis §6.4); it is never shown to the StateMachine.
	EntryNoop
	// entryConfig carries a membership configuration; reserved for membership changes.
	entryConfig
)

// Entry is one record of a partition's replicated log.
type Entry struct {
	// Term is the leader's term when the entry was created.
	Term uint64
	// Index is the entry's position in the partition's log, starting at 1.
	Index uint64
	// Kind says whether the entry is an application command or internal to Raft.
	Kind EntryKind
	// ID is opaque to Raft. The node uses it to match a proposal forwarded from a follower
	// to the caller waiting for it; 0 means none.
	ID uint64
	// Type names the application command, like a method name ("SetValue").
	Type string
	// Data is the command's payload.
	Data []byte
}

// size is the number of bytes an entry counts for in byte budgets (message size limits,
// in-flight windows, storage reads). It approximates the encoded size.
func (e *Entry) size() uint64 {
	return uint64(8+8+1+8+2+4) + uint64(len(e.Type)) + uint64(len(e.Data))
}

// HardState is the part of a Raft group's state that must be on stable storage before the
// node answers any message that depends on it (Raft Figure 2, "persistent state").
type HardState struct {
	// Term is the latest term this node has seen.
	Term uint64
	// Vote is the node this node voted for in Term, or "" for none.
	Vote string
	// Commit is the highest log index known to be committed. Persisting it is not required
	// for safety; it lets a restarted node apply without waiting for a leader.
	Commit uint64
}

// IsZero reports whether h is the empty hard state of a group that never ran.
func (h HardState) IsZero() bool { return h.Term == 0 && h.Vote == "" && h.Commit == 0 }

// MessageType names a Raft message, after the paper.
type MessageType uint8

const (
	// MsgNone is the zero MessageType and is never sent.
	MsgNone MessageType = iota
	// MsgVote is RequestVote (Raft §5.2).
	MsgVote
	// MsgVoteResp answers MsgVote.
	MsgVoteResp
	// MsgPreVote asks whether the sender could win an election, without changing any
	// receiver's term (thesis §9.6).
	MsgPreVote
	// MsgPreVoteResp answers MsgPreVote.
	MsgPreVoteResp
	// MsgAppend is AppendEntries with entries (Raft §5.3).
	MsgAppend
	// MsgAppendResp answers MsgAppend.
	MsgAppendResp
	// MsgHeartbeat is an AppendEntries that carries no entries and only advances the
	// follower's commit index as far as its log is known to match.
	MsgHeartbeat
	// MsgHeartbeatResp answers MsgHeartbeat.
	MsgHeartbeatResp
	// msgTimeoutNow tells a follower to start an election at once (leadership transfer).
	msgTimeoutNow
	// msgSnapshot carries a snapshot (or a chunk of one) to a follower.
	msgSnapshot
	// MsgForward carries proposals from a node that does not lead the partition to the
	// one it believes leads it.
	MsgForward
	// MsgReadIndex asks the leader for a linearizable read index (thesis §6.4); Context
	// is the asker's request ID.
	MsgReadIndex
	// MsgReadIndexResp answers MsgReadIndex with the read index in Index and the request
	// ID in Context, or with Reject set when the receiver does not lead.
	MsgReadIndexResp
	// MsgForwardRefused tells the node that sent a MsgForward that the leader took none of
	// its entries (they will never be applied); its entries carry only their IDs.
	MsgForwardRefused
	// MsgHello announces the sender's incarnation (in Context): which data directory its
	// node ID runs on. It is the node's, never Raft's.
	MsgHello
	// MsgHelloResp answers MsgHello with the incarnation the receiver knows for the sender
	// (Context), and Reject set when that is not the one announced.
	MsgHelloResp
	// msgAddressBook carries address book records (node_addrbook.go): in each entry, Type
	// is a node ID, Data its address ("" for a removed member) and Index the record's
	// version. It is the node's, never Raft's.
	msgAddressBook
	// msgRemoved tells a node that the configuration removing it from a partition is
	// committed (Index is the configuration entry's, Term the leader's): it gets no more
	// appends to learn it from. It is the node's, never Raft's.
	msgRemoved
	// msgProxy asks a node that hosts a partition to run a call for a node that hosts none
	// of it; msgProxyResp answers it (node_proxy.go). They are the node's, never Raft's.
	msgProxy
	msgProxyResp
	// msgLiveness tells a peer that the sender's node is alive: one per peer per heartbeat
	// interval, for all partitions (node_liveness.go). It is the node's, never Raft's.
	msgLiveness
	// MsgBootstrap is a brand-new node's promise of a candidate set to the set's
	// coordinator (Context: the promise's epoch; one entry whose Data is the set; Term:
	// the sender's BootstrapExpect), or with Context 0 a question whether a cluster formed.
	// It is the node's (bootstrap.go), never Raft's.
	MsgBootstrap
	// MsgBootstrapResp is the coordinator's answer: the set formed (one entry with the
	// set), or with Reject the promise of epoch Context is released; Index 1 says the
	// sender knows that a cluster formed.
	MsgBootstrapResp

	msgTypeCount // keep last: the codec rejects types at or above it
)

var messageTypeNames = [...]string{
	MsgNone: "MsgNone", MsgVote: "MsgVote", MsgVoteResp: "MsgVoteResp",
	MsgPreVote: "MsgPreVote", MsgPreVoteResp: "MsgPreVoteResp",
	MsgAppend: "MsgAppend", MsgAppendResp: "MsgAppendResp",
	MsgHeartbeat: "MsgHeartbeat", MsgHeartbeatResp: "MsgHeartbeatResp",
	msgTimeoutNow: "MsgTimeoutNow", msgSnapshot: "MsgSnapshot", MsgForward: "MsgForward",
	MsgReadIndex: "MsgReadIndex", MsgReadIndexResp: "MsgReadIndexResp",
	MsgForwardRefused: "MsgForwardRefused", MsgHello: "MsgHello", MsgHelloResp: "MsgHelloResp",
	msgAddressBook: "MsgAddressBook", msgRemoved: "MsgRemoved",
	msgProxy: "MsgProxy", msgProxyResp: "MsgProxyResp",
	msgLiveness:  "MsgLiveness",
	MsgBootstrap: "MsgBootstrap", MsgBootstrapResp: "MsgBootstrapResp",
}

// String returns the message type's name, as in logs and test traces.
func (t MessageType) String() string {
	if int(t) < len(messageTypeNames) {
		return messageTypeNames[t]
	}
	return "MsgUnknown"
}

// Message is one Raft message of one partition. Field meanings follow the paper and
// depend on Type; fields a type does not use are zero.
type Message struct {
	// Type says which message this is.
	Type MessageType
	// Partition is the Raft group the message belongs to.
	Partition uint32
	// From and To are node IDs.
	From, To string
	// Term is the sender's current term.
	Term uint64
	// LogTerm is prevLogTerm on MsgAppend, lastLogTerm on MsgVote and MsgPreVote, and the
	// conflicting term on a rejecting MsgAppendResp.
	LogTerm uint64
	// Index is prevLogIndex on MsgAppend, lastLogIndex on MsgVote and MsgPreVote, on
	// MsgAppendResp the follower's match index (success) or the rejected prevLogIndex, and on
	// MsgHeartbeatResp the follower's last index, and on a MsgHeartbeat marked quiesce the
	// leader's last index.
	Index uint64
	// Entries are the entries of MsgAppend and MsgForward, and the refused entries' IDs on
	// MsgForwardRefused.
	Entries []Entry
	// Commit is the leader's commit index on MsgAppend and MsgHeartbeat.
	Commit uint64
	// Reject is set on a response that refuses the request; on MsgHeartbeatResp it says the
	// heartbeat's commit index was not taken, or that the follower could not follow a
	// heartbeat marked quiesce (the leader answers with an append).
	Reject bool
	// RejectHint is, on a rejecting MsgAppendResp, the first index of the conflicting term
	// in the follower's log (or its last index + 1 when the log is too short), so that the
	// leader skips back in one round trip.
	RejectHint uint64
	// Context is request data echoed in the response: on MsgAppend and MsgHeartbeat the
	// leader's number of the message to that follower, which MsgAppendResp and
	// MsgHeartbeatResp carry back, so that the leader tells a fresh answer from a stale one
	// and knows which reads the answer confirms; on MsgReadIndex and MsgReadIndexResp the
	// read request's ID; on MsgHello and MsgHelloResp an incarnation.
	Context uint64
	// snapshot carries snapshot metadata and data on msgSnapshot.
	snapshot *snapshotChunk
	// quiesce marks a leader's last heartbeat before its group quiesces (raft_quiesce.go).
	quiesce bool
	// commitOnly marks a MsgAppend without entries that only tells the follower the commit
	// index, at an index the leader knows it matched: a follower answers it only to reject.
	commitOnly bool
}

// snapshotChunk is a piece of a partition's snapshot in flight to a follower.
type snapshotChunk struct {
	// Index and Term are those of the last entry the snapshot covers.
	Index, Term uint64
	// Voters and Learners are the membership configuration as of Index.
	Voters, Learners []string
	// Offset is the position of Data within the whole snapshot.
	Offset uint64
	// Data is the chunk's bytes.
	Data []byte
	// Done is set on the last chunk.
	Done bool
	// Checksum is the CRC-32C of the whole snapshot, set on the last chunk.
	Checksum uint32
}

// membership returns the configuration the snapshot carries, sharing no slice with it.
func (s *snapshotChunk) membership() membership {
	return membership{Voters: s.Voters, Learners: s.Learners}.clone()
}
