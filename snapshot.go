package kommander

// Snapshots: what a state machine implements to take part (Snapshotter), and the byte
// format of a snapshot file, which is also what goes over the wire, chunk by chunk.
//
// # File format
//
// A snapshot of one partition is one file. All integers are little-endian; CRC means
// CRC-32C (Castagnoli).
//
//	0   8  magic "kmdrsnp" followed by the format version byte 0x02
//	8   4  partition (uint32)
//	12  8  index (uint64): the last log entry the snapshot covers
//	20  8  term (uint64) of that entry
//	28  2  number of voters v (uint16), then v times: length (uint16) and the voter's ID
//	    2  number of learners l (uint16), then l times: length (uint16) and the learner's ID
//	    4  header CRC: CRC of every header byte before it
//
// Version 0x01, still read, has no learners.
//	    n  the state machine's data, as its Snapshotter wrote it
//	    8  n (uint64)
//	    4  CRC of the n data bytes
//
// The header is checked before anything else, the data's length and CRC before the
// state machine sees a byte of it: a truncated or bit-flipped file is never restored.
// Files are named "<partition>-<index>-<term>.snap" (decimal partition, 16 hex digits each
// for index and term) and written as "<name>.tmp", fsynced, renamed and the directory
// fsynced, so a crash leaves either the whole file or a temporary one that the next start
// removes (see SnapshotStore).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Snapshotter is implemented by a StateMachine that can write its state of a partition
// to a snapshot and load it back. It is optional: without it a node keeps its whole log.
// With it, a node snapshots each partition from time to time (see Config.SnapshotEntries),
// drops the log entries the snapshot covers, restarts from the snapshot, and brings a
// follower that lags too far behind up to date by sending it the snapshot.
type Snapshotter interface {
	// Snapshot captures the partition's state as of the last entry applied to it. The
	// node calls it from the goroutine that calls Apply, between two Apply calls, so the
	// state is at a consistent point; it should return quickly, for example with a
	// copy-on-write view or an immutable version of the state. The returned WriterTo is
	// then called once from another goroutine while Apply goes on: it must write the
	// captured state, not the live one.
	Snapshot(partition int) (io.WriterTo, error)
	// Restore replaces the partition's whole state with the one a snapshot wrote, read
	// from r; index is the last entry the snapshot covers. No Apply of the partition runs
	// meanwhile. Afterwards Applied(partition) must return index (or more, once later
	// entries are applied), also across a restart if the state machine keeps its state
	// itself. An error stops the node.
	Restore(partition int, index uint64, r io.Reader) error
}

// ErrSnapshotCorrupt is wrapped by errors that report a snapshot, on disk or received from
// a peer, whose bytes fail their checks; such a snapshot is never restored.
var ErrSnapshotCorrupt = errors.New("kommander: corrupt snapshot")

const (
	snapMagicV1      = "kmdrsnp\x01" // without learners
	snapMagic        = "kmdrsnp\x02"
	snapHeaderFixed  = 8 + 4 + 8 + 8 + 2
	snapTrailerSize  = 8 + 4
	snapMaxVoters    = 1 << 10
	snapMaxVoterName = 1 << 10
)

var snapCRC = crc32.MakeTable(crc32.Castagnoli)

// snapshotMeta says what a snapshot covers.
type snapshotMeta struct {
	partition   uint32
	index, term uint64
	// voters and learners are the configuration as of index.
	voters, learners []string
}

// appendSnapshotHeader appends the header of a snapshot file for m, its CRC included.
func appendSnapshotHeader(b []byte, m snapshotMeta) ([]byte, error) {
	if len(m.voters)+len(m.learners) > snapMaxVoters {
		return b, fmt.Errorf("kommander: snapshot: %d members, at most %d", len(m.voters)+len(m.learners), snapMaxVoters)
	}
	start := len(b)
	b = append(b, snapMagic...)
	b = binary.LittleEndian.AppendUint32(b, m.partition)
	b = binary.LittleEndian.AppendUint64(b, m.index)
	b = binary.LittleEndian.AppendUint64(b, m.term)
	for _, ids := range [2][]string{m.voters, m.learners} {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(ids)))
		for _, v := range ids {
			if len(v) > snapMaxVoterName {
				return b[:start], fmt.Errorf("kommander: snapshot: member ID of %d bytes", len(v))
			}
			b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
			b = append(b, v...)
		}
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], snapCRC)), nil
}

// snapshotWriter writes a snapshot file: the header, the data as it comes, the trailer.
type snapshotWriter struct {
	w   io.Writer
	n   uint64
	crc uint32
	err error
}

