package kommander

// Forming a new cluster from discovery (Config.BootstrapExpect): the agreement that lets
// brand-new nodes that only see each other through discovery start as one cluster, and
// never as two.
//
// Discovery cannot decide this alone: views differ from node to node and change. So the
// new nodes agree over the transport, by promises:
//
//   - A node promises at most one candidate set at a time: the BootstrapExpect smallest
//     node IDs it discovered, when it is among them. The promise goes to the set's
//     coordinator, its smallest ID, and is recorded durably (with a number, the node's
//     epoch, one higher for every promise it makes) before it is sent.
//   - The coordinator forms the set only when it holds promises for that very set from
//     every member, its own among them; it records that durably, then tells the members,
//     which form the set only if they still hold that promise. The set's members become
//     the voters of every partition.
//   - A promise is released only by the coordinator that holds it, and only after the
//     coordinator recorded durably that it will never count that promise (that epoch of
//     that node): it releases promises for sets other than its own at once, and gives up
//     its own set (releasing itself and the promises it counted) when the set does not
//     complete within a few intervals. A formed coordinator never releases a promise it
//     counted.
//
// Safety: suppose two different sets S1 and S2 formed. Every formed set was promised by
// all its members, so a node X in both (there is one: each set holds BootstrapExpect
// nodes, more than half of the nodes that may start together) promised S1 at some epoch
// e1 and S2 at e2 ≠ e1, say e1 < e2. X promised e2 only after giving up e1, which it does
// only when e1's coordinator releases it; the coordinator releases only after it recorded
// that it never counts e1 again, and never releases an epoch it counted for a set it
// formed. (A coordinator gives up its own promise the same way, and its own promise
// counts only while it holds it: giving its set up clears the count.) So e1 was never
// counted and S1 was not formed with it: a contradiction. Lost,
// duplicated and reordered messages change nothing here (every decision rests on the
// durable records of the sender, and a stale message names an epoch already settled), and
// neither does a crash (a node restarts with what it recorded: its promise, or its set).
//
// Hence BootstrapExpect must be more than half of the nodes that may start together as new
// nodes of the cluster: with 5 brand-new nodes and BootstrapExpect 2, {a,b} and {c,d}
// could both form.
//
// Bootstrap messages are hostile input: they count only from IDs discovery shows (or
// members of the formed set), carry at most one set of exactly BootstrapExpect IDs, and a
// malformed one is dropped. Loop only.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
)

// bootstrapFileName is the file in the data directory that holds the bootstrap state.
const bootstrapFileName = "bootstrap.json"

// Timing of the bootstrap, in bootstrap intervals of one election timeout each.
const (
	bootstrapPatienceMin = 4 // a coordinator gives up its set after 4..8 intervals
	bootstrapPatienceMax = 8
)

// bootstrapState is what a node records durably while it bootstraps.
type bootstrapState struct {
	// Epoch numbers this node's promises; the promise held, if any, has this epoch.
	Epoch uint64 `json:"epoch"`
	// Coord and Set are the promise held: Set (sorted) to its coordinator Coord.
	Coord string   `json:"coordinator,omitempty"`
	Set   []string `json:"set,omitempty"`
	// Formed says Set formed: it is the cluster's bootstrap voter set, for good.
	Formed bool `json:"formed,omitempty"`
	// Addrs are the members' addresses as discovered when the set formed, or, for a node
	// that learned the cluster formed without it, the nodes discovered then.
	Addrs map[string]string `json:"addrs,omitempty"`
	// Counted holds, once this node formed a set as its coordinator, the epoch of each
	// member's promise it counted: a member that asks again is told of the set only for
	// that epoch.
	Counted map[string]uint64 `json:"counted,omitempty"`
	// Released holds, per node, the highest epoch of its promises to this node that this
	// node released: those are never counted again. Only discovered nodes have entries,
	// and they go once the node formed.
	Released map[string]uint64 `json:"released,omitempty"`
	// Exists says this node learned that a cluster formed without it: it waits to be
	// added and never bootstraps.
	Exists bool `json:"exists,omitempty"`
	// Incarnation is drawn when the node first starts, so that it announces one
	// incarnation from its first start on; its data directory's identity takes it.
	Incarnation uint64 `json:"incarnation,omitempty"`
}

