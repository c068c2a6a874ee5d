package pool

import (
	"math"
	"testing"
	"time"

	"github.com/wslb/wslb/config"
)

const testSlowStart = 10 * time.Second

// recovering returns a two-backend pool with slow start whose backend 0 has
// been up since its first check and whose backend 1 has just come back from
// down, both on clk.
func recovering(t *testing.T, balance string, clk *fakeClock) *Pool {
	t.Helper()
	c := checkedConfig(balance, 1, 1)
	c.SlowStart = testSlowStart
	p := NewWithClock(c, clk.now)
	bs := p.Backends()
	bs[0].SetState(StateUp, clk.now())
	bs[1].SetState(StateDown, clk.now())
	bs[1].SetState(StateUp, clk.now())
	return p
}

func TestRampPermille(t *testing.T) {
	clk := newFakeClock()
	p := recovering(t, config.BalanceLeastConn, clk)
	steady, back := p.Backends()[0], p.Backends()[1]
	start := clk.now()
	tests := []struct {
		at   time.Duration
		want int64
	}{
		{at: 0, want: 100},
		{at: testSlowStart / 4, want: 325},
		{at: testSlowStart / 2, want: 550},
		{at: testSlowStart - time.Millisecond, want: 999},
		{at: testSlowStart, want: 1000},
		{at: time.Hour, want: 1000},
	}
	for _, tt := range tests {
		if got := back.rampPermille(start.Add(tt.at)); got != tt.want {
			t.Errorf("at %v: rampPermille = %d; want %d", tt.at, got, tt.want)
		}
		if got := steady.rampPermille(start.Add(tt.at)); got != permille {
			t.Errorf("at %v: a backend up since its first pass ramps: %d", tt.at, got)
		}
	}
	if got := back.EffectiveWeight(start.Add(testSlowStart / 2)); got != 0.55 {
		t.Errorf("EffectiveWeight halfway = %v; want 0.55", got)
	}
}

// heldShare makes n picks without releasing them and returns backend 1's
// share, then releases them all.
func heldShare(t *testing.T, p *Pool, n int) float64 {
	t.Helper()
	var held []*Backend
	got := 0
	for i := range n {
		b, err := p.Pick(clientIP(i), nil)
		if err != nil {
			t.Fatalf("Pick: %v", err)
		}
		if b == p.Backends()[1] {
			got++
		}
		held = append(held, b)
	}
	for _, b := range held {
		b.Release()
	}
	return float64(got) / float64(n)
}

// TestSlowStartShares measures the recovering backend's share of 1000 held
// picks against a full-weight peer at points of the ramp: w/(1+w) where w is
// its ramped weight.
func TestSlowStartShares(t *testing.T) {
	points := []struct {
		at   time.Duration
		want float64
	}{
		{at: 0, want: 0.1 / 1.1},
		{at: testSlowStart / 2, want: 0.55 / 1.55},
		{at: testSlowStart, want: 0.5},
	}
	for _, balance := range []string{config.BalanceLeastConn, config.BalanceRoundRobin} {
		t.Run(balance, func(t *testing.T) {
			clk := newFakeClock()
			p := recovering(t, balance, clk)
			start := clk.now()
			for _, pt := range points {
				clk.ns.Store(start.Add(pt.at).UnixNano())
				if got := heldShare(t, p, 1000); math.Abs(got-pt.want) > 0.01 {
					t.Errorf("at %v: share %.3f; want %.3f ± 0.01", pt.at, got, pt.want)
				}
			}
		})
	}
}

// TestSlowStartAlone checks that a ramping backend is still picked when it is
// the only one: slow start shapes shares, it never refuses.
func TestSlowStartAlone(t *testing.T) {
	for _, balance := range policies {
		t.Run(balance, func(t *testing.T) {
			clk := newFakeClock()
			p := recovering(t, balance, clk)
			p.Backends()[0].SetUp(false)
			if got := picked(t, p, 50); got[1] != 50 {
				t.Errorf("picks %v; want all 50 on the ramping backend", got)
			}
		})
	}
}

// TestSlowStartSourceHashIgnored pins the decision documented on sourceHash:
// a ramping backend keeps every client that hashes to it.
func TestSlowStartSourceHashIgnored(t *testing.T) {
	clk := newFakeClock()
	p := recovering(t, config.BalanceSourceHash, clk)
	for i := range 500 {
		client := clientIP(i)
		if got, want := pick(t, p, client, nil), order(p, client)[0]; got != want {
			t.Fatalf("client %d: picked %s while ramping; want its own %s", i, got, want)
		}
	}
}

func TestSlowStartTriggers(t *testing.T) {
	tests := []struct {
		name  string
		check string
		setup func(b *Backend, clk *fakeClock)
		ramps bool
	}{
		{name: "first pass", check: config.CheckTCP, setup: func(b *Backend, clk *fakeClock) {
			b.SetState(StateUp, clk.now())
		}},
		{name: "first failure then rise", check: config.CheckTCP, ramps: true, setup: func(b *Backend, clk *fakeClock) {
			b.SetState(StateDown, clk.now())
			b.SetState(StateUp, clk.now())
		}},
		{name: "passive ejection ended by a pass", check: config.CheckTCP, ramps: true, setup: func(b *Backend, clk *fakeClock) {
			b.SetState(StateUp, clk.now())
			b.DialFailed(clk.now())
			b.CheckPassed(clk.now())
		}},
		{name: "passive ejection lapsed, check none", check: config.CheckNone, ramps: true, setup: func(b *Backend, clk *fakeClock) {
			b.DialFailed(clk.now())
			clk.advance(time.Minute) // fail_timeout
		}},
		{name: "up to up", check: config.CheckTCP, setup: func(b *Backend, clk *fakeClock) {
			b.SetState(StateUp, clk.now())
			clk.advance(time.Second)
			b.SetState(StateUp, clk.now())
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			c := testConfig(config.BalanceLeastConn, 1)
			c.Health.Check = tt.check
			c.SlowStart = testSlowStart
			c.Passive = config.Passive{MaxFails: 1, FailTimeout: time.Minute}
			b := NewWithClock(c, clk.now).Backends()[0]
			tt.setup(b, clk)
			if !b.Available() {
				t.Fatal("not available after setup")
			}
			if got := b.rampPermille(clk.now()); (got == rampFloor) != tt.ramps {
				t.Errorf("rampPermille = %d; ramping = %v, want %v", got, got == rampFloor, tt.ramps)
			}
			clk.advance(testSlowStart)
			if got := b.rampPermille(clk.now()); got != permille {
				t.Errorf("after slow_start: rampPermille = %d; want %d", got, permille)
			}
		})
	}
}
