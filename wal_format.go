package kommander

// The write-ahead log (WAL): one log per node, shared by every partition, so that a single
// write and a single fsync make a whole batch of entries and hard states from many Raft
// groups durable at once.
//
// # Files
//
// The WAL is a directory of segment files named by sequence number, 16 lower-case hex
// digits and ".wal" ("0000000000000001.wal"). Sequence numbers are contiguous: a gap is
// corruption. A segment is created as "<name>.tmp", its header written and fsynced, then
// renamed to its final name and the directory fsynced; leftover ".tmp" files are removed on
// open. All integers are little-endian. CRC means CRC-32C (Castagnoli).
//
// Segment header, 24 bytes:
//
//	0   8  magic "kmdrwal" followed by the format version byte 0x01
//	8   8  sequence number (uint64), equal to the one in the file name
//	16  4  CRC of bytes 0..15
//	20  4  zero (reserved)
//
// The header is followed by frames, back to back, until the end of the file, except that
// the last segment may end in zeroes written ahead of the frames (see walZeroAhead): opening
// cuts them off like a torn tail; Close and the start of a new segment truncate them. A
// frame is the unit of atomicity: the committing caller writes one frame per write and
// fsync, holding every batch (Save call) gathered in that round, so each batch lies wholly
// inside one frame. Frame, 12 bytes of header then the payload:
//
//	0   4  payload length n (uint32), 1 <= n <= maxWALFrame
//	4   4  CRC of the payload
//	8   4  header CRC: CRC of bytes 0..7, then the segment's sequence number (uint64) and
//	       this frame's byte offset in the file (uint64). Binding the frame to its place
//	       means zeroes, stale bytes or a frame-shaped run inside user data never pass as a
//	       frame at another position.
//	12  n  records, back to back; the payload ends exactly at the end of its last record
//
// Records (first byte is the type; lengths are checked against the payload before use):
//
//	1 entry:       partition u32, index u64, term u64, kind u8, id u64, type length u16,
//	               data length u32, type bytes, data bytes            (36 bytes + type + data)
//	2 hard state:  partition u32, term u64, commit u64, vote length u16, vote bytes
//	3 truncation:  partition u32, from index u64: entries at and after it are dropped
//	4 compaction:  partition u32, index u64, term u64: entries up to index are not needed
//	5 membership:  partition u32, body length u32, body: reserved for membership records;
//	               read and bounds-checked, otherwise ignored by this version
//	6 reset:       partition u32, compaction index u64, compaction term u64: the partition's
//	               log restarts after that point; its hard state and its live entries,
//	               carried forward from an old segment, follow in the same frame
//
// The in-memory state is the result of applying the records in order: a partition's entries
// always follow index after index from its compaction point + 1. Save writes a truncation
// record before entries whose first index is at or below the stored last index. Entries
// that follow a gap are expected only when their predecessors lived in deleted segments:
// a later compaction, reset or truncation record must then cover the gap, or opening fails
// with ErrCorrupt (a segment was lost).
//
// # Crash assumptions
//
// What we rely on: after fsync (fdatasync on Linux, F_FULLFSYNC on macOS, FlushFileBuffers
// on Windows) returns success, the bytes written before it are on stable storage; after the
// directory is fsynced, a create, rename or remove in it is. What a crash may do: tear the
// one write in flight, anywhere — any of its bytes may be lost, zeroed or written, in any
// order — and extend the file with zeroes. What it may not do: change bytes that an fsync
// already made durable (a flipped bit there is corruption, reported, never repaired).
//
// Since a write is fsynced before the next one starts (and a failed fsync stops all writes,
// see below), only the last frame of the last segment can be torn. Recovery on open:
// every frame of every segment is checked (length, header CRC, payload CRC, record syntax).
// A bad frame in any segment but the last is ErrCorrupt naming the file and byte offset. In
// the last segment a bad frame at offset X is a torn tail when no valid frame starts
// anywhere after X: the file is truncated at X, fsynced and the loss logged (no caller was
// told that frame was durable). If a valid frame does follow, the damage is not a torn
// tail and opening fails with ErrCorrupt. The one case this cannot tell apart: a bit that
// flips, after the fsync, inside the very last frame looks like a torn write, and that
// frame is dropped.
//
// A failed write or fsync is sticky (fsyncgate: after a failed fsync the kernel may have
// dropped the dirty pages and a retry would report success for lost data): the Save that saw
// it and every later Save fail, and the in-memory state never shows the failed frame.
//
// # Space
//
// Segments are deleted oldest first, each removal followed by a directory fsync, once no
// partition needs them: a partition needs the segments from the one holding its first live
// entry, its latest hard state or its latest compaction mark. When a new segment is started,
// the partitions that pin the oldest segment (typically idle ones) are carried forward if
// their live bytes add up to at most a quarter segment per segment beyond the active one: a
// reset record, the hard state and the live entries of each are rewritten into the active
// segment, a partition never split across frames, after which the old segment can go.
// Disk use thus stays a small multiple of the live data plus a few segments. (A partition
// with more than maxWALFrame/2 live bytes is never carried; its own compaction frees it.)

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Format limits and sizes; see the comment at the top of this file.
const (
	walSegmentHeaderSize = 24
	walFrameHeaderSize   = 12
	walEntryHeaderSize   = 36
	// maxWALFrame bounds a frame's payload and so any allocation made while reading one.
	maxWALFrame = 256 << 20
	walMagic    = "kmdrwal\x01"
	// maxWALIndex bounds log indexes, so that index arithmetic can never overflow.
	maxWALIndex = 1 << 62

	walRecEntry      = 1
	walRecHardState  = 2
	walRecTruncate   = 3
	walRecCompact    = 4
	walRecMembership = 5
	walRecReset      = 6
)

