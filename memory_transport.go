package kommander

import (
	"errors"
	"math/rand"
	"sync"
	"time"
)

// MemoryNetwork connects nodes in one process, for tests: yours and ours. Each node gets a
// Transport from Transport(id); links between nodes can be cut (in one or both
// directions), healed, delayed, made lossy and made to duplicate messages.
//
// All random choices (loss, duplication, delay jitter) come from one source seeded by
// NewMemoryNetwork, and delayed messages are delivered through the network's Clock. With a
// FakeClock and a test that drives the nodes in a fixed order, a run is reproducible from
// its seed. Without delays, a batch is handed to the receiving node inside Send.
//
// A peer's address, as given to Transport.SetPeer, is the ID it was registered under.
type MemoryNetwork struct {
	mu        sync.Mutex
	rand      *rand.Rand
	clock     Clock
	nodes     map[string]*memoryTransport
	links     map[memoryLink]LinkFaults
	defaults  LinkFaults
	delivered uint64
	dropped   uint64
}

type memoryLink struct{ from, to string }

// LinkFaults describes how a directed link between two nodes misbehaves. The zero value is
// a perfect link: no loss, no delay, no duplication.
type LinkFaults struct {
	// Cut drops every message on the link.
	Cut bool
	// Loss is the probability, in [0, 1], that a message is dropped.
	Loss float64
	// Duplicate is the probability, in [0, 1], that a batch is delivered twice.
	Duplicate float64
	// Delay is added to every batch; Jitter adds a uniformly random extra delay in
	// [0, Jitter), which also reorders batches.
	Delay, Jitter time.Duration
}

// MemoryNetworkStats counts what a MemoryNetwork did.
type MemoryNetworkStats struct {
	// Delivered counts messages handed to a receiving node.
	Delivered uint64
	// Dropped counts messages lost to cuts, loss, unknown or closed receivers.
	Dropped uint64
}

// NewMemoryNetwork returns an empty network whose random choices are seeded by seed. It
// uses the real clock for delays until SetClock is called.
func NewMemoryNetwork(seed int64) *MemoryNetwork {
	return &MemoryNetwork{
		rand:  rand.New(rand.NewSource(seed)),
		clock: RealClock(),
		nodes: make(map[string]*memoryTransport),
		links: make(map[memoryLink]LinkFaults),
	}
}

// SetClock sets the clock that times delayed deliveries; pass the FakeClock the nodes use.
func (n *MemoryNetwork) SetClock(c Clock) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.clock = c
}

// Transport registers a node under id and returns its Transport. Registering an id again
// (a node restarted after a crash) closes the earlier transport and replaces it.
func (n *MemoryNetwork) Transport(id string) Transport {
	t := &memoryTransport{net: n, id: id, peers: make(map[string]string)}
	n.mu.Lock()
	old := n.nodes[id]
	n.nodes[id] = t
	n.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	return t
}

// SetLink sets the faults of the directed link from -> to.
func (n *MemoryNetwork) SetLink(from, to string, f LinkFaults) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.links[memoryLink{from, to}] = f
}

// SetDefaultLink sets the faults of every link that has no SetLink of its own.
func (n *MemoryNetwork) SetDefaultLink(f LinkFaults) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.defaults = f
}

// Link returns the faults of the directed link from -> to.
func (n *MemoryNetwork) Link(from, to string) LinkFaults {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.link(from, to)
}

func (n *MemoryNetwork) link(from, to string) LinkFaults {
	if f, ok := n.links[memoryLink{from, to}]; ok {
		return f
	}
	return n.defaults
}

func (n *MemoryNetwork) setCut(from, to string, cut bool) {
	f := n.link(from, to)
	f.Cut = cut
	n.links[memoryLink{from, to}] = f
}

// CutOneWay drops every message from -> to; the other direction is untouched (an
// asymmetric partition).
func (n *MemoryNetwork) CutOneWay(from, to string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.setCut(from, to, true)
}

