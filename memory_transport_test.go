package kommander

import (
	"testing"
	"time"
)

type recorder struct{ got []Message }

func (r *recorder) deliver(b []Message) { r.got = append(r.got, b...) }

func twoNodeNet(t *testing.T, seed int64) (*MemoryNetwork, Transport, *recorder) {
	t.Helper()
	n := NewMemoryNetwork(seed)
	a, b := n.Transport("a"), n.Transport("b")
	rb := &recorder{}
	if err := a.Start(func([]Message) {}); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(rb.deliver); err != nil {
		t.Fatal(err)
	}
	a.SetPeer("b", "b")
	return n, a, rb
}

func TestMemoryNetworkCutOneWayAndHeal(t *testing.T) {
	n, a, rb := twoNodeNet(t, 1)
	n.CutOneWay("a", "b")
	a.Send("b", []Message{{Type: MsgHeartbeat, To: "b"}})
	if len(rb.got) != 0 {
		t.Fatal("message crossed a cut link")
	}
	if n.Link("b", "a").Cut {
		t.Fatal("CutOneWay cut the reverse direction too")
	}
	n.Heal("a", "b")
	a.Send("b", []Message{{Type: MsgHeartbeat, To: "b"}})
	if len(rb.got) != 1 {
		t.Fatalf("after Heal got %d messages, want 1", len(rb.got))
	}
	if s := n.Stats(); s.Delivered != 1 || s.Dropped != 1 {
		t.Fatalf("stats = %+v, want 1 delivered, 1 dropped", s)
	}
}

func TestMemoryNetworkDelaysThroughItsClock(t *testing.T) {
	n, a, rb := twoNodeNet(t, 1)
	c := NewFakeClock(time.Time{})
	n.SetClock(c)
	n.SetLink("a", "b", LinkFaults{Delay: 10 * time.Millisecond})
	a.Send("b", []Message{{Type: MsgAppend, To: "b"}})
	c.Advance(9 * time.Millisecond)
	if len(rb.got) != 0 {
		t.Fatal("delayed message arrived early")
	}
	c.Advance(time.Millisecond)
	if len(rb.got) != 1 {
		t.Fatal("delayed message did not arrive on time")
	}
}

// TestMemoryNetworkFaultsAreReproducible runs the same lossy, duplicating, jittery traffic
// twice from one seed and expects the same deliveries in the same order.
func TestMemoryNetworkFaultsAreReproducible(t *testing.T) {
	run := func() []uint64 {
		n, a, rb := twoNodeNet(t, 42)
		c := NewFakeClock(time.Time{})
		n.SetClock(c)
		n.SetDefaultLink(LinkFaults{Loss: 0.3, Duplicate: 0.3, Jitter: 5 * time.Millisecond})
		for i := 0; i < 200; i++ {
			a.Send("b", []Message{{Type: MsgAppend, To: "b", Index: uint64(i)}})
		}
		c.Advance(time.Second)
		var idx []uint64
		for _, m := range rb.got {
			idx = append(idx, m.Index)
		}
		return idx
	}
	x, y := run(), run()
	if len(x) == 0 || len(x) != len(y) {
		t.Fatalf("runs delivered %d and %d messages", len(x), len(y))
	}
	dup, reordered := false, false
	seen := map[uint64]bool{}
	for i := range x {
		if x[i] != y[i] {
			t.Fatalf("delivery %d differs between runs: %d vs %d", i, x[i], y[i])
		}
		if seen[x[i]] {
			dup = true
		}
		seen[x[i]] = true
		if i > 0 && x[i] < x[i-1] {
			reordered = true
		}
	}
	if !dup || !reordered || len(seen) == 200 {
		t.Fatalf("faults not exercised: lost=%v dup=%v reordered=%v", len(seen) < 200, dup, reordered)
	}
}

func TestMemoryNetworkReceiverGetsItsOwnCopy(t *testing.T) {
	_, a, rb := twoNodeNet(t, 1)
	sent := []Message{{Type: MsgAppend, To: "b", Entries: []Entry{{Index: 1}}}}
	a.Send("b", sent)
	sent[0].Entries[0].Index = 99
	if rb.got[0].Entries[0].Index != 1 {
		t.Fatal("receiver shares the sender's entry slice")
	}
}

func TestMemoryNetworkPartitionGroups(t *testing.T) {
	n := NewMemoryNetwork(1)
	for _, id := range []string{"a", "b", "c"} {
		n.Transport(id)
	}
	n.Partition([]string{"a", "b"}, []string{"c"})
	if n.Link("a", "b").Cut || !n.Link("a", "c").Cut || !n.Link("c", "b").Cut {
		t.Fatal("Partition set the wrong links")
	}
	n.HealAll()
	if n.Link("a", "c").Cut {
		t.Fatal("HealAll left a cut")
	}
}
