package kommander

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"
)

// Whole nodes over the real transports on 127.0.0.1: a 3-node cluster replicates on every
// partition and survives a node restart, over TCP and HTTP, in the clear, with mutual TLS
// and with a shared secret; a node with the wrong certificate or secret is kept out.

// clusterSM records what each partition applied.
type clusterSM struct {
	mu      sync.Mutex
	applied map[int][]string
}

func (s *clusterSM) Apply(partition int, entries []Entry, _ []any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.applied == nil {
		s.applied = make(map[int][]string)
	}
	for _, e := range entries {
		s.applied[partition] = append(s.applied[partition], string(e.Data))
	}
	return nil
}

func (s *clusterSM) Applied(int) uint64 { return 0 } // keeps nothing: replayed on restart

func (s *clusterSM) has(partition int, value string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.applied[partition] {
		if v == value {
			return true
		}
	}
	return false
}

const clusterPartitions = 4

// debugClusterLogs sends the cluster tests' transport logs to stderr.
const debugClusterLogs = false

// clusterMember is one node of a test cluster with what it needs to restart.
type clusterMember struct {
	id, addr, dir string
	tcfg          TransportConfig
	tr            testTransport
	sm            *clusterSM
	node          *Node
}

type clusterVariant struct {
	name string
	// secure sets TLS or a secret on a member's transport config; rogue, when set, makes
	// the config of a node that must be kept out.
	secure func(c *TransportConfig)
	rogue  func(c *TransportConfig)
}

func clusterVariants(t *testing.T) []clusterVariant {
	plain := clusterVariant{name: "plain", secure: func(*TransportConfig) {}}
	if testing.Short() {
		return []clusterVariant{plain}
	}
	pki, other := newTestPKI(t, "cluster"), newTestPKI(t, "rogue")
	secret := []byte("cluster-test-shared-secret")
	return []clusterVariant{
		plain,
		{name: "mtls",
			secure: func(c *TransportConfig) { c.TLS = mutualTLS(pki, pki) },
			rogue:  func(c *TransportConfig) { c.TLS = mutualTLS(other, pki) }},
		{name: "secret",
			secure: func(c *TransportConfig) { c.Secret = secret },
			rogue:  func(c *TransportConfig) { c.Secret = []byte("not-the-cluster-secret") }},
	}
}

func clusterTransportConfig(id, addr string) TransportConfig {
	c := transportTestConfig(id)
	c.Addr = addr
	c.KeepAlive, c.PeerTimeout = 200*time.Millisecond, 2*time.Second
	if debugClusterLogs {
		c.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return c
}

// startMember builds m's transport (on m.addr, or any port the first time) and its node.
func startMember(t *testing.T, tc transportCase, m *clusterMember, peers []Peer) {
	t.Helper()
	tr, err := tc.new(m.tcfg)
	if err != nil {
		t.Fatalf("%s transport: %v", m.id, err)
	}
	m.tr, m.sm = tr, &clusterSM{}
	n, err := NewNode(Config{
		NodeID: m.id, DataDir: m.dir, Partitions: clusterPartitions, Peers: peers,
		StateMachine: m.sm, CustomTransport: tr, UnsafeNoSync: true,
		ElectionTimeout: 300 * time.Millisecond, HeartbeatInterval: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		tr.Close()
		t.Fatalf("%s NewNode: %v", m.id, err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatalf("%s Start: %v", m.id, err)
	}
	m.node = n
}

func stopMember(t *testing.T, m *clusterMember) {
	if m.node == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.node.Stop(ctx); err != nil {
		t.Errorf("stop %s: %v", m.id, err)
	}
	m.node = nil
}

// replicateEverywhere writes value on every partition through any node (forwarding to the
// leader) and waits until every running member applied it.
func replicateEverywhere(t *testing.T, via *clusterMember, members []*clusterMember, value string) {
	t.Helper()
	for p := 0; p < clusterPartitions; p++ {
		ctx, cancel := context.WithTimeout(context.Background(), transportWait)
		for {
			_, err := via.node.Replicate(ctx, p, "Set", []byte(value))
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				cancel()
				t.Fatalf("replicate %q on partition %d via %s: %v", value, p, via.id, err)
			}
			// No leader yet, or it just changed: Raft settles; try again.
			waitForCondition(t, transportWait, "a moment", func() bool { return true })
		}
		cancel()
	}
	for _, m := range members {
		if m.node == nil {
			continue
		}
		waitForCondition(t, transportWait, fmt.Sprintf("%s to apply %q on every partition", m.id, value), func() bool {
			for p := 0; p < clusterPartitions; p++ {
				if !m.sm.has(p, value) {
					return false
				}
			}
			return true
		})
	}
}

func TestClusterOverEachTransportReplicatesAndSurvivesRestart(t *testing.T) {
	for _, tc := range networkCases() {
		for _, v := range clusterVariants(t) {
			t.Run(tc.name+"/"+v.name, func(t *testing.T) {
				members := make([]*clusterMember, 3)
				var peers []Peer
				// Bind every transport first so that the peers list holds real ports.
				for i := range members {
					m := &clusterMember{id: fmt.Sprintf("n%d", i+1), dir: t.TempDir()}
					m.tcfg = clusterTransportConfig(m.id, "127.0.0.1:0")
					v.secure(&m.tcfg)
					tr, err := tc.new(m.tcfg)
					if err != nil {
						t.Fatal(err)
					}
					m.addr = tr.Addr()
					tr.Close()
					m.tcfg.Addr = m.addr
					members[i] = m
					peers = append(peers, Peer{ID: m.id, Addr: m.addr})
				}
				for _, m := range members {
					startMember(t, tc, m, peers)
				}
				defer func() {
					for _, m := range members {
						stopMember(t, m)
					}
				}()
				replicateEverywhere(t, members[0], members, "first")

				// n3 restarts on its address and data directory and catches up.
				stopMember(t, members[2])
				replicateEverywhere(t, members[1], members, "while n3 is down")
				startMember(t, tc, members[2], peers)
				replicateEverywhere(t, members[2], members, "after n3 restarted")
				for p := 0; p < clusterPartitions; p++ {
					if !members[2].sm.has(p, "while n3 is down") {
						t.Fatalf("restarted n3 lacks partition %d's entry written while it was down", p)
					}
				}

				if v.rogue == nil {
					return
				}
				// A node with the wrong certificate or secret takes n3's place: it gets
				// nothing in, sends nothing that is accepted, and the cluster goes on.
				stopMember(t, members[2])
				rogue := &clusterMember{id: "n3", dir: t.TempDir(), tcfg: clusterTransportConfig("n3", members[2].addr)}
				v.rogue(&rogue.tcfg)
				startMember(t, tc, rogue, peers)
				defer stopMember(t, rogue)
				replicateEverywhere(t, members[0], members[:2], "with a rogue n3")
				waitForCondition(t, transportWait, "the rogue's messages to be refused", func() bool {
					return rogue.tr.Stats().Dropped > 0
				})
				if s := rogue.tr.Stats(); s.Sent != 0 || s.Received != 0 {
					t.Fatalf("rogue n3 exchanged messages with the cluster: %+v", s)
				}
				for p := 0; p < clusterPartitions; p++ {
					if rogue.sm.has(p, "with a rogue n3") {
						t.Fatalf("rogue n3 applied partition %d's entry", p)
					}
				}
			})
		}
	}
}