// Cut drops every message between a and b, both ways.
func (n *MemoryNetwork) Cut(a, b string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.setCut(a, b, true)
	n.setCut(b, a, true)
}

// Heal undoes Cut and CutOneWay between a and b, both ways. Loss, delay and duplication
// settings stay.
func (n *MemoryNetwork) Heal(a, b string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.setCut(a, b, false)
	n.setCut(b, a, false)
}

// Isolate cuts id off from every other registered node, both ways.
func (n *MemoryNetwork) Isolate(id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for other := range n.nodes {
		if other != id {
			n.setCut(id, other, true)
			n.setCut(other, id, true)
		}
	}
}

// Partition splits the network into the given groups: links inside a group are healed,
// links between groups are cut. Nodes in no group are cut off from everyone.
func (n *MemoryNetwork) Partition(groups ...[]string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	group := make(map[string]int)
	for i, g := range groups {
		for _, id := range g {
			group[id] = i + 1
		}
	}
	for a := range n.nodes {
		for b := range n.nodes {
			if a != b {
				ga, gb := group[a], group[b]
				n.setCut(a, b, ga == 0 || ga != gb)
			}
		}
	}
}

// HealAll removes every fault from every link, including the defaults.
func (n *MemoryNetwork) HealAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.links = make(map[memoryLink]LinkFaults)
	n.defaults = LinkFaults{}
}

// Stats returns counts of delivered and dropped messages.
func (n *MemoryNetwork) Stats() MemoryNetworkStats {
	n.mu.Lock()
	defer n.mu.Unlock()
	return MemoryNetworkStats{Delivered: n.delivered, Dropped: n.dropped}
}

// send routes one batch from -> the node registered at addr.
func (n *MemoryNetwork) send(from, addr string, msgs []Message) {
	n.mu.Lock()
	to := n.nodes[addr]
	f := n.link(from, addr)
	if to == nil || f.Cut {
		n.dropped += uint64(len(msgs))
		n.mu.Unlock()
		return
	}
	kept := make([]Message, 0, len(msgs))
	for _, m := range msgs {
		if f.Loss > 0 && n.rand.Float64() < f.Loss {
			n.dropped++
			continue
		}
		kept = append(kept, copyMessage(m))
	}
	if len(kept) == 0 {
		n.mu.Unlock()
		return
	}
	copies := 1
	if f.Duplicate > 0 && n.rand.Float64() < f.Duplicate {
		copies = 2
	}
	delays := make([]time.Duration, copies)
	for i := range delays {
		delays[i] = f.Delay
		if f.Jitter > 0 {
			delays[i] += time.Duration(n.rand.Int63n(int64(f.Jitter)))
		}
	}
	clock := n.clock
	n.mu.Unlock()

	// Every copy is made before the first is delivered: a receiver owns what it gets and
	// may change it (a leader assigns Term and Index to forwarded entries), so copying a
	// duplicate from a batch already handed over would race with the receiver.
	batches := make([][]Message, len(delays))
	batches[0] = kept
	for i := 1; i < len(batches); i++ {
		batches[i] = make([]Message, len(kept))
		for j, m := range kept {
			batches[i][j] = copyMessage(m)
		}
	}
	for i, d := range delays {
		batch := batches[i]
		if d <= 0 {
			n.deliver(to, from, batch)
			continue
		}
		clock.AfterFunc(d, func() { n.deliver(to, from, batch) })
	}
}

func (n *MemoryNetwork) deliver(to *memoryTransport, from string, batch []Message) {
	ok := to.receive(from, batch)
	n.mu.Lock()
	if ok {
		n.delivered += uint64(len(batch))
	} else {
		n.dropped += uint64(len(batch))
	}
	n.mu.Unlock()
}

