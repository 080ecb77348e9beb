package kommander

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/codec golden vectors and testdata/fuzz seed corpora")

// goldenBatches are the batches whose encodings testdata/codec pins. Adding one is fine;
// changing the bytes of an existing one is a format change and needs a version bump.
func goldenBatches() []struct {
	name     string
	from, to string
	msgs     []Message
} {
	type batch = struct {
		name     string
		from, to string
		msgs     []Message
	}
	return []batch{
		{"empty", "n1", "n2", nil},
		{"heartbeats", "n1", "n2", []Message{
			{Type: MsgHeartbeat, Partition: 0, Term: 3, Commit: 10, Context: 7},
			{Type: MsgHeartbeat, Partition: 1, Term: 4, Commit: 11, Context: 8},
			{Type: MsgHeartbeat, Partition: 65535, Term: 5, Commit: 12, Context: 9},
		}},
		{"append", "leader", "follower", []Message{{
			Type: MsgAppend, Partition: 2, Term: 7, LogTerm: 6, Index: 41, Commit: 40,
			Entries: []Entry{
				{Term: 7, Index: 42, Kind: EntryNoop},
				{Term: 7, Index: 43, Kind: EntryNormal, ID: 0xdeadbeef, Type: "SetValue", Data: []byte("k=v")},
				{Term: 7, Index: 44, Kind: entryConfig, Type: "conf", Data: []byte{0, 1, 2, 255}},
			},
		}}},
		{"append-resp-reject", "n2", "n1", []Message{
			{Type: MsgAppendResp, Partition: 9, Term: 7, LogTerm: 5, Index: 41, Reject: true, RejectHint: 30},
		}},
		{"votes", "candidate", "voter", []Message{
			{Type: MsgPreVote, Partition: 1, Term: 9, LogTerm: 8, Index: 100},
			{Type: MsgVote, Partition: 1, Term: 9, LogTerm: 8, Index: 100},
			{Type: MsgReadIndexResp, Partition: 3, Term: 9, Index: 77, Context: 1 << 60},
		}},
		{"snapshot", "n1", "n3", []Message{{
			Type: msgSnapshot, Partition: 4, Term: 12,
			snapshot: &snapshotChunk{Index: 500, Term: 11, Voters: []string{"n1", "n2", "n3"},
				Offset: 4096, Data: []byte("chunk bytes"), Done: true, Checksum: 0xcafef00d},
		}}},
		{"snapshot-learners", "n1", "n4", []Message{{
			Type: msgSnapshot, Partition: 4, Term: 12,
			snapshot: &snapshotChunk{Index: 500, Term: 11, Voters: []string{"n1", "n2", "n3"}, Learners: []string{"n4", "n5"},
				Offset: 0, Data: []byte("first chunk"), Checksum: 0},
		}}},
		{"forward", "n2", "n1", []Message{
			{Type: MsgForward, Partition: 5, Term: 3, Entries: []Entry{
				{Kind: EntryNormal, ID: 77, Type: "SetValue", Data: []byte("k=v")},
			}},
			{Type: MsgForwardRefused, Partition: 5, Term: 3, Entries: []Entry{{Kind: EntryNormal, ID: 78}}},
		}},
		{"hello", "n3", "n1", []Message{
			{Type: MsgHello, Context: 0x0123456789abcdef},
			{Type: MsgHelloResp, Context: 0xfedcba9876543210, Reject: true},
		}},
		{"proxy", "n4", "n1", []Message{
			{Type: msgProxy, Partition: 6, Context: 0x00000a0000000001, Commit: 0x00000a0000000001, Index: proxyOpReplicate, Entries: []Entry{
				{Kind: EntryNormal, Type: "put", Data: []byte("k\x00v")},
			}},
			{Type: msgProxy, Partition: 6, Context: 0x00000a0000000002, Commit: 0x00000a0000000001, Index: proxyOpLeader},
		}},
		{"proxy-resp", "n1", "n4", []Message{
			{Type: msgProxyResp, Partition: 6, Context: 0x00000a0000000001, Index: 1},
			{Type: msgProxyResp, Partition: 6, Context: 0x00000a0000000001, Entries: []Entry{
				{Index: 12, Term: 3, ID: proxyValueString, Data: []byte("v")},
			}},
			{Type: msgProxyResp, Partition: 6, Context: 0x00000a0000000002, Reject: true, RejectHint: proxyErrNotHosted,
				Entries: []Entry{{Data: []byte("not hosted")}}},
		}},
		{"addressbook", "n1", "n2", []Message{
			{Type: msgAddressBook, Entries: []Entry{
				{Type: "n4", Data: []byte("10.0.0.4:7000"), Index: 7},
				{Type: "n3", Index: 8},
			}},
		}},
		{"quiesce", "n1", "n2", []Message{
			{Type: MsgHeartbeat, Partition: 6, Term: 4, Index: 20, Commit: 20, Context: 33, quiesce: true},
			{Type: msgLiveness},
		}},
		{"commit-only", "n1", "n2", []Message{
			{Type: MsgAppend, Partition: 7, Term: 5, LogTerm: 5, Index: 41, Commit: 41, Context: 90, commitOnly: true},
		}},
	}
}