var walCRC = crc32.MakeTable(crc32.Castagnoli)

// zeroFrameHeader is the placeholder a frame starts with until writeFrame fills it in.
var zeroFrameHeader [walFrameHeaderSize]byte

// putSegmentHeader writes the header of segment seq into b[:walSegmentHeaderSize], whose
// reserved bytes are already zero.
func putSegmentHeader(b []byte, seq uint64) {
	copy(b, walMagic)
	binary.LittleEndian.PutUint64(b[8:], seq)
	binary.LittleEndian.PutUint32(b[16:], crc32.Checksum(b[:16], walCRC))
}

// validSegmentHeader reports whether hdr is the header of segment seq.
func validSegmentHeader(hdr []byte, seq uint64) bool {
	return string(hdr[:8]) == walMagic && binary.LittleEndian.Uint64(hdr[8:]) == seq &&
		crc32.Checksum(hdr[:16], walCRC) == binary.LittleEndian.Uint32(hdr[16:])
}

// putFrameHeader fills in the header of frame (header and payload) placed at off in
// segment seq.
func putFrameHeader(frame []byte, seq uint64, off int64) {
	le := binary.LittleEndian
	le.PutUint32(frame[0:], uint32(len(frame)-walFrameHeaderSize))
	le.PutUint32(frame[4:], crc32.Checksum(frame[walFrameHeaderSize:], walCRC))
	le.PutUint32(frame[8:], frameHeaderCRC(frame, seq, off))
}

// frameHeaderCRC is the header CRC of a frame at off in segment seq.
func frameHeaderCRC(hdr []byte, seq uint64, off int64) uint32 {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:], seq)
	binary.LittleEndian.PutUint64(b[8:], uint64(off))
	return crc32.Update(crc32.Checksum(hdr[:8], walCRC), walCRC, b[:])
}

// checkFrameHeader returns the payload length of a valid frame header at off, or a reason.
func checkFrameHeader(hdr []byte, seq uint64, off, size int64) (int64, string) {
	n := int64(binary.LittleEndian.Uint32(hdr))
	switch {
	case n == 0:
		return 0, "zero frame length"
	case n > maxWALFrame:
		return 0, "frame length beyond limit"
	case n > size-off-walFrameHeaderSize:
		return 0, "frame runs past the end of the file"
	case frameHeaderCRC(hdr, seq, off) != binary.LittleEndian.Uint32(hdr[8:]):
		return 0, "frame header checksum mismatch"
	}
	return n, ""
}

// walRecord is a decoded record; byte fields alias the payload.
type walRecord struct {
	typ       byte
	partition uint32
	index     uint64 // entry index, truncation point, compaction or reset index
	term      uint64 // entry, hard state, compaction or reset term
	kind      EntryKind
	id        uint64
	commit    uint64
	typeName  []byte // entry type, or hard state vote
	data      []byte // entry data, or membership body
	size      int    // encoded length
}

