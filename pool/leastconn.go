package pool

import (
	"net/netip"
	"sync/atomic"
	"time"
)

// leastConn picks the available backend with the fewest reservations relative
// to its effective weight (its weight as its agent scales it and slow start
// ramps it). Ties are broken
// by rotation, not randomness: each pick starts its scan one slot further on,
// so equal backends fill evenly and short-lived picks that are released at
// once still spread over all backends.
type leastConn struct {
	backends []*Backend
	cursor   atomic.Uint64
}

func newLeastConn(backends []*Backend) *leastConn {
	return &leastConn{backends: backends}
}

func (l *leastConn) Pick(_ netip.Addr, exclude *Backend, now time.Time) *Backend {
	n := len(l.backends)
	if n == 0 {
		return nil
	}
	start := int((l.cursor.Add(1) - 1) % uint64(n))
	// A reservation fails only when another worker filled (or a checker downed)
	// the chosen backend since the scan; rescanning without it bounds a pick to n
	// attempts, and tried is allocated only on that slow path.
	var tried []bool
	for range n {
		best := -1
		var bestActive, bestWeight int64
		for k := range n {
			i := (start + k) % n
			b := l.backends[i]
			if b == exclude || (tried != nil && tried[i]) || !b.availableAt(now) {
				continue
			}
			a, w := b.active.Load(), b.effWeight(now)
			// a/w < bestActive/bestWeight without floats, so an agent's 50%
			// of weight 1 is exactly half of weight 1 (w is in weightUnits, at
			// most 10^8: the products stay far from overflow for any count of
			// conns a host can hold); strict, so the first of equals in
			// rotation order wins.
			if best < 0 || a*bestWeight < bestActive*w {
				best, bestActive, bestWeight = i, a, w
			}
		}
		if best < 0 {
			return nil
		}
		if b := l.backends[best]; b.reserve(now) {
			return b
		}
		if tried == nil {
			tried = make([]bool, n)
		}
		tried[best] = true
	}
	return nil
}
