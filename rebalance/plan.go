// Package rebalance moves tunnels off backends that hold more than their
// weighted share of a pool, by closing their youngest tunnels so that the
// clients reconnect and least-connections places them. plan.go is the rule,
// a pure function; rebalancer.go runs it once a second per pool, and on
// demand (the admin API's POST /api/v1/pools/{pool}/rebalance).
package rebalance

import "slices"

// Load is one backend of a pool as Plan sees it.
type Load struct {
	// Tunnels it holds, not counting those being closed.
	Tunnels int
	// Weight is its configured weight (at least 1).
	Weight int
	// Available backends share the pool's tunnels by weight; an unavailable
	// one (down, held, ejected) has a share of 0 and is left alone: its
	// tunnels are not for rebalancing to move.
	Available bool
	// Moving says the backend was over at an earlier step and has not yet
	// come down to its share: it goes on shedding even once within
	// tolerance, as the rule says "until it holds no more than its share".
	Moving bool
}

// Plan returns how many tunnels to close on each backend of loads. A backend
// is over when it holds more than (1 + tolerance) × its weighted share of
// the tunnels the available backends hold; an over (or Moving) backend is
// brought down to its share rounded up, never below, so that what it keeps
// is never under its share and nothing swings back.
func Plan(loads []Load, tolerance float64) []int {
	closes := make([]int, len(loads))
	total, weights := 0, 0
	for _, l := range loads {
		if l.Available {
			total += l.Tunnels
			weights += max(l.Weight, 1)
		}
	}
	if weights == 0 {
		return closes
	}
	for i, l := range loads {
		if !l.Available {
			continue
		}
		w := max(l.Weight, 1)
		// share = total·w/weights; over when Tunnels > (1+tolerance)·share.
		if !l.Moving && float64(l.Tunnels)*float64(weights) <= (1+tolerance)*float64(total)*float64(w) {
			continue
		}
		ceilShare := (total*w + weights - 1) / weights
		closes[i] = max(l.Tunnels-ceilShare, 0)
	}
	return closes
}

// Limit caps the closes of a plan at limit in all, given out one at a time
// to the backend with the most still to close (the first such on a tie), so
// a limited step starts with the worst.
func Limit(want []int, limit int) []int {
	total := 0
	for _, n := range want {
		total += n
	}
	if total <= limit {
		return want
	}
	left := slices.Clone(want)
	got := make([]int, len(want))
	for range limit {
		i := 0
		for j := range left {
			if left[j] > left[i] {
				i = j
			}
		}
		got[i]++
		left[i]--
	}
	return got
}
