package kommander

import (
	"testing"
	"time"
)

func TestBackoffGrowsToItsCapWithJitter(t *testing.T) {
	b := backoff{max: 80 * time.Millisecond}
	var last time.Duration
	for i := 0; i < 20; i++ {
		step := max(b.cur, minTransportBackoff)
		d := b.next()
		if d < step/2 || d >= step/2+step {
			t.Fatalf("attempt %d waited %v, want within [%v, %v)", i, d, step/2, step/2+step)
		}
		last = step
	}
	if last != 80*time.Millisecond {
		t.Fatalf("backoff settled at %v, want the cap", last)
	}
	b.reset()
	if d := b.next(); d >= 2*minTransportBackoff {
		t.Fatalf("after reset waited %v", d)
	}
}
