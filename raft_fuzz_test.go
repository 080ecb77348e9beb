package kommander

import (
	"encoding/binary"
	"math"
	"testing"
)

// FuzzRaftStep drives a running 3-node group (a leader elected, entries committed; the first
// input byte turns PreVote off with bit 0 and CheckQuorum off with bit 1) with
// arbitrary message sequences decoded from the input, mixed with the group's own traffic,
// ticks, proposals and asynchronous persistence, and checks after every operation that no
// node panics and that each node's state stays within what it can prove (S31): commit within
// the log, every progress within the leader's log, terms that never decrease (in memory,
// and as saved across crashes), committed entries that never change, and a log whose
// stable and unstable parts agree with storage.
//
// Replay a crasher with: go test -run 'FuzzRaftStep/<name>' .
func FuzzRaftStep(f *testing.F) {
	// The seed corpus is in testdata/fuzz/FuzzRaftStep. Its file forged-rejection-past-the-log
	// is the forged packet of S31: config 0, then fuzzOpForge to fuzzToLeader of an
	// MsgAppendResp from fuzzFromOther with the leader's term (16), Index 2^64-2 (0x83),
	// LogTerm the leader's term (16), Commit 0 (0x40), hint 2^64-1 (0x82), Context 0 (0x40)
	// and Reject (flags 1); then the leader's raftReady is handed out and persisted.
	f.Fuzz(func(t *testing.T, data []byte) {
		in := fuzzInput{data: data}
		g := newFuzzGroup(t, in.byte())
		for op := 0; !in.done() && op < 400; op++ {
			g.do(&in)
			g.check()
		}
	})
}

// Operations of a fuzz input: one byte for the operation, one for the node it touches
// (0..2, or fuzzToLeader for the leader of the highest term), then the operation's bytes.
const (
	fuzzOpForge   = iota // a message: type, from, then term, index, logTerm, commit, hint, context (see num), flags, entries
	fuzzOpTick           // tick the node
	fuzzOpDeliver        // deliver the queued message at (next byte mod queue length)
	fuzzOpReady          // hand out a raftReady: its Messages are queued, the rest waits for persist
	fuzzOpPersist        // persist the outstanding raftReady, queue its after-persist messages, advance
	fuzzOpPropose        // propose an entry on the node; the next byte is its data
	fuzzOpCrash          // crash the node and restart it from what it saved
	fuzzOpCount

	fuzzToLeader  = 3
	fuzzFromOther = 5 // from: 0..2 a member, 3 a non-member, 4 empty, 5 a member other than the target
)

type fuzzInput struct {
	data []byte
	pos  int
}

func (in *fuzzInput) done() bool { return in.pos >= len(in.data) }

func (in *fuzzInput) byte() byte {
	if in.done() {
		return 0
	}
	b := in.data[in.pos]
	in.pos++
	return b
}

// num decodes a number near base (top bits 00: base-16..base+15, wrapping), small (01:
// 0..63), extreme (10: one of fuzzExtremes) or raw (11: the next 8 bytes).
func (in *fuzzInput) num(base uint64) uint64 {
	b := in.byte()
	switch b >> 6 {
	case 0:
		return base + uint64(b&31) - 16
	case 1:
		return uint64(b & 63)
	case 2:
		return fuzzExtremes[b&7]
	}
	var raw [8]byte
	for i := range raw {
		raw[i] = in.byte()
	}
	return binary.LittleEndian.Uint64(raw[:])
}

var fuzzExtremes = [8]uint64{0, 1, math.MaxUint64, math.MaxUint64 - 1, math.MaxUint64 / 2, 1 << 32, 1 << 63, 2}

// fuzzGroup is the running group under test, with asynchronous persistence per node and a
// record of what each node has committed.
type fuzzGroup struct {
	t         *testing.T
	nodes     []*testNode
	pending   []bool
	rds       []raftReady
	queue     []Message
	terms     []uint64
	saved     []uint64 // per node: the term of its saved hard state
	commits   []uint64
	committed []map[uint64]uint64 // per node: index -> term of a committed entry
}

