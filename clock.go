package kommander

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Clock is the source of time for a Node and for the memory network. Production code uses
// the real clock (the default); tests use NewFakeClock so that elections and heartbeats
// happen exactly when the test advances time, never by sleeping.
//
// The Raft core never sees a clock: the node turns ticker ticks into Raft ticks, and a
// ticker measures elapsed (monotonic) time, so wall-clock jumps cannot freeze failover.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// NewTicker returns a ticker that fires every d (d > 0).
	NewTicker(d time.Duration) Ticker
	// AfterFunc calls f in its own goroutine (real clock) or in the goroutine that advances
	// the clock (fake clock) once d has elapsed, unless stopped first.
	AfterFunc(d time.Duration, f func()) Timer
}

// Ticker delivers ticks on a channel, like time.Ticker.
type Ticker interface {
	// C returns the channel the ticks are delivered on.
	C() <-chan time.Time
	// Stop turns the ticker off; no tick is delivered after Stop returns.
	Stop()
}

// Timer is a pending AfterFunc call.
type Timer interface {
	// Stop prevents the call if it has not happened yet, and reports whether it did so.
	Stop() bool
}

// RealClock returns the Clock backed by package time. It is what a Node uses when
// Config.Clock is nil.
func RealClock() Clock { return realClock{} }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

type realTicker struct{ t *time.Ticker }

func (t realTicker) C() <-chan time.Time { return t.t.C }
func (t realTicker) Stop()               { t.t.Stop() }

// FakeClock is a Clock whose time moves only when Advance is called. It is deterministic:
// timers and ticks fire in order of their due time (ties in order of creation), in the
// goroutine that calls Advance.
//
// A tick is handed over synchronously: Advance waits until the ticker's owner has received
// it (or stopped the ticker). So when Advance returns, every node loop driven by this clock
// has taken its ticks and gone back to waiting, which lets a test advance time in steps
// without sleeping and without racing the loops. The flip side: a ticker that is never read
// and never stopped blocks Advance, and so does a node whose storage never returns from a
// Save (a node takes at most one tick while its fsync runs).
type FakeClock struct {
	advanceMu sync.Mutex // serializes Advance calls

	mu      sync.Mutex
	now     time.Time
	seq     uint64
	waiters []*fakeWaiter
	changed chan struct{} // closed and replaced whenever waiters are added
}

// fakeWaiter is a ticker (period > 0, tick channel) or an AfterFunc timer (f != nil).
type fakeWaiter struct {
	clock   *FakeClock
	due     time.Time
	seq     uint64
	period  time.Duration
	c       chan time.Time
	f       func()
	stopped chan struct{}
	once    sync.Once
}

// NewFakeClock returns a FakeClock that starts at start. A zero start means
// 2000-01-01T00:00:00Z, so that runs are reproducible.
func NewFakeClock(start time.Time) *FakeClock {
	if start.IsZero() {
		start = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	return &FakeClock{now: start, changed: make(chan struct{})}
}

// Now returns the fake current time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTicker returns a ticker that fires every d of fake time. It panics if d <= 0, like
// time.NewTicker.
func (c *FakeClock) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("kommander: FakeClock.NewTicker: non-positive interval")
	}
	return fakeTicker{c.add(&fakeWaiter{period: d, c: make(chan time.Time)}, d)}
}

type fakeTicker struct{ w *fakeWaiter }

func (t fakeTicker) C() <-chan time.Time { return t.w.c }
func (t fakeTicker) Stop()               { t.w.Stop() }

// AfterFunc calls f, in the goroutine that calls Advance, once d of fake time has elapsed.
func (c *FakeClock) AfterFunc(d time.Duration, f func()) Timer {
	return c.add(&fakeWaiter{f: f}, d)
}

func (c *FakeClock) add(w *fakeWaiter, d time.Duration) *fakeWaiter {
	w.clock = c
	w.stopped = make(chan struct{})
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	w.seq = c.seq
	w.due = c.now.Add(max(d, 0))
	c.waiters = append(c.waiters, w)
	close(c.changed)
	c.changed = make(chan struct{})
	return w
}

// Stop removes the waiter from its clock. For a timer it reports whether the call was
// prevented.
func (w *fakeWaiter) Stop() bool {
	c := w.clock
	c.mu.Lock()
	found := false
	for i, x := range c.waiters {
		if x == w {
			c.waiters = append(c.waiters[:i], c.waiters[i+1:]...)
			found = true
			break
		}
	}
	c.mu.Unlock()
	w.once.Do(func() { close(w.stopped) })
	return found
}

// Advance moves the clock forward by d, firing every tick and timer that falls due on the
// way, in order, each at its own due time.
func (c *FakeClock) Advance(d time.Duration) {
	c.advanceMu.Lock()
	defer c.advanceMu.Unlock()
	c.mu.Lock()
	target := c.now.Add(d)
	c.mu.Unlock()
	for {
		w, now := c.nextDue(target)
		if w == nil {
			break
		}
		if w.f != nil {
			w.f()
			continue
		}
		select {
		case w.c <- now:
		case <-w.stopped:
		}
	}
	c.mu.Lock()
	if target.After(c.now) {
		c.now = target
	}
	c.mu.Unlock()
}

// nextDue pops the earliest waiter due at or before target, sets the clock to its due time
// and reschedules it if it is a ticker.
func (c *FakeClock) nextDue(target time.Time) (*fakeWaiter, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.waiters) == 0 {
		return nil, time.Time{}
	}
	sort.SliceStable(c.waiters, func(i, j int) bool {
		a, b := c.waiters[i], c.waiters[j]
		if !a.due.Equal(b.due) {
			return a.due.Before(b.due)
		}
		return a.seq < b.seq
	})
	w := c.waiters[0]
	if w.due.After(target) {
		return nil, time.Time{}
	}
	if w.due.After(c.now) {
		c.now = w.due
	}
	if w.period > 0 {
		w.due = w.due.Add(w.period)
	} else {
		c.waiters = c.waiters[1:]
	}
	return w, c.now
}

// Waiters returns how many tickers and pending timers the clock holds.
func (c *FakeClock) Waiters() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// BlockUntil waits until the clock holds at least n tickers and pending timers (for
// example, until every started node runs its ticker), or ctx ends.
func (c *FakeClock) BlockUntil(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		have, changed := len(c.waiters), c.changed
		c.mu.Unlock()
		if have >= n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
