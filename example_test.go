package kommander_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/kommander-go/kommander"
)

// store is a small replicated key-value store: the application's StateMachine. Its
// commands are "set" with "key=value" and "get" with "key"; a get goes through the log, so
// it reads the latest committed value (a linearizable read).
type store struct {
	mu sync.Mutex
	kv map[string]string
}

func newStore() *store { return &store{kv: map[string]string{}} }

func (s *store) Apply(partition int, entries []kommander.Entry, results []any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, e := range entries {
		switch e.Type {
		case "set":
			k, v, _ := strings.Cut(string(e.Data), "=")
			s.kv[k] = v
		case "get":
			results[i] = s.kv[string(e.Data)]
		}
	}
	return nil
}

// Applied is 0: this store keeps nothing across restarts, so a restarted node replays
// its whole log into it.
func (s *store) Applied(partition int) uint64 { return 0 }

// cluster starts n nodes in one process, connected by a MemoryNetwork and driven by a
// FakeClock: the way to test an application built on kommander without sleeping.
func cluster(n int, clock *kommander.FakeClock, network *kommander.MemoryNetwork) []*kommander.Node {
	var peers []kommander.Peer
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("n%d", i)
		peers = append(peers, kommander.Peer{ID: id, Addr: id})
	}
	var nodes []*kommander.Node
	for i, p := range peers {
		node, err := kommander.NewNode(kommander.Config{
			NodeID:          p.ID,
			Peers:           peers,
			Partitions:      4,
			StateMachine:    newStore(),
			Storage:         kommander.NewMemoryStorage(),
			CustomTransport: network.Transport(p.ID),
			Clock:           clock,
			RandSeed:        int64(i + 1),
		})
		if err != nil {
			panic(err)
		}
		if err := node.Start(context.Background()); err != nil {
			panic(err)
		}
		nodes = append(nodes, node)
	}
	return nodes
}

// leaderOf advances the fake clock until some node leads the partition, and returns it.
func leaderOf(nodes []*kommander.Node, partition int, clock *kommander.FakeClock) *kommander.Node {
	for {
		for _, n := range nodes {
			if n.IsLeader(partition) {
				return n
			}
		}
		clock.Advance(100 * time.Millisecond) // one heartbeat interval
	}
}

// Example runs a three-node cluster in one process, replicates a write and reads it back
// through the log.
func Example() {
	clock := kommander.NewFakeClock(time.Time{})
	network := kommander.NewMemoryNetwork(1)
	network.SetClock(clock)
	nodes := cluster(3, clock, network)
	defer func() {
		for _, n := range nodes {
			_ = n.Stop(context.Background())
		}
	}()

	ctx := context.Background()
	key := []byte("greeting")
	partition := nodes[0].PartitionFor(key)
	leader := leaderOf(nodes, partition, clock)

	res, err := leader.Replicate(ctx, partition, "set", []byte("greeting=hello"))
	if err != nil {
		fmt.Println("write failed:", err)
		return
	}
	fmt.Println("committed at index", res.Index)

	res, err = leader.Replicate(ctx, partition, "get", key)
	if err != nil {
		fmt.Println("read failed:", err)
		return
	}
	fmt.Println("read:", res.Value)
	// Output:
	// committed at index 2
	// read: hello
}

// ExampleMemoryNetwork cuts a partition's leader off from its peers: the others elect a
// new leader, and writes go on.
func ExampleMemoryNetwork() {
	clock := kommander.NewFakeClock(time.Time{})
	network := kommander.NewMemoryNetwork(7)
	network.SetClock(clock)
	nodes := cluster(3, clock, network)
	defer func() {
		for _, n := range nodes {
			_ = n.Stop(context.Background())
		}
	}()

	old := leaderOf(nodes, 0, clock)
	network.Isolate(old.ID())
	var others []*kommander.Node
	for _, n := range nodes {
		if n != old {
			others = append(others, n)
		}
	}
	leader := leaderOf(others, 0, clock)
	fmt.Println("new leader differs from the isolated one:", leader.ID() != old.ID())

	_, err := leader.Replicate(context.Background(), 0, "set", []byte("k=v"))
	fmt.Println("write after failover:", err)
	// Output:
	// new leader differs from the isolated one: true
	// write after failover: <nil>
}

// ExampleConfig_Validate shows the check of scenario S8: timers that cannot work are
// refused with a message that says why.
func ExampleConfig_Validate() {
	err := kommander.Config{
		NodeID:            "n1",
		DataDir:           "/var/lib/app/raft",
		StateMachine:      newStore(),
		ElectionTimeout:   time.Second,
		HeartbeatInterval: time.Second,
	}.Validate()
	fmt.Println(errors.Is(err, kommander.ErrInvalidConfig))
	fmt.Println(err)
	// Output:
	// true
	// kommander: invalid config: HeartbeatInterval (1s) must be shorter than ElectionTimeout (1s), or followers time out between heartbeats; use about a tenth
}

// ExampleKeyPartition maps keys to partitions the way Node.PartitionFor does.
func ExampleKeyPartition() {
	for _, key := range []string{"user:1", "user:2", "order:9"} {
		fmt.Println(key, "->", kommander.KeyPartition([]byte(key), 16))
	}
	// Output:
	// user:1 -> 11
	// user:2 -> 14
	// order:9 -> 10
}
