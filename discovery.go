package kommander

// Discovery tells a node where the other nodes are. It never says who votes: that is
// decided through the Raft log. What the registry and multicast discoveries share lives
// here: the table of announced nodes (ownership by incarnation, expiry, a bound), the
// watchers that hear of changes, and the timer that repeats announcements.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Discovery finds the members of a cluster and their addresses. Who votes is decided by
// Raft; discovery only says where nodes are. Its methods are safe for concurrent use.
type Discovery interface {
	// Peers returns the nodes known now, this node included once it is announced (a
	// static list always includes it). A discovery that asks a remote service asks it
	// again.
	Peers(ctx context.Context) ([]Peer, error)

	// Watch returns a channel that receives the known nodes at once and then again after
	// every change (a node found, gone, or at a new address), sorted by ID. A reader that
	// falls behind gets the newest set, never a queue of old ones. The channel is closed
	// when ctx ends or the discovery is closed.
	Watch(ctx context.Context) <-chan []Peer

	// Announce makes this node known to the others and keeps it known until Close. It
	// returns once announcing has started; failures to reach a registry are retried and
	// logged, not returned.
	Announce(ctx context.Context, self Announcement) error

	// Close stops announcing, tells the others this node is leaving where the method
	// allows it, and closes the channels of Watch.
	Close() error
}

// Announcement is what a node tells the others about itself.
type Announcement struct {
	// ID is the node's NodeID.
	ID string
	// Addr is where the node is reached now; a node announced at a new address is
	// reached there without a membership change.
	Addr string
	// Incarnation tells this node's data directory (or process) apart from another one
	// that uses the same ID: while an incarnation's announcement is live, no other
	// incarnation can take the ID over. Keep it stable for a data directory so that a
	// restarted node gets its ID back at once; empty means a random one per Announce
	// (NewIncarnation).
	Incarnation string
}