// copyMessage gives the receiver its own message and entry slices, as a real network
// would, so that neither side can change what the other holds. Payload bytes are shared:
// nobody writes to them.
func copyMessage(m Message) Message {
	if m.Entries != nil {
		m.Entries = append([]Entry(nil), m.Entries...)
	}
	if m.snapshot != nil {
		s := *m.snapshot
		s.Voters = append([]string(nil), s.Voters...)
		s.Learners = append([]string(nil), s.Learners...)
		m.snapshot = &s
	}
	return m
}

// errMemoryTransportClosed is returned by Start on a closed memory transport.
var errMemoryTransportClosed = errors.New("kommander: memory transport closed")

// memoryTransport is one node's endpoint on a MemoryNetwork.
type memoryTransport struct {
	net *MemoryNetwork
	id  string

	mu      sync.RWMutex // held for reading while delivering, so Close waits for deliveries
	deliver func([]Message)
	closed  bool
	peers   map[string]string
	removed map[string]bool // peers given to RemovePeer: their batches are refused
	// lane holds snapshot chunks for the goroutine that sends them (laneBusy while it
	// runs), apart from Send: see SendSnapshot. Under laneMu, not mu: a receiver answers
	// chunks from within its deliver call, which holds mu for reading.
	laneMu     sync.Mutex
	lane       []laneItem
	laneBusy   bool
	laneClosed bool
}

// laneItem is one batch waiting on a snapshot lane.
type laneItem struct {
	to   string
	msgs []Message
}

// SendSnapshot sends snapshot chunks on a lane of their own, as the TCP transport does:
// a goroutine of the endpoint's delivers them in order, so that a transfer neither runs
// inside the receiver's deliver call nor holds up other messages.
func (t *memoryTransport) SendSnapshot(to string, msgs []Message) {
	t.laneMu.Lock()
	defer t.laneMu.Unlock()
	if t.laneClosed {
		return
	}
	t.lane = append(t.lane, laneItem{to: to, msgs: msgs})
	if !t.laneBusy {
		t.laneBusy = true
		go t.runLane()
	}
}

// runLane sends what waits on the snapshot lane, then ends.
func (t *memoryTransport) runLane() {
	for {
		t.laneMu.Lock()
		if len(t.lane) == 0 || t.laneClosed {
			t.lane, t.laneBusy = nil, false
			t.laneMu.Unlock()
			return
		}
		item := t.lane[0]
		t.lane = t.lane[1:]
		t.laneMu.Unlock()
		t.Send(item.to, item.msgs)
	}
}

func (t *memoryTransport) Start(deliver func(batch []Message)) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errMemoryTransportClosed
	}
	t.deliver = deliver
	return nil
}

func (t *memoryTransport) SetPeer(id, addr string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.peers[id] = addr
	delete(t.removed, id)
}

// RemovePeer forgets peer id and refuses its batches from now on, as a network transport
// refuses a removed member's connections. (Nodes never given to SetPeer are not refused:
// tests build networks without listing every peer.)
func (t *memoryTransport) RemovePeer(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.peers, id)
	if t.removed == nil {
		t.removed = make(map[string]bool)
	}
	t.removed[id] = true
}

func (t *memoryTransport) Send(to string, msgs []Message) {
	t.mu.RLock()
	addr, ok := t.peers[to]
	closed := t.closed
	t.mu.RUnlock()
	if !ok || closed || len(msgs) == 0 {
		t.net.mu.Lock()
		t.net.dropped += uint64(len(msgs))
		t.net.mu.Unlock()
		return
	}
	t.net.send(t.id, addr, msgs)
}

func (t *memoryTransport) receive(from string, batch []Message) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed || t.deliver == nil || t.removed[from] {
		return false
	}
	t.deliver(batch)
	return true
}

func (t *memoryTransport) Close() error {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.laneMu.Lock()
	t.laneClosed = true
	t.laneMu.Unlock()
	t.net.mu.Lock()
	if t.net.nodes[t.id] == t {
		delete(t.net.nodes, t.id)
	}
	t.net.mu.Unlock()
	return nil
}