func (s bootstrapState) clone() bootstrapState {
	s.Set = slices.Clone(s.Set)
	s.Addrs = cloneMap(s.Addrs)
	s.Counted = cloneMap(s.Counted)
	s.Released = cloneMap(s.Released)
	return s
}

func cloneMap[V any](m map[string]V) map[string]V {
	if m == nil {
		return nil
	}
	c := make(map[string]V, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// bootstrapStore keeps a node's bootstrapState; save returns once it is durable.
type bootstrapStore interface {
	load() (bootstrapState, error)
	save(bootstrapState) error
}

// fileBootstrapStore keeps the state in the data directory.
type fileBootstrapStore struct{ dir string }

func (f fileBootstrapStore) load() (bootstrapState, error) {
	var s bootstrapState
	path := filepath.Join(f.dir, bootstrapFileName)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err == nil {
		err = decodeStrict(b, &s)
	}
	if err != nil {
		return s, fmt.Errorf("kommander: read %s: %w", path, err)
	}
	return s, nil
}

func (f fileBootstrapStore) save(s bootstrapState) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(f.dir, bootstrapFileName, b)
}

// memoryBootstrapStore keeps the state in memory, for tests: it survives the node.
type memoryBootstrapStore struct {
	mu sync.Mutex
	s  bootstrapState
}

func (m *memoryBootstrapStore) load() (bootstrapState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.s.clone(), nil
}

func (m *memoryBootstrapStore) save(s bootstrapState) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.s = s.clone()
	return nil
}

// bootstrapper runs the agreement for one node. Loop only.
type bootstrapper struct {
	self     string
	expect   int
	store    bootstrapStore
	st       bootstrapState
	interval uint64 // ticks between two rounds of sends
	rand     *rand.Rand

	// secondPromise plants the bug the agreement exists to prevent, for a test to catch:
	// a node that holds a promise makes another when its candidate set changes.
	secondPromise bool

	view     map[string]string // discovered ID -> address, this node included
	got      map[string]uint64 // as coordinator of its own set: epochs promised for it
	since    uint64            // tick at which the own set was promised
	patience uint64            // ticks after which a coordinator gives up its set
	nextSend uint64
	out      []Message
	rlog     *rateLog
}

func newBootstrapper(self string, expect int, store bootstrapStore, st bootstrapState, interval int, seed uint64) *bootstrapper {
	b := &bootstrapper{self: self, expect: expect, store: store, st: st, interval: uint64(max(interval, 1)),
		rand: rand.New(rand.NewPCG(seed, 0xb007)), view: map[string]string{}, got: map[string]uint64{}}
	b.newPatience()
	return b
}

func (b *bootstrapper) newPatience() {
	b.patience = b.interval * uint64(bootstrapPatienceMin+b.rand.IntN(bootstrapPatienceMax-bootstrapPatienceMin))
}

// formed reports whether the node's set formed.
func (b *bootstrapper) formed() bool { return b.st.Formed }

// joining reports whether the node learned that the cluster formed without it: it runs
// as a new node waiting to be added.
func (b *bootstrapper) joining() bool { return !b.st.Formed && b.st.Exists }

// settled reports whether the agreement is over for this node: formed or joining.
func (b *bootstrapper) settled() bool { return b.st.Formed || b.st.Exists }

// setView records what discovery shows now.
func (b *bootstrapper) setView(peers []Peer) {
	clear(b.view)
	for _, p := range peers {
		if p.ID != "" && len(p.ID) <= maxNameBytes {
			b.view[p.ID] = p.Addr
		}
	}
}

// candidate returns the set this node would promise: the expect smallest IDs discovered
// (itself included), when it is among them.
func (b *bootstrapper) candidate() []string {
	ids := make([]string, 0, len(b.view)+1)
	for id := range b.view {
		if id != b.self {
			ids = append(ids, id)
		}
	}
	ids = append(ids, b.self)
	sort.Strings(ids)
	if len(ids) < b.expect {
		return nil
	}
	ids = ids[:b.expect]
	if !slices.Contains(ids, b.self) {
		return nil
	}
	return ids
}

func (b *bootstrapper) save(s bootstrapState) error {
	if err := b.store.save(s); err != nil {
		return fmt.Errorf("record the bootstrap state: %w", err)
	}
	b.st = s
	return nil
}

