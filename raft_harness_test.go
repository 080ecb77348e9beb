package kommander

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// This file holds the test doubles the Raft core's tests share: an in-memory log storage and
// a small synchronous cluster that delivers messages in order, for the table and scenario
// tests. The randomized simulation (sim_test.go) has its own asynchronous network.

// memLog is an in-memory logStorage that keeps exactly what was saved, from offset+1 on
// (entries up to offset were compacted away; offsetTerm is the term at offset).
type memLog struct {
	ents       []Entry // ents[i].Index == offset+i+1
	offset     uint64
	offsetTerm uint64
	hs         HardState
	// conf is the configuration as of offset, once a compaction or a snapshot set it.
	conf *membership
}

// startConf returns the configuration the stored log starts from: its snapshot's, or boot.
func (m *memLog) startConf(boot membership) membership {
	if m.conf != nil {
		return m.conf.clone()
	}
	return boot
}

func (m *memLog) firstIndex() uint64 { return m.offset + 1 }
func (m *memLog) lastIndex() uint64  { return m.offset + uint64(len(m.ents)) }

func (m *memLog) term(i uint64) (uint64, error) {
	switch {
	case i < m.offset:
		return 0, ErrCompacted
	case i == m.offset:
		return m.offsetTerm, nil
	case i > m.lastIndex():
		return 0, ErrUnavailable
	}
	return m.ents[i-m.offset-1].Term, nil
}

func (m *memLog) entries(lo, hi, maxBytes uint64) ([]Entry, error) {
	if lo <= m.offset {
		return nil, ErrCompacted
	}
	if hi > m.lastIndex()+1 {
		return nil, ErrUnavailable
	}
	var size uint64
	n := lo
	for n < hi {
		size += m.ents[n-m.offset-1].size()
		if n > lo && size > maxBytes {
			break
		}
		n++
	}
	return m.ents[lo-m.offset-1 : n-m.offset-1 : n-m.offset-1], nil
}

// save persists a raftReady the way Storage.Save does: hard state and entries, replacing a
// conflicting suffix.
func (m *memLog) save(rd raftReady) {
	if rd.SaveHardState {
		m.hs = rd.HardState
	}
	if len(rd.Entries) == 0 {
		return
	}
	k := rd.Entries[0].Index
	if k > m.lastIndex()+1 || k <= m.offset {
		panic(fmt.Sprintf("memLog: save at %d outside [%d, %d]", k, m.offset+1, m.lastIndex()+1))
	}
	if keep := k - m.offset - 1; keep < uint64(len(m.ents)) {
		// A fresh array on truncation: slices handed out by entries stay unchanged.
		m.ents = m.ents[:keep:keep]
	}
	m.ents = append(m.ents, rd.Entries...)
}

// compact drops the entries up to index i, as a snapshot would allow.
func (m *memLog) compact(i uint64) {
	if i <= m.offset || i > m.lastIndex() {
		return
	}
	m.offsetTerm, _ = m.term(i)
	for _, e := range m.ents[:i-m.offset] {
		if e.Kind == entryConfig {
			c, err := decodeMembership(e.Data)
			if err != nil {
				panic(fmt.Sprintf("memLog: configuration entry %d: %v", e.Index, err))
			}
			m.conf = &c
		}
	}
	kept := m.ents[i-m.offset:]
	m.ents = append(make([]Entry, 0, len(kept)+2048), kept...) // a fresh array: see save
	m.offset = i
}

// snapshotChunk describes the snapshot at the compaction point, whole, with the
// configuration as of it (boot when no compaction set one).
func (m *memLog) snapshotChunk(boot membership) *snapshotChunk {
	c := m.startConf(boot)
	return &snapshotChunk{Index: m.offset, Term: m.offsetTerm, Voters: c.Voters, Learners: c.Learners, Done: true}
}

// install replaces the stored log with a snapshot's start.
func (m *memLog) install(s *snapshotMeta) {
	m.ents, m.offset, m.offsetTerm = nil, s.index, s.term
	m.conf = &membership{Voters: s.voters, Learners: s.learners}
}

