package kommander

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// registryCluster is a nodeCluster whose nodes find each other through one registry and
// form the cluster with BootstrapExpect, keeping their data in DataDirs.
func registryCluster(t *testing.T, nodes, expect int, secret []byte) (*nodeCluster, *testRegistry) {
	t.Helper()
	c := newNodeCluster(t, nodes, 2, false)
	c.useWAL()
	opts := RegistryOptions{Cluster: "kommander", Secret: secret, TTL: 20 * c.tick, Interval: 5 * c.tick}
	reg := startRegistries(t, c.clock, 1, opts, nil)[0]
	t.Cleanup(c.stopAll) // before the registry goes: Stop deregisters
	c.cfg = func(i int, cfg *Config) {
		o := opts
		o.Clock, o.Logger = c.clock, discardLogger()
		d, err := RegistryDiscovery(o, reg.url)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Peers, cfg.Discovery, cfg.BootstrapExpect = nil, d, expect
		cfg.StateMachine = snapKVSM{c.sms[i]} // snapshots on: they keep a configuration too
	}
	return c, reg
}

// formedSet returns the set node i formed, or nil.
func (c *nodeCluster) formedSet(i int) []string {
	st, err := fileBootstrapStore{dir: c.dataDirs[i]}.load()
	if err != nil || !st.Formed {
		return nil
	}
	return st.Set
}

// TestBootstrapFromRegistry: three brand-new nodes that know only a registry's URL form
// one cluster of three voters with a leader per partition, and replicate; a restarted
// node does not bootstrap again (its set is recorded), and Stop deregisters it.
func TestBootstrapFromRegistry(t *testing.T) {
	c, reg := registryCluster(t, 3, 3, testRegistrySecret)
	c.startAll()
	c.waitFor("every node formed the cluster", 3000, func() bool {
		for i := range c.ids {
			if !slices.Equal(c.formedSet(i), c.ids) {
				return false
			}
		}
		return true
	})
	lead := c.leaders()
	for i, n := range c.nodes {
		for p, part := range n.parts {
			part.mu.Lock()
			m := part.raft.membership()
			part.mu.Unlock()
			if !slices.Equal(m.Voters, c.ids) {
				t.Fatalf("%s: partition %d has voters %v, want %v", c.ids[i], p, m.Voters, c.ids)
			}
		}
	}
	stop := c.pump()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, err := c.nodes[lead[0]].Replicate(ctx, 0, "put", put("k", "v"))
	cancel()
	stop()
	if err != nil {
		t.Fatalf("Replicate on the formed cluster: %v", err)
	}

	// Each node announces its data directory's incarnation, so that a restart gets its
	// ID back at once.
	for i, id := range c.ids {
		ident, ok, err := loadIdentity(c.dataDirs[i])
		reg.srv.mu.Lock()
		e := reg.srv.table.entries[id]
		reg.srv.mu.Unlock()
		if err != nil || !ok || e.incarnation != fmt.Sprintf("%016x", ident.Incarnation) {
			t.Fatalf("%s announced incarnation %q, its data directory has %x (%v)", id, e.incarnation, ident.Incarnation, err)
		}
	}
	c.stop(2)
	if slices.ContainsFunc(reg.srv.Peers(), func(p Peer) bool { return p.ID == c.ids[2] }) {
		t.Fatalf("Stop did not deregister %s: registry holds %v", c.ids[2], reg.srv.Peers())
	}
	n, err := NewNode(c.config(2))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop(context.Background())
	if n.boot == nil || !n.boot.formed() || !slices.Equal(n.out.peers, c.ids[:2]) {
		t.Fatalf("a restarted node must start with its recorded set, not bootstrap again: formed %v, peers %v", n.boot != nil && n.boot.formed(), n.out.peers)
	}
}

