package main

import (
	"math"
	"math/bits"
	"time"
)

// latencyHistogram counts latencies in log-linear buckets: exact below 64 ns, then 64
// buckets per power of two, so that a quantile read from it is within 1/64 (1.6%) of the
// true one. It has a fixed size whatever the number of samples, so that a benchmark of an
// hour measures the library's memory, not its own. Not safe for concurrent use: each
// client keeps its own, merged at the end.
type latencyHistogram struct {
	counts [histBuckets]uint64
	n      uint64
}

const (
	histSubBits = 6
	histSub     = 1 << histSubBits
	// Latencies up to 2^40 ns (18 minutes) have buckets of their own; longer ones share
	// the last.
	histMaxExp  = 40 - histSubBits
	histBuckets = (histMaxExp + 2) * histSub
)

// histIndex returns the bucket of v nanoseconds.
func histIndex(v uint64) int {
	if v < histSub {
		return int(v)
	}
	e := bits.Len64(v) - histSubBits - 1 // v>>e is in [histSub, 2*histSub)
	if e > histMaxExp {
		return histBuckets - 1
	}
	return (e+1)*histSub + int(v>>e) - histSub
}

// histLow returns the smallest value of bucket i, and the width of the bucket.
func histLow(i int) (low, width uint64) {
	if i < histSub {
		return uint64(i), 1
	}
	e := i/histSub - 1
	return uint64(histSub+i%histSub) << e, 1 << e
}

// add counts one latency.
func (h *latencyHistogram) add(d time.Duration) {
	h.counts[histIndex(uint64(max(d, 0)))]++
	h.n++
}

// merge adds o's counts to h's.
func (h *latencyHistogram) merge(o *latencyHistogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantileMs returns the q-quantile (nearest rank) in milliseconds: the middle of the
// bucket that holds it, or 0 for an empty histogram.
func (h *latencyHistogram) quantileMs(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(max(1, min(math.Ceil(q*float64(h.n)), float64(h.n))))
	var seen uint64
	for i, c := range h.counts {
		if seen += c; seen >= rank {
			low, width := histLow(i)
			mid := float64(low) + float64(width-1)/2
			return mid / float64(time.Millisecond)
		}
	}
	return 0 // not reached: the counts add up to n
}