// tick moves time to now; every interval the node promises, asks again, or gives up.
func (b *bootstrapper) tick(now uint64) error {
	if b.st.Formed || now < b.nextSend {
		return nil
	}
	b.nextSend = now + b.interval
	switch {
	case b.st.Coord == "" && b.st.Exists:
		return nil // waits to be added
	case b.st.Coord == "":
		cand := b.candidate()
		if cand == nil {
			// Not among the smallest: ask them whether a cluster formed already.
			for id := range b.view {
				if id != b.self {
					b.send(Message{Type: MsgBootstrap, To: id})
				}
			}
			return nil
		}
		return b.promise(now, cand)
	case b.secondPromise && b.candidate() != nil && !slices.Equal(b.candidate(), b.st.Set):
		return b.promise(now, b.candidate())
	case b.st.Coord != b.self:
		b.sendPromise() // lost, or the coordinator restarted: ask again
	case now-b.since >= b.patience:
		return b.giveUp(false)
	default:
		// Ask the members that have not promised whether they formed a cluster without
		// this node: then its set can never form.
		for _, id := range b.st.Set {
			if _, ok := b.got[id]; !ok {
				b.send(Message{Type: MsgBootstrap, To: id})
			}
		}
	}
	return nil
}

// promise records a promise of cand to its coordinator, then sends it.
func (b *bootstrapper) promise(now uint64, cand []string) error {
	s := b.st.clone()
	s.Epoch++
	s.Coord, s.Set = cand[0], cand
	if err := b.save(s); err != nil {
		return err
	}
	b.since = now
	clear(b.got)
	if s.Coord == b.self {
		b.got[b.self] = s.Epoch
		return b.maybeForm()
	}
	b.sendPromise()
	return nil
}

func (b *bootstrapper) sendPromise() {
	b.send(Message{Type: MsgBootstrap, To: b.st.Coord, Context: b.st.Epoch, Entries: []Entry{{Data: encodeIDSet(b.st.Set)}}})
}

// giveUp abandons the coordinator's own set: it records that none of the promises it
// counted will ever count again, then releases them. exists records that a cluster formed
// without this node.
func (b *bootstrapper) giveUp(exists bool) error {
	s := b.st.clone()
	if exists && !s.Exists {
		s.Exists, s.Addrs = true, b.addrsOf(b.others())
	}
	if s.Released == nil {
		s.Released = map[string]uint64{}
	}
	for id, e := range b.got {
		if id != b.self {
			s.Released[id] = max(s.Released[id], e)
		}
	}
	s.Coord, s.Set = "", nil
	if err := b.save(s); err != nil {
		return err
	}
	for id, e := range b.got {
		if id != b.self {
			b.send(Message{Type: MsgBootstrapResp, To: id, Context: e, Reject: true})
		}
	}
	clear(b.got)
	b.newPatience()
	return nil
}

// maybeForm forms the coordinator's own set once every member promised it.
func (b *bootstrapper) maybeForm() error {
	if b.st.Formed || b.st.Coord != b.self {
		return nil
	}
	for _, id := range b.st.Set {
		if _, ok := b.got[id]; !ok {
			return nil
		}
	}
	s := b.st.clone()
	s.Formed, s.Counted, s.Addrs = true, cloneMap(b.got), b.addrsOf(s.Set)
	s.Released = nil // a formed node counts nothing more
	if err := b.save(s); err != nil {
		return err
	}
	for _, id := range s.Set {
		if id != b.self {
			b.send(Message{Type: MsgBootstrapResp, To: id, Context: s.Counted[id], Entries: []Entry{{Data: encodeIDSet(s.Set)}}})
		}
	}
	return nil
}