// sampleMessages is a mixed batch with every field of every type set somewhere.
func sampleMessages(from, to string) []Message {
	var msgs []Message
	for _, g := range goldenBatches() {
		msgs = append(msgs, g.msgs...)
	}
	for i := range msgs {
		msgs[i].From, msgs[i].To = from, to
	}
	return msgs
}

// normalizeWire clears what the wire does not distinguish (nil versus empty slices) so that
// decoded messages compare equal to the originals with reflect.DeepEqual.
func normalizeWire(msgs []Message) []Message {
	out := make([]Message, len(msgs))
	for i, m := range msgs {
		if len(m.Entries) == 0 {
			m.Entries = nil
		} else {
			m.Entries = append([]Entry(nil), m.Entries...)
			for j := range m.Entries {
				if len(m.Entries[j].Data) == 0 {
					m.Entries[j].Data = nil
				}
			}
		}
		if m.snapshot != nil {
			s := *m.snapshot
			if len(s.Data) == 0 {
				s.Data = nil
			}
			if len(s.Voters) == 0 {
				s.Voters = nil
			}
			if len(s.Learners) == 0 {
				s.Learners = nil
			}
			m.snapshot = &s
		}
		out[i] = m
	}
	return out
}

func mustEncode(t testing.TB, from, to string, msgs []Message) []byte {
	t.Helper()
	b, err := appendBatch(nil, from, to, msgs)
	if err != nil {
		t.Fatalf("appendBatch: %v", err)
	}
	return b
}

func TestCodecRoundTripsEveryField(t *testing.T) {
	msgs := sampleMessages("n1", "n2")
	b := mustEncode(t, "n1", "n2", msgs)
	got, err := decodeBatch(b, codecLimits{})
	if err != nil || got.skipped != 0 {
		t.Fatalf("decodeBatch: %v (skipped %d: %v)", err, got.skipped, got.skipErr)
	}
	if got.from != "n1" || got.to != "n2" {
		t.Fatalf("header from/to = %q/%q", got.from, got.to)
	}
	if !reflect.DeepEqual(normalizeWire(got.msgs), normalizeWire(msgs)) {
		t.Fatalf("round trip differs:\n got %+v\nwant %+v", got.msgs, msgs)
	}
	size := batchHeaderSize("n1", "n2")
	for i := range msgs {
		size += encodedMessageSize(&msgs[i])
	}
	if size != len(b) {
		t.Fatalf("encodedMessageSize sums to %d, encoding is %d bytes", size, len(b))
	}
}

