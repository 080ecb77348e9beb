package kommander

import "testing"

// TestBatchYieldOnlyWhilePaying: the loop yields before a Save while work arrives during
// its yields; after yieldMisses fruitless ones in a row (a lone caller) it yields only on
// every yieldProbeEvery-th pass, and the first yield that brings work makes it yield on
// every pass again.
func TestBatchYieldOnlyWhilePaying(t *testing.T) {
	var y batchYield
	for i := 0; i < 3*yieldMisses; i++ { // busy: every yield brings work
		if !y.want() {
			t.Fatalf("pass %d: no yield while yields pay", i)
		}
		y.paid(true)
	}
	for i := 0; i < yieldMisses; i++ {
		if !y.want() {
			t.Fatalf("fruitless yield %d: the loop stopped yielding before %d misses", i, yieldMisses)
		}
		y.paid(false)
	}
	for round := 0; round < 3; round++ {
		for i := 1; i < yieldProbeEvery; i++ {
			if y.want() {
				t.Fatalf("round %d, pass %d: yielded although yields stopped paying", round, i)
			}
		}
		if !y.want() {
			t.Fatalf("round %d: no probe yield after %d passes", round, yieldProbeEvery)
		}
		y.paid(false)
	}
	// The load comes back: the probe brings work, and every pass yields again.
	for i := 1; i < yieldProbeEvery; i++ {
		y.want()
	}
	if !y.want() {
		t.Fatal("no probe yield")
	}
	y.paid(true)
	for i := 0; i < yieldMisses; i++ {
		if !y.want() {
			t.Fatalf("pass %d after a fruitful probe: no yield", i)
		}
	}
}

// TestBatchYieldBurstsKeepItYielding: more arrivals between two wake-ups of the loop than
// a lone caller makes count as a yield that paid, even when the yields themselves catch
// nothing; a lone caller's one or two arrivals per wake-up do not.
func TestBatchYieldBurstsKeepItYielding(t *testing.T) {
	var y batchYield
	arrivals := uint64(0)
	for i := 0; i < 4*yieldMisses; i++ { // bursts of yieldBurst+1, nothing during the yields
		arrivals += yieldBurst + 1
		if !y.before(arrivals) {
			t.Fatalf("wake-up %d: no yield under bursts of %d arrivals", i, yieldBurst+1)
		}
		y.after(arrivals)
	}
	yields := 0
	for i := 0; i < 4*yieldMisses; i++ { // a lone caller
		arrivals += yieldBurst
		if y.before(arrivals) {
			yields++
			y.after(arrivals)
		}
	}
	if want := yieldMisses + (3*yieldMisses)/yieldProbeEvery; yields > want {
		t.Fatalf("a lone caller: %d yields in %d wake-ups, want at most %d", yields, 4*yieldMisses, want)
	}
}