// others returns the IDs discovered, but this node's.
func (b *bootstrapper) others() []string {
	ids := make([]string, 0, len(b.view))
	for id := range b.view {
		if id != b.self {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

func (b *bootstrapper) addrsOf(ids []string) map[string]string {
	m := make(map[string]string, len(ids))
	for _, id := range ids {
		if a, ok := b.view[id]; ok && a != "" {
			m[id] = a
		}
	}
	return m
}

func (b *bootstrapper) send(m Message) {
	m.From = b.self
	m.Term = uint64(b.expect)
	b.out = append(b.out, m)
}

// flush sends what the bootstrapper queued, one Send per message: there are few. The
// transport knows the discovered nodes (followView).
func (b *bootstrapper) flush(t Transport) {
	for _, m := range b.out {
		t.Send(m.To, []Message{m})
	}
	b.out = b.out[:0]
}

// errBootstrapMessage reports a bootstrap message that is malformed or not for us.
var errBootstrapMessage = errors.New("kommander: bad bootstrap message")

// receive takes a bootstrap message. A malformed one or one from a node discovery does
// not show is dropped with an error for the caller to count; only a failure to record the
// state is fatal (returned wrapped in errBootstrapSave).
func (b *bootstrapper) receive(m *Message) error {
	_, discovered := b.view[m.From]
	if !discovered && !(b.st.Formed && slices.Contains(b.st.Set, m.From)) {
		return fmt.Errorf("%w: %s from %q, which discovery does not show", errBootstrapMessage, m.Type, clip(m.From))
	}
	if m.Term != uint64(b.expect) {
		return fmt.Errorf("%w: %q bootstraps %d nodes, this node %d", errBootstrapMessage, clip(m.From), m.Term, b.expect)
	}
	var set []string
	if len(m.Entries) > 1 {
		return fmt.Errorf("%w: %d entries", errBootstrapMessage, len(m.Entries))
	}
	if len(m.Entries) == 1 {
		var err error
		if set, err = decodeIDSet(m.Entries[0].Data, b.expect); err != nil {
			return fmt.Errorf("%w: %v", errBootstrapMessage, err)
		}
	}
	if m.Type == MsgBootstrap {
		return b.promised(m, set)
	}
	return b.answered(m, set)
}

// promised takes a promise (or, with epoch 0, a question) from m.From.
func (b *bootstrapper) promised(m *Message, set []string) error {
	x, e := m.From, m.Context
	release := Message{Type: MsgBootstrapResp, To: x, Context: e, Reject: true, Index: b.existsFlag()}
	if e == 0 {
		b.send(release)
		return nil
	}
	if len(set) != b.expect || set[0] != b.self || !slices.Contains(set, x) {
		return fmt.Errorf("%w: promise from %q of a set %v this node does not coordinate", errBootstrapMessage, clip(x), set)
	}
	switch {
	case b.st.Formed:
		if b.st.Coord == b.self && slices.Equal(set, b.st.Set) && b.st.Counted[x] == e {
			b.send(Message{Type: MsgBootstrapResp, To: x, Context: e, Entries: []Entry{{Data: encodeIDSet(set)}}})
			return nil
		}
		b.send(release) // never counted, and a formed node forms nothing else
		return nil
	case b.st.Exists && b.st.Coord == "":
		b.send(release) // it never promises again, so it never counts: nothing to record
		return nil
	case e <= b.st.Released[x] || e < b.got[x]:
		if e <= b.st.Released[x] {
			b.send(release)
		}
		return nil
	case b.st.Coord == b.self && slices.Equal(set, b.st.Set):
		b.got[x] = e
		return b.maybeForm()
	}
	s := b.st.clone()
	if s.Released == nil {
		s.Released = map[string]uint64{}
	}
	s.Released[x] = e
	if err := b.save(s); err != nil {
		return err
	}
	b.send(release)
	return nil
}

// existsFlag is 1 when this node knows that a cluster formed: its own, or one it heard of.
func (b *bootstrapper) existsFlag() uint64 {
	if b.st.Formed || b.st.Exists {
		return 1
	}
	return 0
}

// answered takes a coordinator's answer: the set formed (set non-empty, not Reject), or
// the promise is released (Reject; Index 1 when the sender knows a cluster formed).
func (b *bootstrapper) answered(m *Message, set []string) error {
	c, e := m.From, m.Context
	if m.Reject && m.Index == 1 && e == 0 && !b.st.Formed && b.st.Coord == b.self && slices.Contains(b.st.Set, c) {
		return b.giveUp(true) // a member of this node's set formed another: it never will
	}
	holds := !b.st.Formed && b.st.Coord == c && b.st.Epoch == e && e != 0
	s := b.st.clone()
	if !m.Reject {
		if !holds || !slices.Equal(set, b.st.Set) {
			return nil // an answer to a promise given up, or duplicated
		}
		s.Formed, s.Addrs, s.Released = true, b.addrsOf(s.Set), nil
		return b.save(s)
	}
	changed := false
	if holds {
		s.Coord, s.Set = "", nil
		changed = true
	}
	if m.Index == 1 && s.Coord == "" && !s.Exists {
		s.Exists, s.Addrs = true, b.addrsOf(b.others())
		changed = true
	}
	if !changed {
		return nil
	}
	return b.save(s)
}

// encodeIDSet encodes sorted IDs: each as a u16 length and its bytes.
func encodeIDSet(ids []string) []byte {
	var b []byte
	for _, id := range ids {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(id)))
		b = append(b, id...)
	}
	return b
}

// decodeIDSet decodes at most max IDs, which must be sorted, distinct and of 1 to
// maxNameBytes bytes each.
func decodeIDSet(b []byte, max int) ([]string, error) {
	var ids []string
	for len(b) > 0 {
		if len(ids) == max {
			return nil, fmt.Errorf("more than %d IDs", max)
		}
		if len(b) < 2 {
			return nil, errors.New("truncated ID set")
		}
		n := int(binary.LittleEndian.Uint16(b))
		if n == 0 || n > maxNameBytes || len(b) < 2+n {
			return nil, errors.New("ID of a bad length")
		}
		id := string(b[2 : 2+n])
		if len(ids) > 0 && id <= ids[len(ids)-1] {
			return nil, errors.New("IDs not sorted and distinct")
		}
		ids = append(ids, id)
		b = b[2+n:]
	}
	return ids, nil
}

// The node's side of the bootstrap.

// initialPeers returns the members the node starts with: Config's static ones, or with
// BootstrapExpect those of the set it formed. A brand-new node that still has to bootstrap
// gets none, and n.boot runs the agreement.
func (n *Node) initialPeers() ([]Peer, error) {
	cfg := n.cfg
	if cfg.BootstrapExpect == 0 {
		peers, err := cfg.Discovery.Peers(context.Background())
		if err != nil {
			return nil, fmt.Errorf("kommander: node %s: discover peers: %w", cfg.NodeID, err)
		}
		if err := validatePeers(cfg.NodeID, peers); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
		}
		out := make([]Peer, len(peers))
		for i, p := range peers {
			if p.Addr == "" {
				p.Addr = p.ID
			}
			out[i] = p
		}
		return out, nil
	}
	store := cfg.bootstrapStore
	if store == nil {
		store = fileBootstrapStore{dir: cfg.DataDir}
	}
	st, err := store.load()
	if err != nil {
		return nil, fmt.Errorf("kommander: node %s: %w", cfg.NodeID, err)
	}
	if !st.Formed && cfg.DataDir != "" {
		// A data directory that holds a configuration, whoever wrote it, never
		// bootstraps again.
		if id, ok, err := loadIdentity(cfg.DataDir); err != nil {
			return nil, err
		} else if ok && len(id.Members) > 0 {
			st.Formed, st.Set, st.Coord = true, id.Members, ""
		}
	}
	if st.Incarnation == 0 {
		if st.Incarnation, err = randomIncarnation(); err != nil {
			return nil, err
		}
		if err := store.save(st); err != nil {
			return nil, fmt.Errorf("kommander: node %s: record the bootstrap state: %w", cfg.NodeID, err)
		}
	}
	n.boot = newBootstrapper(cfg.NodeID, cfg.BootstrapExpect, store, st, n.elTicks, n.rand.Uint64())
	n.boot.rlog = newRateLog(n.log, cfg.Clock, transportLogInterval)
	if !st.Formed {
		return nil, nil
	}
	return st.members(), nil
}