// NewIncarnation returns a random incarnation for Announcement.Incarnation.
func NewIncarnation() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("kommander: incarnation: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// Bounds on what a node may announce, checked wherever announcements arrive.
const (
	maxIncarnationBytes = 64
	maxAddrBytes        = maxNameBytes
)

// ErrIDInUse is wrapped by errors reporting that another incarnation holds a node ID in a
// discovery registry or multicast group.
var ErrIDInUse = errors.New("kommander: node ID announced by another incarnation")

// errTableFull reports that a discovery table holds its maximum of live nodes.
var errTableFull = errors.New("kommander: discovery holds its maximum number of nodes")

// check reports what is wrong with an announcement, if anything.
func (a Announcement) check() error {
	switch {
	case a.ID == "" || len(a.ID) > maxNameBytes:
		return fmt.Errorf("node ID must have 1 to %d bytes", maxNameBytes)
	case a.Addr == "" || len(a.Addr) > maxAddrBytes:
		return fmt.Errorf("address must have 1 to %d bytes", maxAddrBytes)
	case a.Incarnation == "" || len(a.Incarnation) > maxIncarnationBytes:
		return fmt.Errorf("incarnation must have 1 to %d bytes", maxIncarnationBytes)
	}
	return nil
}

// complete fills an empty incarnation with a random one and checks the announcement.
func (a Announcement) complete() (Announcement, error) {
	if a.Incarnation == "" {
		inc, err := NewIncarnation()
		if err != nil {
			return a, err
		}
		a.Incarnation = inc
	}
	if err := a.check(); err != nil {
		return a, fmt.Errorf("%w: announce: %v", ErrInvalidConfig, err)
	}
	return a, nil
}

// StaticDiscovery returns a Discovery that always answers with peers: it announces
// nothing and its Watch channel receives peers once.
func StaticDiscovery(peers ...Peer) Discovery { return staticDiscovery(peers) }

type staticDiscovery []Peer

func (s staticDiscovery) Peers(context.Context) ([]Peer, error) {
	return append([]Peer(nil), s...), nil
}

func (s staticDiscovery) Watch(ctx context.Context) <-chan []Peer {
	ch := make(chan []Peer, 1)
	ch <- sortedPeers(s)
	go func() {
		<-ctx.Done()
		close(ch)
	}()
	return ch
}

func (staticDiscovery) Announce(context.Context, Announcement) error { return nil }
func (staticDiscovery) Close() error                                 { return nil }

// sortedPeers returns a sorted copy of peers.
func sortedPeers(peers []Peer) []Peer {
	out := slices.Clone(peers)
	slices.SortFunc(out, func(a, b Peer) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// announced is one node in a discovery table.
type announced struct {
	addr, incarnation string
	// stamp is the announcing node's clock, in Unix nanoseconds, when it announced: of
	// two announcements of the same ID the one with the higher stamp is the newer, and an
	// announcement no newer than the one held is a repeat or a replay and changes nothing.
	// Only stamps of one node ID are ever compared, so clocks of different hosts need not
	// agree.
	stamp   int64
	expires time.Time
	// left marks a node that said it is leaving. The entry stays until it expires, so
	// that an older announcement, replayed or gossiped late, cannot bring it back.
	left bool
}

// peerTable holds the announced nodes of one cluster, at most max of them.
type peerTable struct {
	max     int
	entries map[string]announced
	// linger keeps an expired node as a left entry for that much longer, so that a
	// replay of its last announcement, still inside the time window a signed
	// announcement is accepted in, cannot bring it back.
	linger time.Duration
}

func newPeerTable(max int) *peerTable {
	return &peerTable{max: max, entries: make(map[string]announced)}
}

// claim applies an announcement a node made itself. While an entry is live, only its
// incarnation may renew it or say it leaves: another one gets ErrIDInUse. It reports
// whether the set of live nodes or their addresses changed.
func (t *peerTable) claim(id string, e announced, now time.Time) (bool, error) {
	cur, ok := t.live(id, now)
	if ok && !cur.left && cur.incarnation != e.incarnation {
		return false, fmt.Errorf("%w: %q is held by incarnation %s until %s", ErrIDInUse, id, cur.incarnation, cur.expires.Format(time.RFC3339))
	}
	return t.put(id, e, cur, ok, now)
}

// merge applies an entry learned from another registry: the newer stamp wins, whatever
// the incarnation, so that registries that took conflicting registrations converge.
func (t *peerTable) merge(id string, e announced, now time.Time) (bool, error) {
	if !now.Before(e.expires) {
		return false, nil
	}
	cur, ok := t.live(id, now)
	return t.put(id, e, cur, ok, now)
}

// live returns the entry of id, live or left, if it has not expired. An expired live
// entry lingers as a left one; an expired left one is dropped.
func (t *peerTable) live(id string, now time.Time) (announced, bool) {
	cur, ok := t.entries[id]
	if !ok || now.Before(cur.expires) {
		return cur, ok
	}
	if !cur.left && t.linger > 0 {
		cur.left, cur.expires = true, cur.expires.Add(t.linger)
		t.entries[id] = cur
		if now.Before(cur.expires) {
			return cur, true
		}
	}
	delete(t.entries, id)
	return announced{}, false
}

func (t *peerTable) put(id string, e announced, cur announced, ok bool, now time.Time) (bool, error) {
	if ok && e.stamp <= cur.stamp {
		return false, nil
	}
	if !ok && len(t.entries) >= t.max {
		t.expire(now)
		if len(t.entries) >= t.max {
			return false, fmt.Errorf("%w (%d)", errTableFull, t.max)
		}
	}
	t.entries[id] = e
	wasLive := ok && !cur.left
	return wasLive == e.left || (wasLive && cur.addr != e.addr), nil
}

// expire drops the entries that expired by now, and reports whether a live node was among
// them.
func (t *peerTable) expire(now time.Time) bool {
	changed := false
	for id, e := range t.entries {
		if !now.Before(e.expires) {
			changed = changed || !e.left
			t.live(id, now)
		}
	}
	return changed
}

// peers returns the live nodes, sorted by ID.
func (t *peerTable) peers(now time.Time) []Peer {
	out := make([]Peer, 0, len(t.entries))
	for id, e := range t.entries {
		if !e.left && now.Before(e.expires) {
			out = append(out, Peer{ID: id, Addr: e.addr})
		}
	}
	return sortedPeers(out)
}

// peerWatch hands the newest set of nodes to every Watch channel.
type peerWatch struct {
	mu     sync.Mutex
	closed bool
	cur    []Peer
	subs   map[chan []Peer]struct{}
	done   chan struct{}
}

func newPeerWatch() *peerWatch {
	return &peerWatch{subs: make(map[chan []Peer]struct{}), done: make(chan struct{})}
}

// set records peers (sorted) and, if they differ from the last set, hands them to every
// watcher, replacing a set the watcher has not read yet.
func (w *peerWatch) set(peers []Peer) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || (w.cur != nil && slices.Equal(w.cur, peers)) {
		return
	}
	w.cur = peers
	for ch := range w.subs {
		select {
		case <-ch:
		default:
		}
		ch <- slices.Clone(peers) // the only sender, under mu: there is room
	}
}

func (w *peerWatch) watch(ctx context.Context) <-chan []Peer {
	ch := make(chan []Peer, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		close(ch)
		return ch
	}
	if w.cur != nil {
		ch <- slices.Clone(w.cur)
	}
	w.subs[ch] = struct{}{}
	go func() {
		select {
		case <-ctx.Done():
		case <-w.done:
		}
		w.mu.Lock()
		delete(w.subs, ch)
		w.mu.Unlock()
		close(ch)
	}()
	return ch
}

func (w *peerWatch) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.closed = true
		close(w.done)
	}
}

