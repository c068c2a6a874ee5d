package pool

import (
	"net/netip"
	"sync/atomic"
	"time"
)

// maxSchedule bounds the precomputed cycle. Weights whose reduced sum is larger
// are scaled down to fit (each keeps at least one slot), trading a little
// precision for a schedule that stays small whatever the config says.
const maxSchedule = 1 << 16

// roundRobin is nginx's smooth weighted round robin (weights 5,1,1 give
// a a b a c a a). The schedule depends only on the weights, so it is computed
// when the pool is built (and again after an agent changes a weight) and each
// pick is one atomic increment that indexes it: no mutex, unlike a per-pick
// "current weight" update. A backend in slow start takes only its ramped
// share of the slots that land on it; the rest go to the next backend in the
// schedule.
type roundRobin struct {
	backends []*Backend
	group    *group // the pool's, shared by its backends; nil with none
	sched    atomic.Pointer[rrSchedule]
	next     atomic.Uint64
}

// rrSchedule is one cycle of indexes into backends, built from the weights
// as they were at agent weight generation gen.
type rrSchedule struct {
	gen   uint64
	slots []int32
}

func newRoundRobin(backends []*Backend) *roundRobin {
	r := &roundRobin{backends: backends}
	if len(backends) > 0 {
		r.group = backends[0].group.Load()
	}
	r.sched.Store(r.build())
	return r
}

// schedule is the current cycle, rebuilt when an agent changed a weight
// since it was built. Two picks may rebuild at once; both build the same.
func (r *roundRobin) schedule() []int32 {
	s := r.sched.Load()
	if r.group == nil || r.group.weights.Load() == s.gen {
		return s.slots
	}
	s = r.build()
	r.sched.Store(s)
	return s.slots
}

// build reads the generation before the weights: a change landing in
// between bumps it again, so the next pick rebuilds.
func (r *roundRobin) build() *rrSchedule {
	s := &rrSchedule{}
	if r.group != nil {
		s.gen = r.group.weights.Load()
	}
	weights := make([]int64, len(r.backends))
	for i, b := range r.backends {
		weights[i] = b.agentWeight()
	}
	s.slots = smoothSchedule(weights)
	return s
}

func (r *roundRobin) Pick(_ netip.Addr, exclude *Backend, now time.Time) *Backend {
	schedule := r.schedule()
	n := uint64(len(schedule))
	if n == 0 {
		return nil
	}
	start := r.next.Add(1) - 1
	// Entries whose backend cannot be taken are skipped, and failed remembers
	// backends already tried so the walk ends once every one has failed.
	var failed []bool
	nfailed := 0
	// A slow-starting backend passes up most of its slots (rampTurn), but it is
	// still better than nothing: deferred is the first one passed up, taken
	// when no other backend can be.
	deferred := -1
	for k := range n {
		i := schedule[(start+k)%n]
		if failed != nil && failed[i] {
			continue
		}
		b := r.backends[i]
		if b != exclude {
			if !b.rampTurn(now) {
				if deferred < 0 {
					deferred = int(i)
				}
			} else if b.reserve(now) {
				// Advance the shared counter past the skipped slots too. Otherwise
				// the backend after a down one would also win every pick that lands
				// on the down one's slots, and the others would no longer share in
				// proportion to their weights.
				if k > 0 {
					r.next.Add(k)
				}
				return b
			}
		}
		if failed == nil {
			failed = make([]bool, len(r.backends))
		}
		failed[i] = true
		if nfailed++; nfailed == len(r.backends) {
			break
		}
	}
	if deferred >= 0 {
		if b := r.backends[deferred]; b.reserve(now) {
			return b
		}
	}
	return nil
}

// smoothSchedule returns one cycle of smooth weighted round robin over weights
// (an agent's 0% gives a weight 0, which gets no slot): each step adds every
// weight to its running total, picks the largest total (the first on ties, as
// nginx does) and subtracts the sum from it. All zero gives no slots.
func smoothSchedule(weights []int64) []int32 {
	var g int64
	for _, w := range weights {
		g = gcd(g, w)
	}
	if g == 0 {
		return nil
	}
	reduced := make([]int64, len(weights))
	var total int64
	for i, w := range weights {
		reduced[i] = w / g
		total += reduced[i]
	}
	if total > maxSchedule {
		scaled := int64(0)
		for i, w := range reduced {
			if w > 0 {
				reduced[i] = max(1, int64(float64(w)*maxSchedule/float64(total)))
			}
			scaled += reduced[i]
		}
		total = scaled
	}
	current := make([]int64, len(reduced))
	schedule := make([]int32, 0, total)
	for range total {
		best := -1
		for i, w := range reduced {
			current[i] += w
			// The weights add up to total > 0, so some running total is
			// positive and a weight 0, whose total stays 0, never wins.
			if w > 0 && (best < 0 || current[i] > current[best]) {
				best = i
			}
		}
		current[best] -= total
		schedule = append(schedule, int32(best))
	}
	return schedule
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
