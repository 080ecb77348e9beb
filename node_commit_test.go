package kommander

import (
	"context"
	"testing"
	"time"
)

// TestAckDuringTheNextSaveAppliesAtOnce: the followers' acknowledgements of entry A reach
// the leader while it saves the next batch (B); A is committed by them and applied at
// once, without waiting for B's fsync. It used to wait: committed entries left the loop
// only with the next raftReady, after the Save in flight.
func TestAckDuringTheNextSaveAppliesAtOnce(t *testing.T) {
	c, held, lead := startHeldCluster(t)
	n := c.nodes[lead]
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		for _, h := range held {
			close(h.open)
		}
	})
	for _, h := range held {
		h.arm()
	}
	a := make(chan error, 1)
	go func() { _, err := n.Replicate(ctx, 0, "put", put("a", "1")); a <- err }()
	<-held[lead].entered // the leader saves A
	held[lead].tokens <- struct{}{}
	for i := range held {
		if i != lead {
			<-held[i].entered // each follower saves A, held
		}
	}
	go func() { _, _ = n.Replicate(ctx, 0, "put", put("b", "2")) }()
	<-held[lead].entered // the leader saves B (A's Save returned), held until the test ends
	for i := range held {
		if i != lead {
			held[i].tokens <- struct{}{} // the followers' A becomes durable: they acknowledge it
		}
	}
	select {
	case err := <-a:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("A, acknowledged by both followers, is not applied while the leader's next Save runs")
	}
}
