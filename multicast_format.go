package kommander

// The datagram multicast discovery sends. Version 1, byte by byte (integers big-endian):
//
//	offset  size  field
//	0       2     magic "KD" (0x4B 0x44): anything else is not ours
//	2       1     version, 1; a datagram of another version is dropped
//	3       1     flags: bit 0 = signed (a MAC ends the datagram), bit 1 = leaving (the
//	              node is stopping: drop it now rather than when it expires); the other
//	              bits must be zero
//	4       8     timestamp: the sender's clock in Unix nanoseconds, strictly increasing
//	              per sender, so a repeat or a replay is never newer than what is held
//	12      1+n   cluster name: a length n (1..255), then n bytes
//	.       1+n   node ID: a length n (1..255), then n bytes
//	.       1+n   address where the node is reached: a length n (1..255), then n bytes
//	.       1+n   incarnation: a length n (1..64), then n bytes
//	.       32    only when signed: HMAC-SHA256 under the cluster secret of every byte
//	              before it (the package's mac, label "kommander-multicast-v1")
//
// Nothing may follow. The largest datagram is 12+4+3*255+64+32 = 877 bytes, below the
// 1472 bytes of UDP payload an Ethernet frame carries, so it is never fragmented.

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

const (
	datagramVersion   = 1
	datagramHeader    = 12
	maxDatagram       = datagramHeader + 4 + 3*maxNameBytes + maxIncarnationBytes + sha256.Size
	flagSigned        = 1 << 0
	flagLeaving       = 1 << 1
	multicastMACLabel = "kommander-multicast-v1"
)

var datagramMagic = [2]byte{'K', 'D'}

// datagram is one announcement.
type datagram struct {
	signed, leaving bool
	stamp           int64
	cluster         string
	self            Announcement
	mac             []byte // when signed: the MAC as received
	signedPart      []byte // when signed: the bytes the MAC covers
}

// encodeDatagram encodes d, signed with secret when secret is set.
func encodeDatagram(d datagram, secret []byte) ([]byte, error) {
	fields := []string{d.cluster, d.self.ID, d.self.Addr, d.self.Incarnation}
	limits := []int{maxNameBytes, maxNameBytes, maxAddrBytes, maxIncarnationBytes}
	b := make([]byte, datagramHeader, maxDatagram)
	copy(b, datagramMagic[:])
	b[2] = datagramVersion
	if secret != nil {
		b[3] |= flagSigned
	}
	if d.leaving {
		b[3] |= flagLeaving
	}
	binary.BigEndian.PutUint64(b[4:], uint64(d.stamp))
	for i, f := range fields {
		if len(f) == 0 || len(f) > limits[i] {
			return nil, fmt.Errorf("kommander: multicast: field %d has %d bytes, want 1 to %d", i, len(f), limits[i])
		}
		b = append(b, byte(len(f)))
		b = append(b, f...)
	}
	if secret != nil {
		b = append(b, mac(secret, multicastMACLabel, b)...)
	}
	return b, nil
}

var errDatagram = errors.New("kommander: malformed discovery datagram")

// decodeDatagram parses b; it checks the form only (the MAC is checked by verify).
func decodeDatagram(b []byte) (datagram, error) {
	var d datagram
	if len(b) < datagramHeader || len(b) > maxDatagram || b[0] != datagramMagic[0] || b[1] != datagramMagic[1] {
		return d, fmt.Errorf("%w: not a discovery datagram (%d bytes)", errDatagram, len(b))
	}
	if b[2] != datagramVersion {
		return d, fmt.Errorf("%w: version %d, this node speaks %d", ErrVersion, b[2], datagramVersion)
	}
	if b[3]&^(flagSigned|flagLeaving) != 0 {
		return d, fmt.Errorf("%w: unknown flags %#x", errDatagram, b[3])
	}
	d.signed, d.leaving = b[3]&flagSigned != 0, b[3]&flagLeaving != 0
	d.stamp = int64(binary.BigEndian.Uint64(b[4:]))
	rest := b[datagramHeader:]
	var fields [4]string
	limits := [4]int{maxNameBytes, maxNameBytes, maxAddrBytes, maxIncarnationBytes}
	for i := range fields {
		if len(rest) < 1 || int(rest[0]) == 0 || int(rest[0]) > limits[i] || len(rest) < 1+int(rest[0]) {
			return d, fmt.Errorf("%w: field %d truncated or of a bad length", errDatagram, i)
		}
		fields[i], rest = string(rest[1:1+int(rest[0])]), rest[1+int(rest[0]):]
	}
	d.cluster = fields[0]
	d.self = Announcement{ID: fields[1], Addr: fields[2], Incarnation: fields[3]}
	if d.signed {
		if len(rest) != sha256.Size {
			return d, fmt.Errorf("%w: MAC of %d bytes", errDatagram, len(rest))
		}
		d.mac, d.signedPart = rest, b[:len(b)-sha256.Size]
	} else if len(rest) != 0 {
		return d, fmt.Errorf("%w: %d bytes after the last field", errDatagram, len(rest))
	}
	return d, nil
}

// verify reports whether d carries a valid MAC under secret.
func (d datagram) verify(secret []byte) bool {
	return d.signed && hmac.Equal(d.mac, mac(secret, multicastMACLabel, d.signedPart))
}
