package kommander

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// This file is the one binary encoding of Raft messages on the wire. Both the TCP and the
// HTTP transport carry the same batches; only the framing around them differs.
//
// A batch holds every message one node sends to one peer in one write, across all
// partitions. All integers are little-endian and fixed-width. Version 1, byte by byte:
//
//	batch:
//	  u8   version                      codecVersion (1); anything else is refused
//	  u16  len(from), from bytes        sender node ID, once per batch
//	  u16  len(to),   to bytes          receiver node ID, once per batch
//	  u32  message count
//	  message * count:
//	    u32  record length              bytes of the record that follows; a receiver that
//	                                    finds one record malformed skips exactly this many
//	                                    bytes and keeps the rest of the batch (S28)
//	    record:
//	      u8   type                     MessageType, MsgVote..MsgBootstrapResp
//	      u32  partition
//	      u64  term, logTerm, index, commit, rejectHint, context
//	      u8   flags                    bit 0: reject, bit 1: snapshot follows, bit 2: the
//	                                    snapshot lists learners (only with bit 1), bit 3:
//	                                    quiesce (the last heartbeat of an idle leader),
//	                                    bit 4: commit only (an append without entries that
//	                                    is answered only by a rejection); others 0
//	      u32  entry count
//	      entry * count:
//	        u64 term, u64 index, u8 kind, u64 id
//	        u16 len(type), type bytes
//	        u32 len(data), data bytes
//	      snapshot (when flag bit 1):
//	        u64 index, u64 term
//	        u16 voter count, voters * (u16 len, bytes)
//	        u16 learner count, learners * (u16 len, bytes)    (when flag bit 2)
//	        u64 offset
//	        u32 len(data), data bytes
//	        u8  done (0 or 1)
//	        u32 checksum
//
// The record must be consumed exactly: trailing bytes inside a record make it malformed.
// Every count and length is checked against both a configured limit and the bytes that
// remain before anything is allocated, so a hostile input can make the decoder allocate
// only in proportion to its own size. Changing anything above is a version bump, and the
// golden vectors in testdata/codec pin it.

// codecVersion is the version byte of every batch this code writes.
const codecVersion = 1

// Fixed sizes of the format, used for bounds checks before allocating.
const (
	batchHeaderFixed = 1 + 2 + 2 + 4                                                           // version, two string lengths, count
	recordFixed      = 1 + 4 + 6*8 + 1 + 4                                                     // a record without entries or snapshot
	entryFixed       = 8 + 8 + 1 + 8 + 2 + 4                                                   // an entry with empty type and data
	snapshotFixed    = 8 + 8 + 2 + 8 + 4 + 1 + 4                                               // a snapshot chunk without voters or data
	minRecordOnWire  = 4 + recordFixed                                                         // the length prefix plus the smallest record
	flagReject       = 1 << 0                                                                  // Message.Reject
	flagSnapshot     = 1 << 1                                                                  // Message.snapshot != nil
	flagLearners     = 1 << 2                                                                  // the snapshot has Learners
	flagQuiesce      = 1 << 3                                                                  // Message.quiesce
	flagCommitOnly   = 1 << 4                                                                  // Message.commitOnly
	knownFlags       = flagReject | flagSnapshot | flagLearners | flagQuiesce | flagCommitOnly // any other bit is malformed
	maxEncodedString = math.MaxUint16                                                          // a u16 length prefix
	maxEncodedCount  = math.MaxUint32                                                          // a u32 count or length prefix
	maxEntryKind     = uint8(entryConfig)                                                      // the last EntryKind the format knows
	maxVotersOnWire  = math.MaxUint16                                                          // a u16 count
	defaultMaxString = 1 << 10                                                                 // node IDs and entry types are short names
	defaultMaxMsgs   = 1 << 16                                                                 // messages per batch
	defaultMaxEnts   = 1 << 16                                                                 // entries per message
	defaultMaxVoters = 1 << 10                                                                 // voters in one snapshot's configuration
	defaultMaxBatch  = 64 << 20                                                                // bytes of one batch
)

// ErrMalformed is wrapped by every error that reports bytes from the network that do not
// decode: a truncated batch, a length beyond a limit, an unknown message type, trailing bytes.
var ErrMalformed = errors.New("kommander: malformed message batch")