func newSnapshotWriter(w io.Writer, m snapshotMeta) (*snapshotWriter, error) {
	h, err := appendSnapshotHeader(nil, m)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(h); err != nil {
		return nil, err
	}
	return &snapshotWriter{w: w}, nil
}

// Write appends state machine data.
func (s *snapshotWriter) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.w.Write(p)
	s.crc = crc32.Update(s.crc, snapCRC, p[:n])
	s.n += uint64(n)
	s.err = err
	return n, err
}

// finish writes the trailer.
func (s *snapshotWriter) finish() error {
	if s.err != nil {
		return s.err
	}
	var t [snapTrailerSize]byte
	binary.LittleEndian.PutUint64(t[:], s.n)
	binary.LittleEndian.PutUint32(t[8:], s.crc)
	_, err := s.w.Write(t[:])
	return err
}

// snapshotLayout is a checked snapshot file: what it covers and where its data lies.
type snapshotLayout struct {
	meta            snapshotMeta
	dataOff, dataLn int64
}

// decodeSnapshot checks a whole snapshot file of size bytes: its header, its length and
// the CRC of its data (read once through). Every failure wraps ErrSnapshotCorrupt.
func decodeSnapshot(r io.ReaderAt, size int64) (snapshotLayout, error) {
	var l snapshotLayout
	bad := func(format string, a ...any) (snapshotLayout, error) {
		return snapshotLayout{}, fmt.Errorf("%w: %s", ErrSnapshotCorrupt, fmt.Sprintf(format, a...))
	}
	if size < snapHeaderFixed+4+snapTrailerSize {
		return bad("%d bytes is shorter than any snapshot", size)
	}
	// The fixed header, then the members' names, which are bounded: read at most that much.
	maxHeader := int64(snapHeaderFixed + 2 + snapMaxVoters*(2+snapMaxVoterName) + 4)
	h := make([]byte, min(size, maxHeader))
	if _, err := r.ReadAt(h, 0); err != nil && !errors.Is(err, io.EOF) {
		return snapshotLayout{}, fmt.Errorf("kommander: read snapshot header: %w", err)
	}
	lists := 2
	switch string(h[:8]) {
	case snapMagic:
	case snapMagicV1:
		lists = 1 // voters only
	default:
		return bad("bad magic or version %q", h[:8])
	}
	le := binary.LittleEndian
	l.meta.partition = le.Uint32(h[8:])
	l.meta.index = le.Uint64(h[12:])
	l.meta.term = le.Uint64(h[20:])
	off := snapHeaderFixed - 2
	members := 0
	for list := range lists {
		if off+2 > len(h) {
			return bad("header cut before member list %d", list)
		}
		n := int(le.Uint16(h[off:]))
		off += 2
		if members += n; members > snapMaxVoters {
			return bad("%d members", members)
		}
		for i := 0; i < n; i++ {
			if off+2 > len(h) {
				return bad("header cut in member %d", i)
			}
			vl := int(le.Uint16(h[off:]))
			off += 2
			if vl > snapMaxVoterName || off+vl > len(h) {
				return bad("member %d of %d bytes", i, vl)
			}
			id := string(h[off : off+vl])
			if list == 0 {
				l.meta.voters = append(l.meta.voters, id)
			} else {
				l.meta.learners = append(l.meta.learners, id)
			}
			off += vl
		}
	}
	if off+4 > len(h) {
		return bad("header cut before its CRC")
	}
	if crc32.Checksum(h[:off], snapCRC) != le.Uint32(h[off:]) {
		return bad("header CRC mismatch")
	}
	l.dataOff = int64(off + 4)
	l.dataLn = size - l.dataOff - snapTrailerSize
	if l.dataLn < 0 {
		return bad("no room for the trailer")
	}
	var t [snapTrailerSize]byte
	if _, err := r.ReadAt(t[:], size-snapTrailerSize); err != nil {
		return snapshotLayout{}, fmt.Errorf("kommander: read snapshot trailer: %w", err)
	}
	if n := le.Uint64(t[:]); n != uint64(l.dataLn) {
		return bad("trailer says %d data bytes, the file holds %d", n, l.dataLn)
	}
	crc, err := crcOf(io.NewSectionReader(r, l.dataOff, l.dataLn))
	if err != nil {
		return snapshotLayout{}, fmt.Errorf("kommander: read snapshot data: %w", err)
	}
	if crc != le.Uint32(t[8:]) {
		return bad("data CRC mismatch")
	}
	return l, nil
}

// crcOf returns the CRC-32C of everything r yields.
func crcOf(r io.Reader) (uint32, error) {
	h := crc32.New(snapCRC)
	_, err := io.Copy(h, r)
	return h.Sum32(), err
}
