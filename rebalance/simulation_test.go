package rebalance

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/pool"
)

// sim is a pool with clients on a clock of its own, socket-free: a tunnel is
// a registry entry and a reservation, and a closed one's client comes back
// 1-5 s later through the real least-connections Pick.
type sim struct {
	t       *testing.T
	now     time.Time
	p       *pool.Pool
	rnd     *rand.Rand
	pending []reconnect // clients away, in no order
}

type reconnect struct {
	at     time.Time
	client int
}

func simPool(n int) config.Pool {
	c := config.Pool{Name: "sim", Balance: config.BalanceLeastConn}
	for i := range n {
		ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 80)
		c.Backends = append(c.Backends, config.Backend{Address: ap.String(), Weight: 1, Addr: ap})
	}
	return c
}

// connect opens client's tunnel on the backend Pick gives; its stop ends it
// at once (the graceful close is the tunnel package's) and sends the client
// away for 1-5 s.
func (s *sim) connect(client int) {
	b, err := s.p.Pick(netip.Addr{}, nil)
	if err != nil {
		s.t.Fatalf("pick: %v", err)
	}
	tr := b.Track()
	tr.Started(func(error) {
		tr.Ended()
		b.Release()
		away := time.Second + time.Duration(s.rnd.Int64N(int64(4*time.Second)))
		s.pending = append(s.pending, reconnect{s.now.Add(away), client})
	})
}

// advance moves the clock on by d and reconnects the clients that are due.
func (s *sim) advance(d time.Duration) {
	s.now = s.now.Add(d)
	kept := s.pending[:0]
	var due []int
	for _, r := range s.pending {
		if r.at.After(s.now) {
			kept = append(kept, r)
		} else {
			due = append(due, r.client)
		}
	}
	s.pending = kept
	for _, c := range due {
		s.connect(c)
	}
}

func (s *sim) loads() []int {
	var l []int
	for _, b := range s.p.Backends() {
		l = append(l, b.Tunnels())
	}
	return l
}

// TestSimulateScaleOut: 3 backends hold 3,000 tunnels, 3 more are added, and
// the loop (stepped once a simulated second) moves them until every backend
// is within tolerance of its share, close to the fewest moves possible
// (1,500), never more than rate a second, without draining a backend that
// was over below its share - tolerance, and stops once balanced. Run with
// -v for the load per backend every 10 s.
func TestSimulateScaleOut(t *testing.T) {
	const (
		clients   = 3000
		tolerance = 0.2
		rate      = 10
		minMoves  = 1500
		maxMoves  = minMoves * 105 / 100 // what reconnects in flight may add
	)
	s := &sim{t: t, now: time.Unix(1_000_000, 0), rnd: rand.New(rand.NewPCG(15, 3))}
	s.p = pool.NewWithClock(simPool(3), func() time.Time { return s.now })
	for c := range clients {
		s.connect(c)
	}
	s.advance(time.Minute) // every tunnel is past MinAge
	s.p = pool.Reconcile(s.p, simPool(6))
	r := &Rebalancer{Pool: func() *pool.Pool { return s.p }, Config: config.Rebalance{Enabled: true, Tolerance: tolerance, Rate: rate}}

	var table strings.Builder
	fmt.Fprintf(&table, "%5s  %s  %6s  %5s\n", "t(s)", "b1    b2    b3    b4    b5    b6  ", "moved", "away")
	row := func(sec, moved int) {
		fmt.Fprintf(&table, "%5d  ", sec)
		for _, n := range s.loads() {
			fmt.Fprintf(&table, "%4d  ", n)
		}
		fmt.Fprintf(&table, "%6d  %5d\n", moved, len(s.pending))
	}
	row(0, 0)
	over := []bool{true, true, true, false, false, false}
	moved, balancedAt := 0, -1
	const seconds = 300
	for sec := 1; sec <= seconds; sec++ {
		for range 10 { // reconnects land every 100 ms between the steps
			s.advance(100 * time.Millisecond)
		}
		n := r.Step()
		if n > rate {
			t.Fatalf("%d s: %d tunnels closed in one second, rate is %d", sec, n, rate)
		}
		if balancedAt >= 0 && n > 0 {
			t.Fatalf("%d s: %d tunnels moved after the pool was balanced at %d s", sec, n, balancedAt)
		}
		moved += n
		loads := s.loads()
		total := 0
		for _, l := range loads {
			total += l
		}
		share := float64(clients) / 6
		for i, l := range loads {
			if over[i] && float64(l) < (1-tolerance)*share {
				t.Fatalf("%d s: backend %d, which was over its share, drained to %d (< %.0f): oscillation", sec, i+1, l, (1-tolerance)*share)
			}
		}
		if balancedAt < 0 && len(s.pending) == 0 && n == 0 && total == clients &&
			!slices.ContainsFunc(loads, func(l int) bool { return float64(l) > (1+tolerance)*share || float64(l) < (1-tolerance)*share }) {
			balancedAt = sec
		}
		if sec%10 == 0 {
			row(sec, moved)
		}
	}
	t.Logf("load per backend (3 → 6 backends, %d tunnels, tolerance %.1f, rate %d/s, clients back after 1-5 s):\n%s",
		clients, tolerance, rate, table.String())
	if balancedAt < 0 {
		t.Fatalf("not balanced after %d s: %v", seconds, s.loads())
	}
	if moved < minMoves || moved > maxMoves {
		t.Fatalf("%d tunnels moved, want %d..%d", moved, minMoves, maxMoves)
	}
	t.Logf("balanced at %d s after %d moves (fewest possible %d)", balancedAt, moved, minMoves)
}
