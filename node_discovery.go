package kommander

// The node's side of discovery: it announces itself from Start until Stop, follows what
// discovery shows (a member at a new address is reached there), and hands the view to
// the bootstrap and to AutoJoin. The members themselves are decided through Raft.

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// nodeDiscovery is the view of discovery the node follows.
type nodeDiscovery struct {
	mu      sync.Mutex
	peers   []Peer        // the latest view, sorted by ID
	version uint64        // counts the views; 0 before the first
	changed chan struct{} // signalled on every new view, for AutoJoin
	cancel  context.CancelFunc
	done    chan struct{} // closed when the watcher ends; nil when none runs
	joined  chan struct{} // closed when AutoJoin ends; nil when it does not run
	rlog    *rateLog
}

// current returns the latest view and its version.
func (d *nodeDiscovery) current() ([]Peer, uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.peers, d.version
}

func (d *nodeDiscovery) set(peers []Peer) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.peers = peers
	d.version++
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

// setMembers makes voters the node's bootstrap voters and peers its address book (its
// outbox and transport peers), with the addresses recorded at run time over them, and,
// with a DataDir, checks the identity (inc is the incarnation a new data directory takes,
// 0 for a random one). A node that joins a running cluster has no voters.
func (n *Node) setMembers(peers []Peer, voters []string, inc uint64) error {
	cfg := n.cfg
	n.inc = incarnations{}
	if cfg.DataDir != "" {
		// Under the WAL's lock: a second process never gets this far.
		want := clusterIdentity{Cluster: cfg.ClusterName, Node: cfg.NodeID, Partitions: cfg.Partitions, Members: voters, ReplicationFactor: cfg.ReplicationFactor, Incarnation: inc}
		have, created, err := checkIdentity(cfg.DataDir, want)
		if err != nil {
			return err // it names the directory, the node and both configurations
		}
		if created {
			n.log.Info("recorded the cluster identity of a new data directory", "dir", cfg.DataDir, "cluster", cfg.ClusterName, "partitions", cfg.Partitions, "members", voters)
		}
		n.inc.init(cfg.NodeID, cfg.DataDir, have, created, voters, n.elTicks)
	} else {
		n.inc.init(cfg.NodeID, "", clusterIdentity{}, false, voters, n.elTicks)
	}
	n.addrs = make(map[string]string, len(peers))
	for _, p := range peers {
		if p.ID != cfg.NodeID {
			n.addrs[p.ID] = p.Addr
		}
	}
	n.initBook(n.inc.id.Book) // addresses learned at run time, kept in the data directory
	n.out = newOutbox(cfg.NodeID, n.bookPeers(), &n.metrics)
	if n.transport != nil {
		for _, id := range n.out.peers {
			if a := n.addrs[id]; a != "" {
				n.transport.SetPeer(id, a)
			}
		}
	}
	return nil
}

// announcement is what the node announces: its ID, address and data directory's
// incarnation (a random one without a DataDir).
func (n *Node) announcement() Announcement {
	a := Announcement{ID: n.cfg.NodeID, Addr: n.cfg.Addr}
	if a.Addr == "" {
		a.Addr = n.cfg.NodeID // a custom transport: the memory network's addresses are IDs
	}
	switch {
	case n.inc.id.Incarnation != 0:
		a.Incarnation = fmt.Sprintf("%016x", n.inc.id.Incarnation)
	case n.boot != nil && n.boot.st.Incarnation != 0:
		a.Incarnation = fmt.Sprintf("%016x", n.boot.st.Incarnation)
	}
	return a
}