var errWALShortRecord = errors.New("record runs past the end of the frame")

// decodeWALRecord decodes the record at the start of b.
func decodeWALRecord(b []byte) (walRecord, error) {
	var r walRecord
	if len(b) < 5 {
		return r, errWALShortRecord
	}
	le := binary.LittleEndian
	r.typ, r.partition = b[0], le.Uint32(b[1:])
	switch r.typ {
	case walRecEntry:
		if len(b) < walEntryHeaderSize {
			return r, errWALShortRecord
		}
		r.index, r.term, r.kind, r.id = le.Uint64(b[5:]), le.Uint64(b[13:]), EntryKind(b[21]), le.Uint64(b[22:])
		tl, dl := int(le.Uint16(b[30:])), int64(le.Uint32(b[32:]))
		if int64(len(b)-walEntryHeaderSize) < int64(tl)+dl {
			return r, errWALShortRecord
		}
		r.typeName = b[walEntryHeaderSize : walEntryHeaderSize+tl]
		r.data = b[walEntryHeaderSize+tl : walEntryHeaderSize+tl+int(dl)]
		r.size = walEntryHeaderSize + tl + int(dl)
		if r.kind > entryConfig {
			return r, fmt.Errorf("unknown entry kind %d", r.kind)
		}
		if r.index == 0 || r.index > maxWALIndex {
			return r, fmt.Errorf("entry index %d out of range", r.index)
		}
	case walRecHardState:
		if len(b) < 23 {
			return r, errWALShortRecord
		}
		r.term, r.commit = le.Uint64(b[5:]), le.Uint64(b[13:])
		vl := int(le.Uint16(b[21:]))
		if len(b)-23 < vl {
			return r, errWALShortRecord
		}
		r.typeName = b[23 : 23+vl]
		r.size = 23 + vl
	case walRecTruncate:
		if len(b) < 13 {
			return r, errWALShortRecord
		}
		r.index, r.size = le.Uint64(b[5:]), 13
	case walRecCompact, walRecReset:
		if len(b) < 21 {
			return r, errWALShortRecord
		}
		r.index, r.term, r.size = le.Uint64(b[5:]), le.Uint64(b[13:]), 21
		if r.index > maxWALIndex {
			return r, fmt.Errorf("index %d out of range", r.index)
		}
	case walRecMembership:
		if len(b) < 9 {
			return r, errWALShortRecord
		}
		bl := int64(le.Uint32(b[5:]))
		if int64(len(b)-9) < bl {
			return r, errWALShortRecord
		}
		r.data, r.size = b[9:9+bl], 9+int(bl)
	default:
		return r, fmt.Errorf("unknown record type %d", r.typ)
	}
	return r, nil
}

func appendWALEntry(b []byte, partition uint32, e *Entry) []byte {
	le := binary.LittleEndian
	b = append(b, walRecEntry)
	b = le.AppendUint32(b, partition)
	b = le.AppendUint64(b, e.Index)
	b = le.AppendUint64(b, e.Term)
	b = append(b, byte(e.Kind))
	b = le.AppendUint64(b, e.ID)
	b = le.AppendUint16(b, uint16(len(e.Type)))
	b = le.AppendUint32(b, uint32(len(e.Data)))
	b = append(b, e.Type...)
	return append(b, e.Data...)
}

func appendWALHardState(b []byte, partition uint32, hs HardState) []byte {
	le := binary.LittleEndian
	b = append(b, walRecHardState)
	b = le.AppendUint32(b, partition)
	b = le.AppendUint64(b, hs.Term)
	b = le.AppendUint64(b, hs.Commit)
	b = le.AppendUint16(b, uint16(len(hs.Vote)))
	return append(b, hs.Vote...)
}

func appendWALTruncate(b []byte, partition uint32, from uint64) []byte {
	b = append(b, walRecTruncate)
	b = binary.LittleEndian.AppendUint32(b, partition)
	return binary.LittleEndian.AppendUint64(b, from)
}

// appendWALMark appends a compaction or reset record.
func appendWALMark(b []byte, typ byte, partition uint32, index, term uint64) []byte {
	b = append(b, typ)
	b = binary.LittleEndian.AppendUint32(b, partition)
	b = binary.LittleEndian.AppendUint64(b, index)
	return binary.LittleEndian.AppendUint64(b, term)
}
