package pool

import (
	"math"
	"net/netip"
	"time"
)

// sourceHash sends each client IP to the same backend with weighted rendezvous
// (highest random weight) hashing: every backend gets a score from a hash of
// (client IP, backend "ip:port") and the highest score wins. Scores depend on
// nothing but those two values, so every process and every restart agrees;
// adding a backend to N moves only the clients it now outscores, about 1/(N+1);
// and when a client's backend is down, full or excluded, the next-highest score
// is that client's own fallback order.
//
// Slow start is deliberately ignored here: the point of source_hash is that a
// client keeps its backend, and skipping a ramping backend for some of its own
// clients would move them back and forth between it and their second choice on
// every reconnect. The herd is also smaller than with least_conn: a recovered
// backend only gets back the clients that hash to it, about 1/N of new conns.
type sourceHash struct {
	backends []*Backend
}

func newSourceHash(backends []*Backend) *sourceHash {
	return &sourceHash{backends: backends}
}

func (s *sourceHash) Pick(client netip.Addr, exclude *Backend, now time.Time) *Backend {
	var buf [16]float64 // pools this small keep the scores on the stack
	scores := buf[:0]
	if len(s.backends) > len(buf) {
		scores = make([]float64, 0, len(s.backends))
	}
	h := hashIP(client)
	for _, b := range s.backends {
		scores = append(scores, score(h, b))
	}
	// Selection rather than a sort: the first choice is almost always taken.
	for range s.backends {
		best := -1
		for i, sc := range scores {
			if sc > 0 && (best < 0 || sc > scores[best]) {
				best = i
			}
		}
		if best < 0 {
			return nil
		}
		if b := s.backends[best]; b != exclude && b.reserve(now) {
			return b
		}
		scores[best] = 0 // tried; real scores are always > 0
	}
	return nil
}

// FNV-1a 64 parameters (the same as hash/fnv), written out so that hashing a
// client allocates nothing.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// hashIP starts FNV-1a over the client's IP bytes: 4 for IPv4 (an IPv4-mapped
// IPv6 address counts as IPv4, so a dual-stack listener sees the same client the
// same way), 16 for IPv6, none for the zero Addr. FNV is streaming, so the
// result is shared by every backend's score.
func hashIP(a netip.Addr) uint64 {
	h := uint64(fnvOffset)
	a = a.Unmap()
	switch {
	case a.Is4():
		v := a.As4()
		for _, c := range v {
			h = (h ^ uint64(c)) * fnvPrime
		}
	case a.Is6():
		v := a.As16()
		for _, c := range v {
			h = (h ^ uint64(c)) * fnvPrime
		}
	}
	return h
}

// score is the weighted rendezvous score w / -ln(u) with u uniform in (0,1):
// a backend's chance of being the maximum is exactly its share of the weights.
func score(ipHash uint64, b *Backend) float64 {
	h := ipHash
	for i := range len(b.name) {
		h = (h ^ uint64(b.name[i])) * fnvPrime
	}
	h = mix64(h)
	// 53 random bits, offset by half a step, give u strictly inside (0,1), so the
	// logarithm is finite and negative.
	u := (float64(h>>11) + 0.5) / (1 << 53)
	// The agent's percentage counts: a backend at 0% scores 0, which Pick
	// treats as tried.
	return float64(b.agentWeight()) / -math.Log(u)
}

// mix64 is the splitmix64 finaliser. FNV's high bits depend weakly on the last
// bytes hashed, and the backend names differ only there.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