// startDiscovery announces the node and follows the views of a Discovery that finds
// nodes; a static one has nothing to announce or follow.
func (n *Node) startDiscovery(ctx context.Context) error {
	d := n.cfg.Discovery
	if _, static := d.(staticDiscovery); static {
		return nil
	}
	if err := d.Announce(ctx, n.announcement()); err != nil {
		return fmt.Errorf("kommander: node %s: announce: %w", n.cfg.NodeID, err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	n.disc.cancel, n.disc.done = cancel, make(chan struct{})
	views := d.Watch(wctx)
	if !n.cfg.DisableAutoJoin && n.addDiscovered != nil {
		n.disc.joined = make(chan struct{})
		go n.autoJoin(wctx)
	}
	go func() {
		defer close(n.disc.done)
		for peers := range views {
			n.disc.set(peers) // the loop follows it at its next tick (followView)
		}
	}()
	return nil
}

// stopDiscovery stops following discovery and closes it, which tells the others this
// node leaves.
func (n *Node) stopDiscovery() error {
	n.disc.rlog.close()
	if n.disc.cancel == nil {
		return nil
	}
	n.disc.cancel()
	err := n.cfg.Discovery.Close()
	<-n.disc.done
	if n.disc.joined != nil {
		<-n.disc.joined
	}
	if err != nil {
		return fmt.Errorf("kommander: node %s: close discovery: %w", n.cfg.NodeID, err)
	}
	return nil
}

// followMoves reaches a member that discovery shows at a new address there, when the
// discovery is trusted (see Config.Discovery); a member whose address was unknown takes
// the first one shown. Other nodes are left to the bootstrap and to AutoJoin. Loop only.
func (n *Node) followMoves(peers []Peer, trusted bool) {
	for _, p := range movedPeers(n.addrs, peers) {
		if p.ID == n.cfg.NodeID {
			continue
		}
		if old := n.addrs[p.ID]; old != "" && !trusted {
			n.disc.rlog.warn(n.log, "discovery shows a member at a new address; ignored, as the discovery is not authenticated (set its Secret)",
				"member", p.ID, "addr", old, "announced", clip(p.Addr))
			continue
		}
		n.log.Info("discovery: a member is reached at a new address", "member", p.ID, "addr", p.Addr)
		n.setAddr(p.ID, p.Addr) // recorded, and told to the other members
	}
}

// authenticatedDiscovery reports whether d's word about an address can be trusted: a
// registry or multicast discovery with a secret, or a Discovery of the application's own.
func authenticatedDiscovery(d Discovery) bool {
	switch d := d.(type) {
	case *registryClient:
		return d.opts.Secret != nil
	case *multicast:
		return d.opts.Secret != nil
	}
	return true
}

// followView follows a new view of discovery: members at new addresses (followMoves);
// with BootstrapExpect, the view goes to the bootstrap, and the nodes discovered that are
// not members become peers of the transport, which accepts and reaches only its peers:
// the bootstrap talks with them, before the cluster forms and after (a formed node tells
// a new one that the cluster exists). The transport still has them prove the cluster's
// secret. Loop only, on ticks.
func (n *Node) followView() {
	peers, v := n.disc.current()
	if v == n.discView {
		return
	}
	n.discView = v
	n.followMoves(peers, authenticatedDiscovery(n.cfg.Discovery))
	if n.boot == nil {
		return
	}
	n.boot.setView(peers)
	for _, p := range peers {
		if _, member := n.addrs[p.ID]; !member && p.ID != n.cfg.NodeID && p.Addr != "" {
			n.transport.SetPeer(p.ID, p.Addr)
		}
	}
}

// discoveredNonMembers returns the nodes discovery shows that are not yet voters of every
// partition: those AutoJoin adds (AddNode skips the partitions where a node votes).
func (n *Node) discoveredNonMembers() []Peer {
	peers, _ := n.disc.current()
	var out []Peer
	for _, p := range peers {
		if p.ID == n.cfg.NodeID {
			continue
		}
		for i := 0; i < n.cfg.Partitions; i++ { // n.parts is the loop's
			if m, err := n.Members(i); err == nil && !slices.Contains(m.Voters, p.ID) {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// autoJoinTimeout bounds one AddNode of AutoJoin.
const autoJoinTimeout = 2 * time.Minute

// autoJoin is AutoJoin: while this node leads partition 0 it adds the nodes discovery shows
// that are not members, one at a time, through addDiscovered (AddNode: a learner first,
// promoted to voter once caught up, in every partition; it forwards each partition's
// change to that partition's leader). One node drives it so that two leaders do not add the
// same node at once; the leader of partition 0 is the one every node can name. A failure
// is logged and retried at the next view or election timeout. It runs until ctx ends.
func (n *Node) autoJoin(ctx context.Context) {
	defer close(n.disc.joined)
	// A repeater, not a ticker: its wake-up never waits for this goroutine, which may be
	// inside a long AddNode (a FakeClock's ticker would hold up Advance meanwhile).
	retry := make(chan struct{}, 1)
	rep := startRepeater(n.cfg.Clock, n.cfg.ElectionTimeout, func() {
		select {
		case retry <- struct{}{}:
		default:
		}
	})
	defer rep.stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.disc.changed:
		case <-retry:
		}
		if !n.IsLeader(0) {
			continue
		}
		for _, p := range n.discoveredNonMembers() {
			// Catching up may take long; AddNode gives up on its own when the node cannot
			// be added, and the next round tries again.
			actx, cancel := context.WithTimeout(ctx, autoJoinTimeout)
			err := n.addDiscovered(actx, p.ID, p.Addr)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				n.disc.rlog.warn(n.log, "auto-join: adding a discovered node failed; retrying", "added", p.ID, "addr", clip(p.Addr), "err", err)
				continue
			}
			n.log.Info("auto-join: added a discovered node", "added", p.ID, "addr", p.Addr)
		}
	}
}

// autoJoinAdd is what AutoJoin calls: AddNode in every partition (a learner, then a voter
// once caught up).
func (n *Node) autoJoinAdd(ctx context.Context, id, addr string) error {
	return n.AddNode(ctx, id, addr)
}