// TestBootstrapNeverAgainWithAConfiguration: a data directory that holds a cluster
// identity (a node that ran with static peers) never bootstraps, whatever the discovery
// shows.
func TestBootstrapNeverAgainWithAConfiguration(t *testing.T) {
	c := newNodeCluster(t, 3, 1, false)
	c.useWAL()
	c.startAll()
	c.leaders()
	c.stop(0)
	cfg := c.config(0)
	cfg.Peers, cfg.Discovery, cfg.BootstrapExpect = nil, simDiscovery{}, 3
	n, err := NewNode(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop(context.Background())
	if !n.boot.formed() || !slices.Equal(n.out.peers, c.ids[1:]) {
		t.Fatalf("a node with a configuration bootstrapped: formed %v, peers %v", n.boot.formed(), n.out.peers)
	}
}

// recordingTransport is a memory transport that records SetPeer.
type recordingTransport struct {
	Transport
	set map[string]string
}

func (r *recordingTransport) SetPeer(id, addr string) {
	r.set[id] = addr
	r.Transport.SetPeer(id, addr)
}

// TestDiscoveryMovesOnlyMembersAndOnlyWhenTrusted: a member announced at a new address is
// reached there when the discovery is authenticated; an unauthenticated one cannot move
// it, and no discovery adds a node that is not a member to the transport.
func TestDiscoveryMovesOnlyMembersAndOnlyWhenTrusted(t *testing.T) {
	c := newNodeCluster(t, 3, 1, false)
	c.opts = func(i int, o *testNodeOptions) { o.manual = true } // the test is the loop
	rec := &recordingTransport{set: map[string]string{}}
	c.cfg = func(i int, cfg *Config) {
		if i == 0 {
			rec.Transport = cfg.CustomTransport
			cfg.CustomTransport = rec
		}
	}
	c.start(0)
	n := c.nodes[0]
	clear(rec.set)
	view := []Peer{{ID: "n1", Addr: "n1"}, {ID: "n2", Addr: "10.0.0.9:7000"}, {ID: "n3", Addr: "n3"}, {ID: "intruder", Addr: "10.6.6.6:1"}}

	n.followMoves(view, false)
	if n.addrs["n2"] != "n2" || len(rec.set) != 0 {
		t.Fatalf("an unauthenticated discovery moved a member: n2 at %q, SetPeer %v", n.addrs["n2"], rec.set)
	}
	n.followMoves(view, true)
	if n.addrs["n2"] != "10.0.0.9:7000" || rec.set["n2"] != "10.0.0.9:7000" {
		t.Fatalf("an authenticated discovery did not move n2: at %q, SetPeer %v", n.addrs["n2"], rec.set)
	}
	if _, ok := rec.set["intruder"]; ok || n.addrs["intruder"] != "" {
		t.Fatalf("a node that is not a member reached the transport: %v", rec.set)
	}
	if got := n.discoveredNonMembers(); len(got) != 0 {
		t.Fatalf("discoveredNonMembers before any view: %v", got)
	}
	n.disc.set(view)
	if got := n.discoveredNonMembers(); !slices.Equal(got, []Peer{{ID: "intruder", Addr: "10.6.6.6:1"}}) {
		t.Fatalf("discoveredNonMembers = %v, want the intruder alone", got)
	}
	// The loop follows the views discovery hands it, at its next tick.
	view[2].Addr = "10.0.0.10:7000"
	n.disc.set(view)
	n.addTick()
	n.runPass()
	if n.addrs["n3"] != "10.0.0.10:7000" || rec.set["n3"] != "10.0.0.10:7000" {
		t.Fatalf("the loop did not follow the view: n3 at %q, SetPeer %v", n.addrs["n3"], rec.set)
	}
	for _, d := range []struct {
		d    Discovery
		want bool
	}{{&registryClient{}, false}, {&registryClient{opts: RegistryOptions{Secret: testRegistrySecret}}, true},
		{&multicast{}, false}, {&multicast{opts: MulticastOptions{Secret: testRegistrySecret}}, true}, {simDiscovery{}, true}} {
		if got := authenticatedDiscovery(d.d); got != d.want {
			t.Errorf("authenticatedDiscovery(%T with secret %v) = %v", d.d, d.want, got)
		}
	}
}

// TestBootstrapConfigValidation: the combinations that cannot work are refused with a
// message that says why.
func TestBootstrapConfigValidation(t *testing.T) {
	base := Config{NodeID: "a", StateMachine: newKVSM(1, false), DataDir: t.TempDir(), Addr: "127.0.0.1:1"}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"expect without discovery", func(c *Config) { c.BootstrapExpect = 3 }, "BootstrapExpect needs a Discovery"},
		{"discovery without expect", func(c *Config) { c.Discovery = simDiscovery{} }, "needs BootstrapExpect"},
		{"peers and discovery", func(c *Config) {
			c.Discovery, c.BootstrapExpect, c.Peers = simDiscovery{}, 3, []Peer{{ID: "a", Addr: "x"}}
		}, "exclude each other"},
		{"negative", func(c *Config) { c.BootstrapExpect = -1 }, "negative"},
		{"no data dir", func(c *Config) {
			c.Discovery, c.BootstrapExpect, c.DataDir, c.Storage = simDiscovery{}, 3, "", NewMemoryStorage()
		}, "needs DataDir"},
		{"no addr", func(c *Config) { c.Discovery, c.BootstrapExpect, c.Addr = simDiscovery{}, 3, "" }, "Addr is empty"},
	} {
		c := base
		tc.edit(&c)
		err := c.Validate()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate = %v, want ErrInvalidConfig saying %q", tc.name, err, tc.want)
		}
	}
	ok := base
	ok.Discovery, ok.BootstrapExpect = simDiscovery{}, 3
	if err := ok.Validate(); err != nil {
		t.Fatalf("a valid bootstrap config refused: %v", err)
	}
}