// ErrVersion is wrapped by errors that report a peer speaking a protocol version this node
// does not understand (a batch's version byte or a handshake's).
var ErrVersion = errors.New("kommander: unsupported protocol version")

// errEncode is wrapped by appendBatch when a message cannot be represented on the wire.
var errEncode = errors.New("kommander: message cannot be encoded")

// codecLimits bounds what the decoder accepts. A zero field takes its default.
type codecLimits struct {
	maxBatchBytes int // bytes of one encoded batch
	maxMessages   int // messages in one batch
	maxEntries    int // entries in one message
	maxString     int // bytes of a node ID or an entry type
	maxVoters     int // voters in one snapshot chunk
}

// withDefaults returns l with every zero field set to its default.
func (l codecLimits) withDefaults() codecLimits {
	setDefault(&l.maxBatchBytes, defaultMaxBatch)
	setDefault(&l.maxMessages, defaultMaxMsgs)
	setDefault(&l.maxEntries, defaultMaxEnts)
	setDefault(&l.maxString, defaultMaxString)
	setDefault(&l.maxVoters, defaultMaxVoters)
	return l
}

// batchHeaderSize is the encoded size of a batch header for these node IDs.
func batchHeaderSize(from, to string) int { return batchHeaderFixed + len(from) + len(to) }

// encodedMessageSize is the number of bytes m adds to a batch, its length prefix included.
// Senders use it to split queued messages into frames below the receiver's limit.
func encodedMessageSize(m *Message) int {
	n := minRecordOnWire
	for i := range m.Entries {
		n += entryFixed + len(m.Entries[i].Type) + len(m.Entries[i].Data)
	}
	if s := m.snapshot; s != nil {
		n += snapshotFixed + len(s.Data)
		for _, v := range s.Voters {
			n += 2 + len(v)
		}
		if len(s.Learners) > 0 {
			n += 2
			for _, v := range s.Learners {
				n += 2 + len(v)
			}
		}
	}
	return n
}

// appendBatch appends the encoding of a batch from node from to node to, carrying msgs, to
// dst and returns the extended slice. Each message's own From and To are not written: the
// batch header carries them once, and the receiver sets them from it. It allocates nothing
// when dst has room for the whole batch. On error dst is returned unchanged in length.
func appendBatch(dst []byte, from, to string, msgs []Message) ([]byte, error) {
	start := len(dst)
	if len(from) > maxEncodedString || len(to) > maxEncodedString {
		return dst, fmt.Errorf("%w: node ID longer than %d bytes", errEncode, maxEncodedString)
	}
	if uint64(len(msgs)) > maxEncodedCount {
		return dst, fmt.Errorf("%w: %d messages in one batch", errEncode, len(msgs))
	}
	dst = append(dst, codecVersion)
	dst = appendString16(dst, from)
	dst = appendString16(dst, to)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(msgs)))
	for i := range msgs {
		var err error
		if dst, err = appendMessage(dst, &msgs[i]); err != nil {
			return dst[:start], fmt.Errorf("message %d of batch: %w", i, err)
		}
	}
	return dst, nil
}