// setLog replaces the stored log with entries of the given terms (index i+1 has terms[i]).
func (m *memLog) setLog(terms ...uint64) {
	m.ents = m.ents[:0]
	for i, t := range terms {
		m.ents = append(m.ents, Entry{Index: uint64(i + 1), Term: t, Data: []byte{byte(i)}})
	}
}

// testNode is one node of one group in the synchronous tests.
type testNode struct {
	id      string
	cfg     raftConfig
	log     *memLog
	r       *raft
	applied []Entry
	// snapshotsSent and installs count snapshot transfers out of and into this node.
	snapshotsSent, installs int
	// noSnapshotReport leaves the leader to learn of an install from the follower's
	// acknowledgement alone, as when the node's report is late.
	noSnapshotReport bool
	reads            []readState // every read the group released, in order
}

func testConfig(id string, voters []string) raftConfig {
	return raftConfig{
		id:             id,
		voters:         voters,
		electionTicks:  10,
		heartbeatTicks: 1,
		rand:           rand.New(rand.NewPCG(uint64(len(id)), uint64(id[len(id)-1]))),
	}
}

func newTestNode(t testing.TB, cfg raftConfig, log *memLog) *testNode {
	t.Helper()
	if log == nil {
		log = &memLog{}
	}
	n := &testNode{id: cfg.id, cfg: cfg, log: log}
	n.start(t)
	return n
}

// start (re)creates the raft from what was persisted, as after a crash.
func (n *testNode) start(t testing.TB) {
	t.Helper()
	c := n.cfg
	conf := n.log.startConf(membership{Voters: c.voters, Learners: c.learners})
	c.voters, c.learners = conf.Voters, conf.Learners
	c.storage = n.log
	c.hardState = n.log.hs
	c.applied = uint64(len(n.applied))
	r, err := newRaft(c)
	if err != nil {
		t.Fatalf("newRaft(%s): %v", n.id, err)
	}
	n.r = r
}

// flush runs raftReady rounds until there is nothing left to do, persisting and applying, and
// returns every message the rounds produced, in order.
func (n *testNode) flush() []Message {
	var out []Message
	for n.r.hasReady() {
		rd := n.r.ready()
		out = append(out, rd.Messages...)
		out = append(out, n.snapshotMessages(rd.SendSnapshots)...)
		if s := rd.InstallSnapshot; s != nil {
			n.installSnapshot(s)
		}
		n.log.save(rd)
		out = append(out, rd.MessagesAfterPersist...)
		n.applied = append(n.applied, rd.CommittedEntries...)
		n.reads = append(n.reads, rd.ReadStates...)
		n.r.advance(rd)
	}
	return out
}

// snapshotMessages turns the snapshot transfers a leader asks for into the one message each
// that carries the whole snapshot: the one at the leader's compaction point. The transfer
// counts as done at once; the in-order network delivers it before any later append.
func (n *testNode) snapshotMessages(to []string) []Message {
	var out []Message
	for _, id := range to {
		out = append(out, Message{Type: msgSnapshot, From: n.id, To: id, Term: n.r.term, Partition: n.r.partition,
			snapshot: n.log.snapshotChunk(membership{Voters: n.cfg.voters, Learners: n.cfg.learners})})
		n.snapshotsSent++
	}
	if !n.noSnapshotReport {
		for _, id := range to {
			n.r.reportSnapshot(id, n.log.offset, true)
		}
	}
	return out
}

// installSnapshot replaces the stored log and the applied entries with a snapshot's: the
// applied entries up to index become placeholders.
func (n *testNode) installSnapshot(s *snapshotMeta) {
	n.log.install(s)
	n.applied = n.applied[:0:0]
	for i := uint64(1); i <= s.index; i++ {
		n.applied = append(n.applied, Entry{Index: i, Type: "snapshot"})
	}
	n.installs++
}

// stepFlush steps m and returns the messages that result.
func (n *testNode) stepFlush(t testing.TB, m Message) []Message {
	t.Helper()
	if err := n.r.step(m); err != nil {
		t.Fatalf("%s: step %v: %v", n.id, m.Type, err)
	}
	return n.flush()
}

