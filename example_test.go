package kommander_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"log"
	"sync"
	"time"

	"github.com/kommander-go/kommander"
)

// counter is a tiny replicated state machine: each "Add" entry adds its payload (a
// uvarint) to the partition's total, and Apply returns the new total to the caller.
type counter struct {
	mu     sync.Mutex
	totals map[int]uint64
}

func (c *counter) Apply(partition int, entries []kommander.Entry, results []any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, e := range entries {
		n, _ := binary.Uvarint(e.Data)
		c.totals[partition] += n
		results[i] = c.totals[partition]
	}
	return nil
}

// Applied says the counter keeps nothing across restarts: the node replays its log.
func (c *counter) Applied(partition int) uint64 { return 0 }

// Example runs a three-node cluster in one process on an in-memory network and
// replicates three commands through whichever node leads the partition of a key. A real
// deployment sets DataDir and Addr instead of Storage and CustomTransport; see
// ExampleNewNode_production.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	network := kommander.NewMemoryNetwork(1)
	ids := []string{"n1", "n2", "n3"}
	var peers []kommander.Peer
	for _, id := range ids {
		peers = append(peers, kommander.Peer{ID: id, Addr: id})
	}
	var nodes []*kommander.Node
	for _, id := range ids {
		node, err := kommander.NewNode(kommander.Config{
			NodeID:          id,
			Peers:           peers,
			Partitions:      4,
			StateMachine:    &counter{totals: map[int]uint64{}},
			Storage:         kommander.NewMemoryStorage(),
			CustomTransport: network.Transport(id),
		})
		if err != nil {
			log.Fatal(err)
		}
		if err := node.Start(ctx); err != nil {
			log.Fatal(err)
		}
		defer node.Stop(context.Background())
		nodes = append(nodes, node)
	}

	// Any node accepts a proposal: a follower forwards it to the partition's leader.
	// Replicate returns once the entry is committed and applied on the node asked.
	p := nodes[0].PartitionFor([]byte("visits"))
	if _, err := nodes[0].WaitForLeader(ctx, p); err != nil {
		log.Fatal(err)
	}
	for i, node := range nodes {
		res, err := node.Replicate(ctx, p, "Add", binary.AppendUvarint(nil, uint64(i+1)))
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s: total %d\n", node.ID(), res.Value)
	}
	// Output:
	// n1: total 1
	// n2: total 3
	// n3: total 6
}

// ExampleNewNode_production shows the configuration of one node of a real cluster: its
// WAL in DataDir, TCP between nodes, every member listed in Peers on every node.
func ExampleNewNode_production() {
	peers, err := kommander.ParsePeers("n1=10.0.0.1:7000,n2=10.0.0.2:7000,n3=10.0.0.3:7000")
	if err != nil {
		log.Fatal(err)
	}
	node, err := kommander.NewNode(kommander.Config{
		NodeID:       "n1",
		Addr:         "10.0.0.1:7000",
		DataDir:      "/var/lib/myapp/raft",
		Partitions:   16,
		Peers:        peers,
		Transport:    kommander.TCP,
		StateMachine: &counter{totals: map[int]uint64{}},
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if err := node.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer node.Stop(ctx)
	// ... node.Replicate(ctx, node.PartitionFor(key), "Add", data) ...
}

// Example_testingWithFakeClock is how an application tests itself against failures: whole
// nodes in one process, time that moves only when the test says so, and a network the test
// can cut. Here the leader of a partition is isolated; the others elect a new one after an
// election timeout of fake time, and writes go on through it.
func Example_testingWithFakeClock() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	clock := kommander.NewFakeClock(time.Time{})
	network := kommander.NewMemoryNetwork(7) // seeded: its drops and delays replay exactly
	network.SetClock(clock)
	ids := []string{"n1", "n2", "n3"}
	var peers []kommander.Peer
	for _, id := range ids {
		peers = append(peers, kommander.Peer{ID: id, Addr: id})
	}
	nodes := map[string]*kommander.Node{}
	for i, id := range ids {
		node, err := kommander.NewNode(kommander.Config{
			NodeID:          id,
			Peers:           peers,
			StateMachine:    &counter{totals: map[int]uint64{}},
			Storage:         kommander.NewMemoryStorage(),
			CustomTransport: network.Transport(id),
			Clock:           clock,
			RandSeed:        int64(i + 1), // reproducible election timeouts
		})
		if err != nil {
			log.Fatal(err)
		}
		if err := node.Start(ctx); err != nil {
			log.Fatal(err)
		}
		defer node.Stop(context.Background())
		nodes[id] = node
	}
	// advanceUntil moves fake time in heartbeat-sized steps until cond holds.
	advanceUntil := func(cond func() bool) {
		for step := 0; !cond(); step++ {
			if step == 100000 {
				log.Fatal("condition not reached")
			}
			clock.Advance(10 * time.Millisecond)
		}
	}
	leaderAmong := func(ids ...string) string {
		for _, id := range ids {
			if nodes[id].IsLeader(0) {
				return id
			}
		}
		return ""
	}
	advanceUntil(func() bool { return leaderAmong(ids...) != "" })
	old := leaderAmong(ids...)
	var others []string
	for _, id := range ids {
		if id != old {
			others = append(others, id)
		}
	}

	network.Isolate(old)
	start := clock.Now()
	advanceUntil(func() bool { return leaderAmong(others...) != "" })
	fmt.Println("new leader elected within 3 election timeouts:", clock.Now().Sub(start) < 3*kommander.DefaultElectionTimeout)

	// Replicate needs time to pass for its entry to commit, so it runs beside the clock.
	done := make(chan error, 1)
	go func() {
		_, err := nodes[others[0]].Replicate(ctx, 0, "Add", binary.AppendUvarint(nil, 5))
		done <- err
	}()
	var err error
	advanceUntil(func() bool {
		select {
		case err = <-done:
			return true
		default:
			return false
		}
	})
	fmt.Println("write through the new leader:", err)
	// Output:
	// new leader elected within 3 election timeouts: true
	// write through the new leader: <nil>
}