func TestCodecMatchesGoldenVectors(t *testing.T) {
	dir := filepath.Join("testdata", "codec")
	for _, g := range goldenBatches() {
		b := mustEncode(t, g.from, g.to, g.msgs)
		path := filepath.Join(dir, g.name+".hex")
		if *updateGolden {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(hexLines(b)), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := readHexFile(path)
		if err != nil {
			t.Fatalf("%s: %v (run go test -run TestCodecMatchesGoldenVectors -update to create it)", path, err)
		}
		if !bytes.Equal(b, want) {
			t.Errorf("%s: the encoding changed; that is a format change and needs a version bump\n got %x\nwant %x", g.name, b, want)
		}
		// The pinned bytes must also decode back to the same messages.
		got, err := decodeBatch(want, codecLimits{})
		if err != nil || got.skipped != 0 {
			t.Fatalf("%s: decode golden: %v %v", g.name, err, got.skipErr)
		}
		if !reflect.DeepEqual(normalizeWire(got.msgs), normalizeWire(withFromTo(g.msgs, g.from, g.to))) {
			t.Errorf("%s: golden vector decodes to %+v", g.name, got.msgs)
		}
	}
	if *updateGolden {
		writeFuzzSeeds(t)
	}
}

func withFromTo(msgs []Message, from, to string) []Message {
	out := append([]Message(nil), msgs...)
	for i := range out {
		out[i].From, out[i].To = from, to
	}
	return out
}

// hexLines formats b as hex, 32 bytes per line, so that a diff of a golden file is readable.
func hexLines(b []byte) string {
	var sb strings.Builder
	for len(b) > 0 {
		n := min(32, len(b))
		sb.WriteString(hex.EncodeToString(b[:n]))
		sb.WriteByte('\n')
		b = b[n:]
	}
	return sb.String()
}

func readHexFile(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return hex.DecodeString(strings.Join(strings.Fields(string(raw)), ""))
}

// writeFuzzSeeds writes the seed corpus of FuzzDecodeBatch: every golden vector, plus
// truncations and corruptions of the richest one.
func writeFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeBatch")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var all []byte
	for _, g := range goldenBatches() {
		b := mustEncode(t, g.from, g.to, g.msgs)
		write("golden-"+g.name, b)
		if g.name == "append" {
			all = b
		}
	}
	write("truncated-header", all[:5])
	write("truncated-entry", all[:len(all)-3])
	huge := append([]byte(nil), all...)
	binary.LittleEndian.PutUint32(huge[batchHeaderSize("leader", "follower")-4:], 0xffffffff)
	write("huge-count", huge)
	write("wrong-version", append([]byte{2}, all[1:]...))
}