// appendMessage appends one length-prefixed message record.
func appendMessage(dst []byte, m *Message) ([]byte, error) {
	if m.Type == MsgNone || m.Type >= msgTypeCount {
		return dst, fmt.Errorf("%w: message type %d", errEncode, m.Type)
	}
	if uint64(len(m.Entries)) > maxEncodedCount {
		return dst, fmt.Errorf("%w: %d entries", errEncode, len(m.Entries))
	}
	at := len(dst)
	dst = append(dst, 0, 0, 0, 0) // record length, filled in below
	dst = append(dst, byte(m.Type))
	dst = binary.LittleEndian.AppendUint32(dst, m.Partition)
	dst = binary.LittleEndian.AppendUint64(dst, m.Term)
	dst = binary.LittleEndian.AppendUint64(dst, m.LogTerm)
	dst = binary.LittleEndian.AppendUint64(dst, m.Index)
	dst = binary.LittleEndian.AppendUint64(dst, m.Commit)
	dst = binary.LittleEndian.AppendUint64(dst, m.RejectHint)
	dst = binary.LittleEndian.AppendUint64(dst, m.Context)
	var flags byte
	if m.Reject {
		flags |= flagReject
	}
	if m.snapshot != nil {
		flags |= flagSnapshot
		if len(m.snapshot.Learners) > 0 {
			flags |= flagLearners
		}
	}
	if m.quiesce {
		flags |= flagQuiesce
	}
	if m.commitOnly {
		flags |= flagCommitOnly
	}
	dst = append(dst, flags)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(m.Entries)))
	for i := range m.Entries {
		e := &m.Entries[i]
		if len(e.Type) > maxEncodedString || uint64(len(e.Data)) > maxEncodedCount {
			return dst[:at], fmt.Errorf("%w: entry %d: type or data too long", errEncode, e.Index)
		}
		if uint8(e.Kind) > maxEntryKind {
			return dst[:at], fmt.Errorf("%w: entry %d: kind %d", errEncode, e.Index, e.Kind)
		}
		dst = binary.LittleEndian.AppendUint64(dst, e.Term)
		dst = binary.LittleEndian.AppendUint64(dst, e.Index)
		dst = append(dst, byte(e.Kind))
		dst = binary.LittleEndian.AppendUint64(dst, e.ID)
		dst = appendString16(dst, e.Type)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(e.Data)))
		dst = append(dst, e.Data...)
	}
	if s := m.snapshot; s != nil {
		if len(s.Voters) > maxVotersOnWire || len(s.Learners) > maxVotersOnWire || uint64(len(s.Data)) > maxEncodedCount {
			return dst[:at], fmt.Errorf("%w: snapshot members or data too large", errEncode)
		}
		dst = binary.LittleEndian.AppendUint64(dst, s.Index)
		dst = binary.LittleEndian.AppendUint64(dst, s.Term)
		for i, ids := range [2][]string{s.Voters, s.Learners} {
			if i == 1 && len(ids) == 0 {
				break // no learners: flag bit 2 is clear
			}
			dst = binary.LittleEndian.AppendUint16(dst, uint16(len(ids)))
			for _, v := range ids {
				if len(v) > maxEncodedString {
					return dst[:at], fmt.Errorf("%w: member ID too long", errEncode)
				}
				dst = appendString16(dst, v)
			}
		}
		dst = binary.LittleEndian.AppendUint64(dst, s.Offset)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(s.Data)))
		dst = append(dst, s.Data...)
		var done byte
		if s.Done {
			done = 1
		}
		dst = append(dst, done)
		dst = binary.LittleEndian.AppendUint32(dst, s.Checksum)
	}
	n := len(dst) - at - 4
	if uint64(n) > maxEncodedCount {
		return dst[:at], fmt.Errorf("%w: record of %d bytes", errEncode, n)
	}
	binary.LittleEndian.PutUint32(dst[at:], uint32(n))
	return dst, nil
}

func appendString16(dst []byte, s string) []byte {
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(s)))
	return append(dst, s...)
}

// decodedBatch is what decodeBatch found in one batch.
type decodedBatch struct {
	from, to string
	// msgs are the well-formed messages, in order, with From and To set from the header.
	// Their byte slices alias the decoded buffer.
	msgs []Message
	// skipped counts records that were malformed and dropped; skipErr says why the first
	// one was. The rest of the batch is still delivered (S28).
	skipped int
	skipErr error
}

