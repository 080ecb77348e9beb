package kommander

import (
	"errors"
	"os"
	"testing"
)

// TestNodeThatLostItsDataIsRefused is S36: a member restarted on an empty data directory
// is known to its peers by its old directory's incarnation; they refuse it, and it fails
// with ErrDataLost instead of voting under an ID whose votes it forgot. The others go on.
func TestNodeThatLostItsDataIsRefused(t *testing.T) {
	c := newNodeCluster(t, 3, 1, false)
	c.useWAL()
	c.startAll()
	defer c.pump()()
	lead := c.leaders()[0]
	if _, err := c.nodes[lead].Replicate(ctxT(t), 0, "put", put("k", "before")); err != nil {
		t.Fatal(err)
	}
	wiped := (lead + 1) % 3
	c.stop(wiped)
	if err := os.RemoveAll(c.dataDirs[wiped]); err != nil {
		t.Fatal(err)
	}
	c.start(wiped)
	n := c.nodes[wiped]
	select {
	case <-n.Done():
	case <-ctxT(t).Done():
		t.Fatal("a node whose data was wiped still runs under its old ID")
	}
	if err := n.Err(); !errors.Is(err, ErrDataLost) {
		t.Fatalf("the wiped node failed with %v, want ErrDataLost", err)
	}
	if _, err := c.nodes[lead].Replicate(ctxT(t), 0, "put", put("k", "after")); err != nil {
		t.Fatalf("the cluster stopped taking writes: %v", err)
	}
}

// TestNewDataDirectoryVotesOnlyOnceAMajorityAcceptedIt is S36's other half: a node on a new
// data directory neither campaigns nor votes until a majority of the members (itself
// included) accepted its incarnation, so a brand-new cluster forms as soon as two of three
// nodes run, and a member that starts late is accepted and catches up.
func TestNewDataDirectoryVotesOnlyOnceAMajorityAcceptedIt(t *testing.T) {
	c := newNodeCluster(t, 3, 1, false)
	c.useWAL()
	c.start(0)
	stop := c.pump()
	for k := 0; k < 30*10; k++ { // 30 election timeouts
		c.clock.Advance(c.tick)
		if st := c.nodes[0].Status().Partitions[0]; st.Role != "follower" || st.Term != 0 {
			t.Fatalf("a new node that no peer accepted campaigned: %s in term %d", st.Role, st.Term)
		}
	}
	stop()
	c.start(1)
	defer c.pump()()
	lead := c.leaders()[0]
	if _, err := c.nodes[lead].Replicate(ctxT(t), 0, "put", put("k", "v")); err != nil {
		t.Fatal(err)
	}
	c.start(2)
	c.waitFor("the late member applied the write", 2000, func() bool {
		v, _ := c.sms[2].get(0, "k")
		return v == "v"
	})
	select {
	case <-c.nodes[2].Done():
		t.Fatalf("the late member of a new cluster was refused: %v", c.nodes[2].Err())
	default:
	}
}