// TestMulticastBootstrapInANetworkNamespace: three brand-new nodes over TCP that find each
// other by multicast alone (on the loopback of a network namespace of the test's own)
// form one cluster of three voters and replicate; a fourth started later is added by
// AutoJoin and becomes a voter.
func TestMulticastBootstrapInANetworkNamespace(t *testing.T) {
	if os.Getenv(netnsEnv) != "1" {
		runInMulticastNamespace(t)
		return
	}
	ids, peers := realPeers(t, 4)
	nodes, dirs := make([]*Node, 4), make([]string, 4)
	start := func(i int) {
		dirs[i] = t.TempDir()
		d, err := MulticastDiscovery(MulticastOptions{Interface: "lo", Port: 17948, Interval: 20 * time.Millisecond,
			Secret: testMulticastSecret, Logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = startRealNode(t, Config{NodeID: ids[i], Addr: peers[i].Addr, DataDir: dirs[i], UnsafeNoSync: true,
			Discovery: d, BootstrapExpect: 3, StateMachine: newKVSM(1, false), Partitions: 1, Secret: testRegistrySecret,
			ElectionTimeout: 200 * time.Millisecond, HeartbeatInterval: 20 * time.Millisecond, Logger: discardLogger()})
	}
	for i := 0; i < 3; i++ {
		start(i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range nodes[:3] {
		if _, err := n.WaitForLeader(ctx, 0); err != nil {
			t.Fatalf("%s: no leader after bootstrapping by multicast: %v (status %+v)", n.ID(), err, n.Status())
		}
	}
	// Any node takes the write: a follower forwards it to the leader.
	if _, err := nodes[2].Replicate(ctx, 0, "put", put("k", "v")); err != nil {
		t.Fatalf("Replicate: %v", err)
	}
	for i := range nodes[:3] {
		if st, err := (fileBootstrapStore{dir: dirs[i]}).load(); err != nil || !st.Formed || !slices.Equal(st.Set, ids[:3]) {
			t.Errorf("%s recorded %+v (err %v), want the set %v formed", ids[i], st, err, ids[:3])
		}
	}
	// A fourth node, found by multicast too, is added and becomes a voter.
	start(3)
	for {
		if m, err := nodes[0].Members(0); err == nil && slices.Contains(m.Voters, ids[3]) {
			break
		}
		select {
		case <-ctx.Done():
			m, _ := nodes[0].Members(0)
			t.Fatalf("the fourth node did not become a voter: members %+v", m)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestAutoJoinAddsDiscoveredNodes: once the cluster formed, a node that registers later is
// added (through addDiscovered, AddNode's place) by the leader of partition 0 alone, and
// the members are never added again; with DisableAutoJoin nothing is added.
func TestAutoJoinAddsDiscoveredNodes(t *testing.T) {
	for _, disabled := range []bool{false, true} {
		c, reg := registryCluster(t, 3, 3, testRegistrySecret)
		var mu sync.Mutex
		var calls []string // caller:added
		c.opts = func(i int, o *testNodeOptions) {
			id := c.ids[i]
			o.addDiscovered = func(_ context.Context, node, addr string) error {
				mu.Lock()
				defer mu.Unlock()
				calls = append(calls, id+":"+node+"@"+addr)
				return errors.New("no membership changes yet") // retried: calls repeat
			}
		}
		inner := c.cfg
		c.cfg = func(i int, cfg *Config) {
			inner(i, cfg)
			cfg.DisableAutoJoin = disabled
			// The test names the leader of partition 0 once: the balancer must not move it.
			cfg.DisableLeaderBalancing = true
		}
		c.startAll()
		lead := c.leaders()[0]
		o := RegistryOptions{Cluster: "kommander", Secret: testRegistrySecret, TTL: 20 * c.tick, Interval: 5 * c.tick, Clock: c.clock, Logger: discardLogger()}
		d, err := RegistryDiscovery(o, reg.url)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Announce(context.Background(), Announcement{ID: "n4", Addr: "n4-addr"}); err != nil {
			t.Fatal(err)
		}
		count := func() (n int, others []string) {
			mu.Lock()
			defer mu.Unlock()
			for _, call := range calls {
				if call == c.ids[lead]+":n4@n4-addr" {
					n++
				} else {
					others = append(others, call)
				}
			}
			return n, others
		}
		if disabled {
			for k := 0; k < 100; k++ {
				c.clock.Advance(c.tick)
			}
			if n, others := count(); n != 0 || len(others) != 0 {
				t.Fatalf("DisableAutoJoin: AutoJoin added %d times, and %v", n, others)
			}
		} else {
			c.waitFor("the leader of partition 0 adds n4, and retries", 2000, func() bool { n, _ := count(); return n >= 2 })
			if _, others := count(); len(others) != 0 {
				t.Fatalf("AutoJoin calls other than the leader of partition 0 adding n4: %v", others)
			}
		}
		d.Close()
		c.stopAll()
	}
}

// TestLateNodeWaitsToBeAdded: a brand-new node that starts after the cluster formed
// learns so, records it, and runs as a new node waiting to be added: its partitions have
// no voters and never campaign, and a restart comes back the same way, never
// bootstrapping a second cluster.
func TestLateNodeWaitsToBeAdded(t *testing.T) {
	c, _ := registryCluster(t, 4, 3, testRegistrySecret)
	inner := c.cfg
	c.cfg = func(i int, cfg *Config) {
		inner(i, cfg)
		cfg.DisableAutoJoin = true // nobody adds it
	}
	for i := 0; i < 3; i++ {
		c.start(i)
	}
	c.waitFor("the first three formed", 3000, func() bool { return c.formedSet(2) != nil })
	c.start(3)
	late := func() bootstrapState {
		st, _ := fileBootstrapStore{dir: c.dataDirs[3]}.load()
		return st
	}
	c.waitFor("n4 learns the cluster formed without it", 3000, func() bool { return late().Exists })
	for k := 0; k < 300; k++ { // 30 election timeouts
		c.clock.Advance(c.tick)
	}
	for p, st := range c.nodes[3].Status().Partitions {
		if st.Role != "follower" || st.Term != 0 {
			t.Fatalf("n4, waiting to be added, has partition %d as a %s in term %d", p, st.Role, st.Term)
		}
	}
	if st := late(); st.Formed || st.Coord != "" || st.Addrs["n1"] == "" {
		t.Fatalf("n4 recorded %+v; want no set, no promise, and the nodes it discovered", st)
	}
	c.stop(3)
	n, err := NewNode(c.config(3))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop(context.Background())
	if !n.boot.joining() || !slices.Equal(n.out.peers, c.ids[:3]) {
		t.Fatalf("restarted n4: joining %v, peers %v; want joining, talking with %v", n.boot.joining(), n.out.peers, c.ids[:3])
	}
}

// TestAutoJoinFourthNodeBecomesVoter: three brand-new nodes form a cluster from a
// registry; a fourth that starts later is added by AutoJoin (a learner, then a voter in
// every partition once caught up) and applies the cluster's writes.
func TestAutoJoinFourthNodeBecomesVoter(t *testing.T) {
	c, _ := registryCluster(t, 4, 3, testRegistrySecret)
	for i := 0; i < 3; i++ {
		c.start(i)
	}
	c.waitFor("the first three formed", 3000, func() bool { return c.formedSet(2) != nil })
	lead := c.leaders()
	stop := c.pump()
	_, err := c.nodes[lead[0]].Replicate(ctxT(t), 0, "put", put("k", "v"))
	stop()
	if err != nil {
		t.Fatal(err)
	}
	c.start(3)
	c.waitFor("n4 is a voter in every partition", 5000, func() bool {
		for p := 0; p < c.partitions; p++ {
			m, err := c.nodes[0].Members(p)
			if err != nil || !slices.Contains(m.Voters, "n4") {
				return false
			}
		}
		v, _ := c.sms[3].get(0, "k")
		return v == "v"
	})
}