// decodeBatch decodes one batch. An error (wrapping ErrMalformed or ErrVersion) means the
// header is unusable and nothing was decoded; a malformed record inside an otherwise sound
// batch is skipped and reported in skipped/skipErr instead. The byte slices of the decoded
// messages alias b, so the caller must not reuse b while they live.
func decodeBatch(b []byte, lim codecLimits) (decodedBatch, error) {
	var out decodedBatch
	lim = lim.withDefaults()
	if len(b) > lim.maxBatchBytes {
		return out, fmt.Errorf("%w: batch of %d bytes exceeds the limit of %d", ErrMalformed, len(b), lim.maxBatchBytes)
	}
	if len(b) == 0 {
		return out, fmt.Errorf("%w: empty batch", ErrMalformed)
	}
	if b[0] != codecVersion {
		return out, fmt.Errorf("%w: batch version %d, this node speaks %d", ErrVersion, b[0], codecVersion)
	}
	d := decoder{b: b, off: 1, lim: &lim}
	out.from = d.string16("from ID length")
	out.to = d.string16("to ID length")
	count := d.count32("message count", lim.maxMessages, minRecordOnWire)
	if d.err != nil {
		return out, d.err
	}
	out.msgs = make([]Message, 0, count)
	d.slab = make([]Entry, countEntries(b[d.off:], count, &lim))
	for i := 0; i < count; i++ {
		n := d.count32("record length", math.MaxInt32, 1)
		if d.err != nil {
			// Without a trustworthy length the rest cannot be framed; keep what we have.
			return out, fmt.Errorf("message %d of %d: %w", i, count, d.err)
		}
		rec := decoder{b: b[d.off : d.off+n], lim: &lim, lastType: d.lastType, slab: d.slab}
		d.off += n
		m := rec.message()
		d.lastType, d.slab = rec.lastType, rec.slab
		if rec.err == nil && rec.off != len(rec.b) {
			rec.fail("%d trailing bytes in record", len(rec.b)-rec.off)
		}
		if rec.err != nil {
			if out.skipped == 0 {
				out.skipErr = fmt.Errorf("message %d of %d: %w", i, count, rec.err)
			}
			out.skipped++
			continue
		}
		m.From, m.To = out.from, out.to
		out.msgs = append(out.msgs, m)
	}
	if d.off != len(b) {
		return out, fmt.Errorf("%w: %d trailing bytes after %d messages", ErrMalformed, len(b)-d.off, count)
	}
	return out, nil
}

// countEntries returns how many entries the records in b claim, counting only claims that
// fit their record, so that decodeBatch allocates the entries of a whole batch at once
// instead of once per message, and never more than the input justifies.
func countEntries(b []byte, count int, lim *codecLimits) int {
	total := 0
	for i := 0; i < count && len(b) >= 4; i++ {
		n := int(binary.LittleEndian.Uint32(b))
		b = b[4:]
		if n > len(b) {
			break
		}
		if n >= recordFixed {
			c := int(binary.LittleEndian.Uint32(b[recordFixed-4:]))
			if c <= lim.maxEntries && c <= (n-recordFixed)/entryFixed {
				total += c
			}
		}
		b = b[n:]
	}
	return total
}

// decoder reads fixed-width fields from b. The first failure sticks in err, after which
// every read returns zero, so callers check err once after a group of reads.
type decoder struct {
	b        []byte
	off      int
	lim      *codecLimits
	err      error
	lastType string  // the previous entry's type, shared when equal (no allocation)
	slab     []Entry // preallocated entries for the rest of the batch
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: at byte %d: %s", ErrMalformed, d.off, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) take(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.b)-d.off {
		d.fail("%s needs %d bytes, %d left", what, n, len(d.b)-d.off)
		return nil
	}
	p := d.b[d.off : d.off+n : d.off+n]
	d.off += n
	return p
}

func (d *decoder) u8(what string) uint8 {
	if p := d.take(1, what); p != nil {
		return p[0]
	}
	return 0
}

func (d *decoder) u16(what string) uint16 {
	if p := d.take(2, what); p != nil {
		return binary.LittleEndian.Uint16(p)
	}
	return 0
}