func TestAppendBatchDoesNotAllocateWithCapacity(t *testing.T) {
	msgs := sampleMessages("n1", "n2")
	buf := make([]byte, 0, 64<<10)
	allocs := testing.AllocsPerRun(100, func() {
		var err error
		if buf, err = appendBatch(buf[:0], "n1", "n2", msgs); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("appendBatch allocated %.1f times per batch with a large enough buffer", allocs)
	}
}

func TestAppendBatchRefusesWhatTheWireCannotCarry(t *testing.T) {
	long := strings.Repeat("x", maxEncodedString+1)
	cases := map[string][]Message{
		"no type":       {{Type: MsgNone}},
		"unknown type":  {{Type: msgTypeCount}},
		"long type":     {{Type: MsgAppend, Entries: []Entry{{Type: long}}}},
		"unknown kind":  {{Type: MsgAppend, Entries: []Entry{{Kind: 9}}}},
		"long voter ID": {{Type: msgSnapshot, snapshot: &snapshotChunk{Voters: []string{long}}}},
	}
	for name, msgs := range cases {
		prefix := []byte("keep")
		out, err := appendBatch(prefix, "a", "b", msgs)
		if !errors.Is(err, errEncode) {
			t.Errorf("%s: err = %v, want errEncode", name, err)
		}
		if string(out) != "keep" {
			t.Errorf("%s: dst was changed to %q on error", name, out)
		}
	}
	if _, err := appendBatch(nil, long, "b", nil); !errors.Is(err, errEncode) {
		t.Errorf("long node ID: err = %v", err)
	}
}

// TestDecodeSkipsOneMalformedMessageAndKeepsTheRest is the codec half of S28: one bad
// record in a batch costs that record only.
func TestDecodeSkipsOneMalformedMessageAndKeepsTheRest(t *testing.T) {
	msgs := []Message{
		{Type: MsgHeartbeat, Partition: 1, Term: 2},
		{Type: MsgHeartbeat, Partition: 2, Term: 2},
		{Type: MsgHeartbeat, Partition: 3, Term: 2},
	}
	b := mustEncode(t, "a", "b", msgs)
	second := batchHeaderSize("a", "b") + encodedMessageSize(&msgs[0])
	b[second+4] = 0xee // the type byte of the second record
	got, err := decodeBatch(b, codecLimits{})
	if err != nil {
		t.Fatalf("decodeBatch: %v", err)
	}
	if got.skipped != 1 || !errors.Is(got.skipErr, ErrMalformed) {
		t.Fatalf("skipped = %d (%v), want 1 malformed", got.skipped, got.skipErr)
	}
	if len(got.msgs) != 2 || got.msgs[0].Partition != 1 || got.msgs[1].Partition != 3 {
		t.Fatalf("kept %+v, want partitions 1 and 3", got.msgs)
	}
}

func TestDecodeRejectsMalformedBatches(t *testing.T) {
	good := mustEncode(t, "leader", "follower", sampleMessages("leader", "follower"))
	headerEnd := batchHeaderSize("leader", "follower")
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	cases := []struct {
		name  string
		in    []byte
		lim   codecLimits
		want  error
		whole bool // the whole batch is refused, rather than one record skipped
	}{
		{name: "empty", in: nil, want: ErrMalformed, whole: true},
		{name: "wrong version", in: mutate(func(b []byte) []byte { b[0] = 2; return b }), want: ErrVersion, whole: true},
		{name: "truncated header", in: good[:4], want: ErrMalformed, whole: true},
		{name: "truncated body", in: good[:len(good)-1], want: ErrMalformed, whole: true},
		{name: "trailing bytes", in: append(append([]byte(nil), good...), 0), want: ErrMalformed, whole: true},
		{name: "count beyond bytes", in: mutate(func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[headerEnd-4:], 1<<20)
			return b
		}), want: ErrMalformed, whole: true},
		{name: "count beyond limit", in: good, lim: codecLimits{maxMessages: 2}, want: ErrMalformed, whole: true},
		{name: "batch beyond limit", in: good, lim: codecLimits{maxBatchBytes: 100}, want: ErrMalformed, whole: true},
		{name: "node ID beyond limit", in: good, lim: codecLimits{maxString: 4}, want: ErrMalformed, whole: true},
		{name: "entries beyond limit", in: good, lim: codecLimits{maxEntries: 2}, want: ErrMalformed},
		{name: "voters beyond limit", in: good, lim: codecLimits{maxVoters: 2}, want: ErrMalformed},
		{name: "unknown flag", in: mutate(func(b []byte) []byte {
			b[headerEnd+4+recordFixed-5] = 0x80
			return b
		}), want: ErrMalformed},
	}
	for _, c := range cases {
		got, err := decodeBatch(c.in, c.lim)
		if c.whole {
			if !errors.Is(err, c.want) {
				t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
			}
			continue
		}
		if err != nil || got.skipped == 0 || !errors.Is(got.skipErr, c.want) {
			t.Errorf("%s: err = %v, skipped = %d (%v), want one record skipped", c.name, err, got.skipped, got.skipErr)
		}
	}
}