// members returns the formed set with the addresses known for it.
func (s bootstrapState) members() []Peer {
	peers := make([]Peer, 0, len(s.Set))
	for _, id := range s.Set {
		peers = append(peers, Peer{ID: id, Addr: s.Addrs[id]})
	}
	return peers
}

// bootPass is a loop pass of a node that has not formed its cluster yet: its partitions
// take no messages and no ticks (they have no voters yet); bootstrap messages go to the
// agreement, which ticks instead.
func (n *Node) bootPass() bool {
	existed := n.boot.st.Exists
	defer func() {
		if !existed && n.boot.st.Exists {
			n.log.Info("bootstrap: the cluster formed without this node; it waits to be added", "discovered", n.boot.others())
		}
	}()
	msgs, ticks, _ := n.in.take()
	for i := range msgs {
		m := &msgs[i]
		if (m.Type == MsgBootstrap || m.Type == MsgBootstrapResp) && m.To == n.cfg.NodeID {
			n.bootMessage(m)
		} else {
			n.metrics.dropped.Add(1)
		}
	}
	n.in.recycle(msgs)
	if ticks > 0 {
		n.followView()
	}
	for t := 0; t < ticks && n.failed.Load() == nil; t++ {
		n.now++
		if err := n.boot.tick(n.now); err != nil {
			n.failStop(fmt.Errorf("kommander: node %s: bootstrap: %w", n.cfg.NodeID, err), err)
		}
	}
	if ticks > 0 {
		n.expireWaiters()
	}
	n.boot.flush(n.transport)
	switch {
	case n.failed.Load() != nil:
		return false
	case n.boot.formed():
		n.formCluster()
	case n.boot.joining():
		n.joinCluster()
	default:
		return false
	}
	return true
}

