package kommander

import (
	"context"
	"testing"
	"time"
)

func TestStaticDiscoveryAnswersItsPeersAndWatchesOnce(t *testing.T) {
	d := StaticDiscovery(Peer{ID: "b", Addr: "b:1"}, Peer{ID: "a", Addr: "a:1"})
	peers, err := d.Peers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	wantPeers(t, "Peers", peers, "b=b:1,a=a:1") // as given: NewNode validates them
	if err := d.Announce(context.Background(), Announcement{ID: "a"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := d.Watch(ctx)
	wantPeers(t, "Watch", <-w, "a=a:1,b=b:1")
	cancel()
	if _, ok := <-w; ok {
		t.Fatal("the watch channel holds a second set")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestPeerWatchHandsTheNewestSetAndClosesOnClose(t *testing.T) {
	w := newPeerWatch()
	ch := w.watch(context.Background())
	w.set([]Peer{{ID: "a", Addr: "1"}})
	w.set([]Peer{{ID: "a", Addr: "2"}}) // unread: replaces the first
	wantPeers(t, "first read", <-ch, "a=2")
	w.set([]Peer{{ID: "a", Addr: "2"}}) // no change: nothing sent
	select {
	case p := <-ch:
		t.Fatalf("a set that did not change was sent again: %v", p)
	default:
	}
	late := w.watch(context.Background())
	wantPeers(t, "a watcher that comes late", <-late, "a=2")
	w.close()
	for range ch {
	}
	for range late {
	}
	if _, ok := <-w.watch(context.Background()); ok {
		t.Fatal("a watch after close got a set")
	}
}

func TestPeerTableOwnershipStampsAndExpiry(t *testing.T) {
	now := time.Unix(1000, 0)
	tb := newPeerTable(2)
	claim := func(id, addr, inc string, stamp int64, left bool) (bool, error) {
		return tb.claim(id, announced{addr: addr, incarnation: inc, stamp: stamp, expires: now.Add(time.Second), left: left}, now)
	}
	if changed, err := claim("a", "h:1", "i1", 10, false); !changed || err != nil {
		t.Fatalf("first claim: %v %v", changed, err)
	}
	if changed, err := claim("a", "h:1", "i1", 11, false); changed || err != nil {
		t.Fatalf("renewal: %v %v, want no change", changed, err)
	}
	if changed, err := claim("a", "h:2", "i1", 5, false); changed || err != nil {
		t.Fatalf("an older stamp: %v %v, want it ignored", changed, err)
	}
	if _, err := claim("a", "h:3", "i2", 99, false); err == nil {
		t.Fatal("another incarnation took a live ID over")
	}
	if changed, err := claim("a", "h:2", "i1", 12, false); !changed || err != nil {
		t.Fatalf("a move: %v %v", changed, err)
	}
	claim("b", "h:1", "i1", 1, false)
	if _, err := claim("c", "h:1", "i1", 1, false); err == nil {
		t.Fatal("a third node in a table of two")
	}
	now = now.Add(time.Second)
	if !tb.expire(now) || len(tb.peers(now)) != 0 {
		t.Fatalf("after expiry: %v", tb.peers(now))
	}
	if _, err := claim("a", "h:3", "i2", 13, false); err != nil {
		t.Fatalf("another incarnation after expiry: %v", err)
	}
	wantPeers(t, "table", tb.peers(now), "a=h:3")
}

func TestMovedPeers(t *testing.T) {
	known := map[string]string{"a": "a:1", "b": "b:1"}
	got := movedPeers(known, []Peer{{ID: "a", Addr: "a:1"}, {ID: "b", Addr: "b:2"}, {ID: "c", Addr: "c:1"}})
	wantPeers(t, "moved", got, "b=b:2")
}

func TestRepeaterStopsAndWaits(t *testing.T) {
	clock := NewFakeClock(time.Time{})
	calls := 0
	r := startRepeater(clock, time.Second, func() { calls++ })
	clock.Advance(3500 * time.Millisecond)
	if calls != 3 {
		t.Fatalf("%d calls in 3.5 intervals, want 3", calls)
	}
	r.stop()
	clock.Advance(5 * time.Second)
	if calls != 3 || clock.Waiters() != 0 {
		t.Fatalf("after stop: %d calls, %d waiters", calls, clock.Waiters())
	}
}
