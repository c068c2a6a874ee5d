package main

import (
	"slices"
	"time"
)

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted, or 0 when it is empty: the smallest value with at least p% of the
// values at or below it.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if p <= 0 {
		return sorted[0]
	}
	// rank = ceil(p/100 * n), computed in integers where possible so that
	// p50 of 100 values is the 50th, not the 51st through rounding.
	rank := int(p * float64(n) / 100)
	if float64(rank)*100 < p*float64(n) {
		rank++
	}
	if rank < 1 {
		rank = 1
	}
	if rank > n {
		rank = n
	}
	return sorted[rank-1]
}

// latencies summarises round trips: p50, p99, p99.9 and max in µs.
func latencies(d []time.Duration) (p50, p99, p999, max float64) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	us := func(x time.Duration) float64 { return float64(x) / float64(time.Microsecond) }
	return us(percentile(d, 50)), us(percentile(d, 99)), us(percentile(d, 99.9)), us(d[len(d)-1])
}
