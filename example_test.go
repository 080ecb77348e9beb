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
