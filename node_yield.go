package kommander

import "runtime"

// batchYield decides whether the loop yields its processor before a pass that may start a
// Save. Whoever woke the loop handed it the processor directly, ahead of the goroutines
// that are already runnable with more work for the batch (transport readers, callers just
// answered, other partitions' proposals); one yield lets them add it first. Without it,
// with 16 partitions over TCP 88% of Saves held one entry, and each fsync held a processor
// for its whole length (the runtime takes a processor back from a syscall only after 20µs
// or more, through sysmon), which starved those producers further: 3 entries per fsync
// instead of 18.
//
// But a yield puts the loop behind every runnable goroutine of the process, and a lone
// caller gains nothing from it: nobody else has work for the batch, and its write waits
// for the yield on each of the three hops of its commit (leader, follower, leader again).
// So the loop yields while yields pay: while work arrives during them, or more arrives
// between two wake-ups than a lone caller sends. After yieldMisses yields in a row without
// either, it yields only on every yieldProbeEvery-th pass, to notice when the load comes
// back. (With 4 misses instead of 16, 16 partitions under 64 clients fell from 19 to 15
// entries per fsync: concurrent producers also leave a few yields in a row empty.) Loop
// only.
type batchYield struct {
	misses  int    // yields in a row that did not pay
	skipped int    // passes without a yield since the last one, once yields stopped paying
	seen    uint64 // the inbox's arrivals at the previous decision
}

const (
	yieldMisses     = 16
	yieldProbeEvery = 8
	// yieldBurst is the most arrivals between two wake-ups of the loop that a lone caller
	// makes (its proposal, or the two followers' acknowledgements).
	yieldBurst = 2
)

// before is called with the inbox's arrival count before a pass that may start a Save; it
// reports whether to yield.
func (y *batchYield) before(arrivals uint64) bool {
	if arrivals-y.seen > yieldBurst {
		y.paid(true)
	}
	y.seen = arrivals
	return y.want()
}

// after is called with the inbox's arrival count after a yield.
func (y *batchYield) after(arrivals uint64) { y.paid(arrivals != y.seen) }

// want reports whether this pass should yield.
func (y *batchYield) want() bool {
	if y.misses < yieldMisses {
		return true
	}
	y.skipped++
	if y.skipped >= yieldProbeEvery {
		y.skipped = 0
		return true
	}
	return false
}

// paid records whether work arrived during a yield.
func (y *batchYield) paid(arrived bool) {
	if arrived {
		y.misses, y.skipped = 0, 0
	} else if y.misses < yieldMisses {
		y.misses++
	}
}

// yieldForBatch yields the processor once before a pass that may start a Save, when yields
// pay (batchYield).
func (n *Node) yieldForBatch() {
	if n.yield.before(n.in.arrivals.Load()) {
		runtime.Gosched()
		n.yield.after(n.in.arrivals.Load())
	}
}