// joinCluster makes a node that learned the cluster formed without it a new node waiting
// to be added (Config.Join): its partitions keep no voters, so they never campaign, and
// take the appends of a leader that added them; the nodes it discovered are its address
// book. Loop only.
func (n *Node) joinCluster() {
	n.cfg.Join = true
	if err := n.setMembers(n.boot.st.joinPeers(), nil, n.boot.st.Incarnation); err != nil {
		n.failStop(fmt.Errorf("kommander: node %s: join the cluster: %w", n.cfg.NodeID, err), err)
		return
	}
	n.publishAll()
}

// joinPeers returns the nodes a joining node discovered, its address book.
func (s bootstrapState) joinPeers() []Peer {
	peers := make([]Peer, 0, len(s.Addrs))
	for id, a := range s.Addrs {
		peers = append(peers, Peer{ID: id, Addr: a})
	}
	return sortedPeers(peers)
}

// bootMessage hands a bootstrap message to the agreement, formed or not.
func (n *Node) bootMessage(m *Message) {
	if n.boot == nil {
		n.metrics.dropped.Add(1)
		return
	}
	err := n.boot.receive(m)
	switch {
	case errors.Is(err, errBootstrapMessage):
		n.metrics.dropped.Add(1)
		n.boot.rlog.warn(n.log, "bootstrap: dropped a message", "err", err)
	case err != nil:
		n.failStop(fmt.Errorf("kommander: node %s: bootstrap: %w", n.cfg.NodeID, err), err)
	}
	n.boot.flush(n.transport)
}

// formCluster starts the partitions' Raft groups with the set the agreement formed. The
// node's storage is empty (a node with a log never bootstraps), so each group starts
// fresh. Loop only.
func (n *Node) formCluster() {
	peers := n.boot.st.members()
	voters := voterIDs(n.cfg.NodeID, peers)
	fail := func(err error) {
		n.failStop(fmt.Errorf("kommander: node %s: form the cluster: %w", n.cfg.NodeID, err), err)
	}
	if err := n.setMembers(peers, voters, n.boot.st.Incarnation); err != nil {
		fail(err)
		return
	}
	if err := validateFactor(n.cfg.ReplicationFactor, voters); err != nil {
		fail(fmt.Errorf("%w: %v", ErrInvalidConfig, err))
		return
	}
	// The placement follows the formed set: a node that had yet to bootstrap hosted
	// nothing, or every partition with no voters.
	pl := newPlacement(voters, n.cfg.Partitions, n.cfg.ReplicationFactor)
	n.place.Store(&pl)
	for i := 0; i < n.cfg.Partitions; i++ {
		id := uint32(i)
		if !pl.hosts(i, n.cfg.NodeID) {
			continue
		}
		// The snapshots' record of the configuration is the placeholder's; a brand-new
		// node has no snapshot, so the formed set is where its log starts.
		n.snaps.initConf(id, membership{})
		np, err := n.newPartition(id, pl.voters(i))
		if err != nil {
			fail(err)
			return
		}
		p := n.slots[id].Load()
		if p == nil {
			n.host(np)
			p = np
		} else {
			p.mu.Lock()
			p.raft = np.raft
			p.mu.Unlock()
		}
		n.initMembers(p)
		n.activate(p)
	}
	n.followMembers()
	n.log.Info("formed the cluster", "members", voters)
	n.publishAll()
}