// TestDecodeAllocationIsBoundedByInput feeds headers that claim huge counts and lengths:
// the decoder must refuse them before allocating for them.
func TestDecodeAllocationIsBoundedByInput(t *testing.T) {
	var inputs [][]byte
	b := []byte{codecVersion, 1, 0, 'a', 1, 0, 'b', 0xff, 0xff, 0xff, 0xff}
	inputs = append(inputs, b)
	// One record claiming 2^32-1 entries, then one claiming 2^32-1 bytes of data.
	rec := make([]byte, recordFixed)
	rec[0] = byte(MsgAppend)
	binary.LittleEndian.PutUint32(rec[recordFixed-4:], 0xffffffff)
	one := append([]byte{codecVersion, 1, 0, 'a', 1, 0, 'b', 1, 0, 0, 0}, binary.LittleEndian.AppendUint32(nil, uint32(len(rec)))...)
	inputs = append(inputs, append(append([]byte(nil), one...), rec...))
	for _, in := range inputs {
		allocated := bytesAllocated(func() { _, _ = decodeBatch(in, codecLimits{}) })
		if allocated > 4096 {
			t.Errorf("decoding %d hostile bytes allocated %d bytes", len(in), allocated)
		}
	}
}

func bytesAllocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// FuzzDecodeBatch: any bytes decode to an error or to messages, never a panic or a hang,
// and never an allocation out of proportion to the input. What decodes cleanly re-encodes
// to the very same bytes: the format has one encoding per batch.
func FuzzDecodeBatch(f *testing.F) {
	for _, g := range goldenBatches() {
		f.Add(mustEncode(f, g.from, g.to, g.msgs))
	}
	lim := codecLimits{maxBatchBytes: 1 << 20}
	f.Fuzz(func(t *testing.T, in []byte) {
		var got decodedBatch
		var err error
		allocated := bytesAllocated(func() { got, err = decodeBatch(in, lim) })
		if allocated > uint64(16*len(in)+8192) {
			t.Fatalf("decoding %d bytes allocated %d bytes", len(in), allocated)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVersion) {
				t.Fatalf("error %v wraps neither ErrMalformed nor ErrVersion", err)
			}
			return
		}
		if got.skipped > 0 {
			if !errors.Is(got.skipErr, ErrMalformed) {
				t.Fatalf("skip error %v does not wrap ErrMalformed", got.skipErr)
			}
			return
		}
		re, err := appendBatch(nil, got.from, got.to, got.msgs)
		if err != nil {
			t.Fatalf("re-encoding a decoded batch: %v", err)
		}
		if !bytes.Equal(re, in) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", in, re)
		}
	})
}

func BenchmarkCodecEncode(b *testing.B) {
	msgs := benchMessages()
	buf, _ := appendBatch(nil, "n1", "n2", msgs)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf, _ = appendBatch(buf[:0], "n1", "n2", msgs)
	}
}

func BenchmarkCodecDecode(b *testing.B) {
	buf, _ := appendBatch(nil, "n1", "n2", benchMessages())
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := decodeBatch(buf, codecLimits{}); err != nil {
			b.Fatal(err)
		}
	}
}

// benchMessages is a typical busy batch: appends of 16 entries of 128 bytes on 8
// partitions, and heartbeats on 56 more.
func benchMessages() []Message {
	data := bytes.Repeat([]byte{'x'}, 128)
	var msgs []Message
	for p := uint32(0); p < 64; p++ {
		m := Message{Type: MsgHeartbeat, Partition: p, Term: 5, Commit: 1000, Context: 3}
		if p < 8 {
			m.Type, m.LogTerm, m.Index = MsgAppend, 5, 1000
			for i := uint64(0); i < 16; i++ {
				m.Entries = append(m.Entries, Entry{Term: 5, Index: 1001 + i, ID: i, Type: "SetValue", Data: data})
			}
		}
		msgs = append(msgs, m)
	}
	return msgs
}