// testCluster is a group of testNodes over a network that delivers in order, except to and
// from nodes that are down or cut off.
type testCluster struct {
	t     testing.TB
	ids   []string
	nodes map[string]*testNode
	queue []Message
	down  map[string]bool
	cut   map[[2]string]bool // from, to
}

func newTestCluster(t testing.TB, n int, opt func(*raftConfig)) *testCluster {
	t.Helper()
	c := &testCluster{t: t, nodes: map[string]*testNode{}, down: map[string]bool{}, cut: map[[2]string]bool{}}
	for i := range n {
		c.ids = append(c.ids, fmt.Sprintf("n%d", i+1))
	}
	for i, id := range c.ids {
		cfg := testConfig(id, c.ids)
		cfg.rand = rand.New(rand.NewPCG(uint64(i+1), 7))
		cfg.checkQuorum, cfg.preVote = true, true
		if opt != nil {
			opt(&cfg)
		}
		c.nodes[id] = newTestNode(t, cfg, nil)
	}
	return c
}

func (c *testCluster) node(id string) *testNode { return c.nodes[id] }

func (c *testCluster) isolate(id string) {
	for _, o := range c.ids {
		if o != id {
			c.cut[[2]string{id, o}] = true
			c.cut[[2]string{o, id}] = true
		}
	}
}

func (c *testCluster) heal() { c.cut = map[[2]string]bool{} }

// settle flushes every node and delivers messages until none are left.
func (c *testCluster) settle() {
	for range 10000 {
		for _, id := range c.ids {
			if !c.down[id] {
				c.queue = append(c.queue, c.nodes[id].flush()...)
			}
		}
		if len(c.queue) == 0 {
			return
		}
		q := c.queue
		c.queue = nil
		for _, m := range q {
			if c.nodes[m.To] == nil || c.down[m.To] || c.down[m.From] || c.cut[[2]string{m.From, m.To}] {
				continue
			}
			if err := c.nodes[m.To].r.step(m); err != nil {
				c.t.Fatalf("%s: step %v from %s: %v", m.To, m.Type, m.From, err)
			}
		}
	}
	c.t.Fatalf("cluster did not settle")
}

// tick ticks every live node once and settles.
func (c *testCluster) tick() {
	for _, id := range c.ids {
		if !c.down[id] {
			c.nodes[id].r.tick()
		}
	}
	c.settle()
}

// follower returns the first node in id order other than l.
func (c *testCluster) follower(l *testNode) *testNode {
	for _, id := range c.ids {
		if id != l.id {
			return c.nodes[id]
		}
	}
	return nil
}

// leader returns the live leader of the highest term, or nil.
func (c *testCluster) leader() *testNode {
	var best *testNode
	for _, id := range c.ids {
		n := c.nodes[id]
		if !c.down[id] && n.r.role == roleLeader && (best == nil || n.r.term > best.r.term) {
			best = n
		}
	}
	return best
}

// elect ticks until some node leads, failing after maxTicks.
func (c *testCluster) elect(maxTicks int) *testNode {
	c.t.Helper()
	for range maxTicks {
		c.tick()
		if l := c.leader(); l != nil {
			return l
		}
	}
	c.t.Fatalf("no leader after %d ticks", maxTicks)
	return nil
}

// campaign makes id time out at once and settles.
func (c *testCluster) campaign(id string) {
	n := c.nodes[id]
	for n.r.role != roleLeader && n.r.role != roleCandidate && n.r.role != rolePreCandidate {
		n.r.tick()
	}
	c.settle()
}

// propose proposes one normal entry on n and settles.
func (c *testCluster) propose(n *testNode, data string) uint64 {
	c.t.Helper()
	idx, _, err := n.r.propose([]Entry{{Type: "set", Data: []byte(data)}})
	if err != nil {
		c.t.Fatalf("%s: propose: %v", n.id, err)
	}
	c.settle()
	return idx
}