// repeater calls f every interval of clock until stop. Calls never overlap,
// and stop waits for a call under way, so that nothing f does happens after stop returns.
// With a FakeClock, f runs inside Advance, so a test sees its effects when Advance returns.
type repeater struct {
	clock    Clock
	interval time.Duration
	f        func()

	run     sync.Mutex // held while f runs
	mu      sync.Mutex
	stopped bool
	timer   Timer
}

func startRepeater(clock Clock, interval time.Duration, f func()) *repeater {
	r := &repeater{clock: clock, interval: interval, f: f}
	// Under mu: a clock advanced by another goroutine may fire before AfterFunc returns,
	// and fire sets the next timer under mu.
	r.mu.Lock()
	defer r.mu.Unlock()
	r.timer = clock.AfterFunc(interval, r.fire)
	return r
}

func (r *repeater) fire() {
	r.run.Lock()
	defer r.run.Unlock()
	r.mu.Lock()
	stopped := r.stopped
	r.mu.Unlock()
	if stopped {
		return
	}
	r.f()
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.stopped {
		r.timer = r.clock.AfterFunc(r.interval, r.fire)
	}
}

func (r *repeater) stop() {
	r.mu.Lock()
	r.stopped = true
	if r.timer != nil {
		r.timer.Stop()
	}
	r.mu.Unlock()
	// fire holds run while f runs: taking it waits for a call under way.
	r.run.Lock()
	defer r.run.Unlock()
}

// movedPeers returns the members of known (ID to address) that peers lists at another
// address: a node that follows a Watch hands each of them to Transport.SetPeer, which
// reaches a known member at its new address without a membership change. IDs known does
// not hold are left out: adding a member goes through the Raft log.
func movedPeers(known map[string]string, peers []Peer) []Peer {
	var moved []Peer
	for _, p := range peers {
		if addr, ok := known[p.ID]; ok && p.Addr != "" && p.Addr != addr {
			moved = append(moved, p)
		}
	}
	return moved
}
