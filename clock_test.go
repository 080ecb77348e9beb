package kommander

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

func TestFakeClockFiresTimersInDueOrder(t *testing.T) {
	c := NewFakeClock(time.Time{})
	start := c.Now()
	var got []int
	c.AfterFunc(30*time.Millisecond, func() { got = append(got, 30) })
	c.AfterFunc(10*time.Millisecond, func() { got = append(got, 10) })
	c.AfterFunc(10*time.Millisecond, func() { got = append(got, 11) }) // same due time: creation order
	stopped := c.AfterFunc(20*time.Millisecond, func() { got = append(got, 20) })
	if !stopped.Stop() {
		t.Fatal("Stop of a pending timer reported false")
	}
	c.Advance(25 * time.Millisecond)
	if want := []int{10, 11}; !slices.Equal(got, want) {
		t.Fatalf("after 25ms fired %v, want %v", got, want)
	}
	if d := c.Now().Sub(start); d != 25*time.Millisecond {
		t.Fatalf("Now moved by %v, want 25ms", d)
	}
	c.Advance(5 * time.Millisecond)
	if want := []int{10, 11, 30}; !slices.Equal(got, want) {
		t.Fatalf("after 30ms fired %v, want %v", got, want)
	}
}

func TestFakeClockTimerSeesItsDueTime(t *testing.T) {
	c := NewFakeClock(time.Time{})
	start := c.Now()
	var at time.Duration
	c.AfterFunc(7*time.Millisecond, func() { at = c.Now().Sub(start) })
	c.Advance(time.Second)
	if at != 7*time.Millisecond {
		t.Fatalf("timer saw Now = start+%v, want start+7ms", at)
	}
}

// TestFakeClockAdvanceHandsOverEveryTick checks the property node tests rely on: Advance
// returns only after the ticker's reader took each tick, so no tick is lost or pending.
func TestFakeClockAdvanceHandsOverEveryTick(t *testing.T) {
	c := NewFakeClock(time.Time{})
	tk := c.NewTicker(10 * time.Millisecond)
	var n atomic.Int64
	go func() {
		for range tk.C() {
			n.Add(1)
		}
	}()
	c.Advance(50 * time.Millisecond)
	// The 6th tick is taken only once the reader is back at its receive, so it has
	// counted all 5 earlier ones; none was dropped as a time.Ticker would drop them.
	c.Advance(10 * time.Millisecond)
	if got := n.Load(); got != 5 && got != 6 {
		t.Fatalf("reader counted %d ticks after 6 hand-overs, want 5 or 6", got)
	}
	tk.Stop()
	c.Advance(time.Second) // a stopped ticker no longer blocks Advance
}

func TestFakeClockStoppedTickerUnblocksAdvance(t *testing.T) {
	c := NewFakeClock(time.Time{})
	tk := c.NewTicker(time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.BlockUntil(ctx, 1); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { c.Advance(time.Millisecond); close(done) }()
	tk.Stop() // nobody reads: Stop must release the pending hand-over
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("Advance stayed blocked on a stopped ticker")
	}
	if c.Waiters() != 0 {
		t.Fatalf("Waiters = %d after Stop, want 0", c.Waiters())
	}
}