func newFuzzGroup(t *testing.T, config byte) *fuzzGroup {
	c := newTestCluster(t, 3, func(c *raftConfig) {
		c.preVote, c.checkQuorum = config&1 == 0, config&2 == 0
	})
	l := c.elect(200)
	c.propose(l, "a")
	c.propose(l, "b")
	g := &fuzzGroup{t: t, pending: make([]bool, 3), rds: make([]raftReady, 3),
		terms: make([]uint64, 3), saved: make([]uint64, 3), commits: make([]uint64, 3)}
	for _, id := range c.ids {
		g.nodes = append(g.nodes, c.node(id))
		g.committed = append(g.committed, map[uint64]uint64{})
	}
	g.check()
	return g
}

func (g *fuzzGroup) target(b byte) int {
	i := int(b) % 4
	if i == fuzzToLeader {
		i = 0
		for j, n := range g.nodes {
			if n.r.role == roleLeader && (g.nodes[i].r.role != roleLeader || n.r.term > g.nodes[i].r.term) {
				i = j
			}
		}
	}
	return i
}

func (g *fuzzGroup) do(in *fuzzInput) {
	op := in.byte() % fuzzOpCount
	i := g.target(in.byte())
	n := g.nodes[i]
	switch op {
	case fuzzOpForge:
		g.queue = append(g.queue, g.forge(in, i))
		g.deliver(len(g.queue) - 1)
	case fuzzOpTick:
		n.r.tick()
	case fuzzOpDeliver:
		if len(g.queue) > 0 {
			g.deliver(int(in.byte()) % len(g.queue))
		}
	case fuzzOpReady:
		if !g.pending[i] && n.r.hasReady() {
			g.rds[i], g.pending[i] = n.r.ready(), true
			g.queue = append(g.queue, g.rds[i].Messages...)
		}
	case fuzzOpPersist:
		if g.pending[i] {
			rd := g.rds[i]
			n.log.save(rd)
			g.queue = append(g.queue, rd.MessagesAfterPersist...)
			n.applied = append(n.applied, rd.CommittedEntries...)
			g.pending[i], g.rds[i] = false, raftReady{}
			n.r.advance(rd)
		}
	case fuzzOpPropose:
		_, _, _ = n.r.propose([]Entry{{Type: "set", Data: []byte{in.byte()}}})
	case fuzzOpCrash:
		g.pending[i], g.rds[i] = false, raftReady{} // the outstanding raftReady is lost
		n.start(g.t)
		// What the node knew in memory only is gone: its term and commit start again from
		// what it saved, and only entries committed as far as that are held to never change.
		g.terms[i], g.commits[i] = n.r.term, n.r.log.committed
		for idx := range g.committed[i] {
			if idx > n.r.log.committed {
				delete(g.committed[i], idx)
			}
		}
	}
}

// forge decodes a message to node i.
func (g *fuzzGroup) forge(in *fuzzInput, i int) Message {
	r := g.nodes[i].r
	typ := MessageType(in.byte() % (byte(msgTypeCount) + 1))
	var from string
	switch k := int(in.byte()) % 6; {
	case k < 3:
		from = g.nodes[k].id
	case k == 3:
		from = "n9"
	case k == fuzzFromOther:
		from = g.nodes[(i+1)%3].id
	}
	var seq uint64
	for _, pr := range r.tracker.prs {
		seq = max(seq, pr.seq)
	}
	m := Message{Type: typ, From: from, To: r.id, Term: in.num(r.term), Index: in.num(r.log.lastIndex()),
		LogTerm: in.num(r.term), Commit: in.num(r.log.committed), RejectHint: in.num(r.log.lastIndex()),
		Context: in.num(seq)}
	flags := in.byte()
	m.Reject = flags&1 != 0
	if flags&16 != 0 {
		m.Partition = 1
	}
	for j := range uint64(flags>>1) & 3 {
		e := Entry{Index: m.Index + 1 + j, Term: in.num(m.Term), Kind: EntryKind(flags>>5) % 4}
		if flags&8 != 0 {
			e.Index = in.num(m.Index)
		}
		m.Entries = append(m.Entries, e)
	}
	return m
}