func (d *decoder) u32(what string) uint32 {
	if p := d.take(4, what); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

func (d *decoder) u64(what string) uint64 {
	if p := d.take(8, what); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

// count32 reads a u32 count of items that take at least minSize bytes each and checks it
// against max and against the bytes left, before anyone allocates for it.
func (d *decoder) count32(what string, max, minSize int) int {
	n := uint64(d.u32(what))
	if d.err != nil {
		return 0
	}
	left := uint64(len(d.b) - d.off)
	if n > uint64(max) {
		d.fail("%s %d exceeds the limit of %d", what, n, max)
		return 0
	}
	if n*uint64(minSize) > left {
		d.fail("%s %d cannot fit in %d bytes", what, n, left)
		return 0
	}
	return int(n)
}

// bytes32 reads a u32-length-prefixed byte slice that aliases the input; empty is nil.
func (d *decoder) bytes32(what string) []byte {
	n := d.count32(what, math.MaxInt32, 1)
	if n == 0 {
		return nil
	}
	return d.take(n, what)
}

// string16 reads a u16-length-prefixed string of at most lim.maxString bytes.
func (d *decoder) string16(what string) string {
	n := int(d.u16(what))
	if d.err != nil {
		return ""
	}
	if n > d.lim.maxString {
		d.fail("%s of %d bytes exceeds the limit of %d", what, n, d.lim.maxString)
		return ""
	}
	return string(d.take(n, what))
}

// members reads a u16 count of node IDs, at most limit of them.
func (d *decoder) members(what string, limit int) []string {
	n := int(d.u16(what + " count"))
	switch {
	case d.err != nil:
		return nil
	case n > limit:
		d.fail("%d %ss exceed the limit of %d", n, what, limit)
		return nil
	case n*2 > len(d.b)-d.off:
		d.fail("%d %ss cannot fit in %d bytes", n, what, len(d.b)-d.off)
		return nil
	case n == 0:
		return nil
	}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = d.string16(what + " ID length")
	}
	return ids
}

// message decodes one record; the caller checks d.err and that the record was consumed.
func (d *decoder) message() Message {
	var m Message
	m.Type = MessageType(d.u8("type"))
	m.Partition = d.u32("partition")
	m.Term = d.u64("term")
	m.LogTerm = d.u64("log term")
	m.Index = d.u64("index")
	m.Commit = d.u64("commit")
	m.RejectHint = d.u64("reject hint")
	m.Context = d.u64("context")
	flags := d.u8("flags")
	if d.err != nil {
		return m
	}
	if m.Type == MsgNone || m.Type >= msgTypeCount {
		d.fail("unknown message type %d", m.Type)
		return m
	}
	if flags&^knownFlags != 0 || (flags&flagLearners != 0 && flags&flagSnapshot == 0) {
		d.fail("unknown flags %#x", flags)
		return m
	}
	m.Reject = flags&flagReject != 0
	m.quiesce = flags&flagQuiesce != 0
	m.commitOnly = flags&flagCommitOnly != 0
	n := d.count32("entry count", d.lim.maxEntries, entryFixed)
	if n > 0 {
		if n <= len(d.slab) {
			m.Entries, d.slab = d.slab[:n:n], d.slab[n:]
		} else {
			m.Entries = make([]Entry, n)
		}
		for i := range m.Entries {
			d.entry(&m.Entries[i])
		}
	}
	if flags&flagSnapshot != 0 && d.err == nil {
		m.snapshot = d.snapshot(flags&flagLearners != 0)
	}
	return m
}

func (d *decoder) entry(e *Entry) {
	e.Term = d.u64("entry term")
	e.Index = d.u64("entry index")
	e.Kind = EntryKind(d.u8("entry kind"))
	e.ID = d.u64("entry id")
	n := int(d.u16("entry type length"))
	if n > d.lim.maxString {
		d.fail("entry type of %d bytes exceeds the limit of %d", n, d.lim.maxString)
	}
	t := d.take(n, "entry type")
	if string(t) == d.lastType {
		e.Type = d.lastType // the common case: one command name over and over
	} else {
		e.Type = string(t)
		d.lastType = e.Type
	}
	e.Data = d.bytes32("entry data length")
	if d.err == nil && uint8(e.Kind) > maxEntryKind {
		d.fail("unknown entry kind %d", e.Kind)
	}
}

func (d *decoder) snapshot(learners bool) *snapshotChunk {
	if len(d.b)-d.off < snapshotFixed {
		d.fail("snapshot needs %d bytes, %d left", snapshotFixed, len(d.b)-d.off)
		return nil
	}
	s := &snapshotChunk{}
	s.Index = d.u64("snapshot index")
	s.Term = d.u64("snapshot term")
	s.Voters = d.members("voter", d.lim.maxVoters)
	if learners {
		s.Learners = d.members("learner", d.lim.maxVoters-len(s.Voters))
		if d.err == nil && len(s.Learners) == 0 {
			d.fail("learner flag without learners")
		}
	}
	if d.err != nil {
		return nil
	}
	s.Offset = d.u64("snapshot offset")
	s.Data = d.bytes32("snapshot data length")
	switch d.u8("snapshot done") {
	case 0:
	case 1:
		s.Done = true
	default:
		d.fail("snapshot done flag is not 0 or 1")
	}
	s.Checksum = d.u32("snapshot checksum")
	return s
}