// deliver steps the queued message at k into its destination; refusals are fine.
func (g *fuzzGroup) deliver(k int) {
	m := g.queue[k]
	g.queue = append(g.queue[:k], g.queue[k+1:]...)
	for _, n := range g.nodes {
		if n.id == m.To {
			_ = n.r.step(m)
		}
	}
}

// check verifies every node's invariants.
func (g *fuzzGroup) check() {
	t := g.t
	t.Helper()
	for i, n := range g.nodes {
		r, l := n.r, &n.r.log
		last := l.lastIndex()
		if l.readErr != nil {
			t.Fatalf("%s: storage read error: %v", n.id, l.readErr)
		}
		if r.term < g.terms[i] {
			t.Fatalf("%s: term went back from %d to %d", n.id, g.terms[i], r.term)
		}
		g.terms[i] = r.term
		if n.log.hs.Term < g.saved[i] || n.log.hs.Term > r.term {
			t.Fatalf("%s: saved term %d, was %d, in memory %d", n.id, n.log.hs.Term, g.saved[i], r.term)
		}
		g.saved[i] = n.log.hs.Term
		if l.committed > last || l.committed < g.commits[i] {
			t.Fatalf("%s: commit %d (was %d) outside the log [.., %d]", n.id, l.committed, g.commits[i], last)
		}
		for idx := g.commits[i] + 1; idx <= l.committed; idx++ {
			tm, err := l.term(idx)
			if err != nil {
				t.Fatalf("%s: committed entry %d unreadable: %v", n.id, idx, err)
			}
			g.committed[i][idx] = tm
		}
		g.commits[i] = l.committed
		for idx, want := range g.committed[i] {
			if tm, err := l.term(idx); err != nil || tm != want {
				t.Fatalf("%s: committed entry %d of term %d now has term %d (%v)", n.id, idx, want, tm, err)
			}
		}
		if !(l.applied <= l.applying && l.applying <= l.committed && l.applying <= l.stable) {
			t.Fatalf("%s: applied %d applying %d committed %d stable %d", n.id, l.applied, l.applying, l.committed, l.stable)
		}
		if !(l.first <= l.stable+1 && l.stable <= l.handedOut && l.handedOut <= last) {
			t.Fatalf("%s: first %d stable %d handedOut %d last %d", n.id, l.first, l.stable, l.handedOut, last)
		}
		var bytes, unstable uint64
		for k := range l.ents {
			e := &l.ents[k]
			if e.Index != l.first+uint64(k) {
				t.Fatalf("%s: entry at position %d has index %d, first %d", n.id, k, e.Index, l.first)
			}
			bytes += e.size()
			if e.Index > l.stable {
				unstable += e.size()
			} else if tm, err := n.log.term(e.Index); err != nil || tm != e.Term {
				t.Fatalf("%s: stable entry %d of term %d is stored with term %d (%v)", n.id, e.Index, e.Term, tm, err)
			}
		}
		if bytes != l.bytes || unstable != l.unstableBytes {
			t.Fatalf("%s: bytes %d unstable %d, counted %d and %d", n.id, l.bytes, l.unstableBytes, bytes, unstable)
		}
		if l.stable > n.log.lastIndex() {
			t.Fatalf("%s: stable %d past the stored last index %d", n.id, l.stable, n.log.lastIndex())
		}
		if r.role != roleLeader {
			continue
		}
		for _, pr := range r.tracker.prs {
			if pr == r.tracker.self {
				if pr.match > l.stable {
					t.Fatalf("%s: own match %d past stable %d", n.id, pr.match, l.stable)
				}
				continue
			}
			if !(pr.match < pr.next && pr.next <= last+1) {
				t.Fatalf("%s: progress of %s: match %d next %d, last index %d", n.id, pr.id, pr.match, pr.next, last)
			}
		}
	}
}
