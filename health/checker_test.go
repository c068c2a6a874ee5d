package health

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/internal/wait"
	"github.com/wslb/wslb/pool"
)

func TestObserve(t *testing.T) {
	type step struct {
		ok      bool
		changed bool
		state   pool.State
	}
	const (
		unknown = pool.StateUnknown
		up      = pool.StateUp
		down    = pool.StateDown
	)
	tests := []struct {
		name       string
		rise, fall int
		start      pool.State
		steps      []step
	}{
		{name: "first pass decides up", rise: 2, fall: 3, start: unknown, steps: []step{{true, true, up}, {true, false, up}}},
		{name: "first failure decides down", rise: 2, fall: 3, start: unknown, steps: []step{{false, true, down}, {false, false, down}}},
		{name: "fall failures take it down", rise: 2, fall: 3, start: up, steps: []step{
			{false, false, up}, {false, false, up}, {false, true, down}, {false, false, down},
		}},
		{name: "a pass resets the failure count", rise: 2, fall: 3, start: up, steps: []step{
			{false, false, up}, {false, false, up}, {true, false, up}, {false, false, up}, {false, false, up}, {false, true, down},
		}},
		{name: "rise passes bring it up", rise: 2, fall: 3, start: down, steps: []step{{true, false, down}, {true, true, up}, {true, false, up}}},
		{name: "a failure resets the pass count", rise: 3, fall: 1, start: down, steps: []step{
			{true, false, down}, {true, false, down}, {false, false, down}, {true, false, down}, {true, false, down}, {true, true, up},
		}},
		{name: "rise and fall 1 flip on every change", rise: 1, fall: 1, start: up, steps: []step{
			{false, true, down}, {true, true, up}, {true, false, up}, {false, true, down},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Checker{Config: config.Health{Rise: tt.rise, Fall: tt.fall}, state: tt.start}
			for i, s := range tt.steps {
				if changed := c.observe(s.ok); changed != s.changed || c.state != s.state {
					t.Fatalf("step %d (ok=%v): changed, state = %v, %v; want %v, %v", i, s.ok, changed, c.state, s.changed, s.state)
				}
			}
		})
	}
}

func TestIntervalJitter(t *testing.T) {
	c := &Checker{Config: config.Health{Interval: time.Second}, Rand: rand.New(rand.NewPCG(1, 2))}
	lo, hi := time.Hour, time.Duration(0)
	for range 2000 {
		d := c.interval()
		if d < 900*time.Millisecond || d > 1100*time.Millisecond {
			t.Fatalf("interval %v outside 1s ± 10%%", d)
		}
		lo, hi = min(lo, d), max(hi, d)
	}
	if hi-lo < 150*time.Millisecond {
		t.Errorf("intervals span only %v..%v; want them spread", lo, hi)
	}
}

// TestKilledBackend kills one of two backends and checks that it is marked
// down within interval*fall plus a margin, is never picked after that, and is
// back after rise passes once it listens again on the same port.
func TestKilledBackend(t *testing.T) {
	for _, check := range []string{config.CheckTCP, config.CheckHTTP, config.CheckWebSocket} {
		t.Run(check, func(t *testing.T) {
			bes := []*backend{newTestBackend(t, handlerFor(check)), newTestBackend(t, handlerFor(check))}
			cfg := healthConfig(check)
			p := pool.New(poolConfig(cfg, bes...))
			var rec recorder
			var logs logBuffer
			startChecks(t, p, cfg, logs.logger(), rec.hooks())
			victim, peer := p.Backends()[1], p.Backends()[0]
			// Up, and its OnChange recorded: the hook runs after the state
			// changed, so Up alone may come before the event.
			wait.Within(t, "both up", margin, func() bool {
				ev := rec.changes(victim.String())
				return victim.Up() && peer.Up() && len(ev) > 0 && ev[len(ev)-1].up
			})
			// A first check slower than its 40 ms timeout on a busy machine
			// may have taken the victim down and up before: the events that
			// matter start at its last up.
			before := len(rec.changes(victim.String())) - 1

			bes[1].stop()
			killed := time.Now()
			bound := time.Duration(float64(cfg.Interval)*1.1)*time.Duration(cfg.Fall) + margin
			took := wait.Within(t, "marked down", bound, func() bool { return victim.State() == pool.StateDown })
			t.Logf("down %v after the kill (bound %v)", took, bound)
			if victim.Available() {
				t.Fatal("down but Available")
			}
			neverPicked(t, p, victim, 1000)
			if !peer.Up() {
				t.Fatal("the live peer went down")
			}

			bes[1].start()
			back := wait.Within(t, "back up", time.Duration(float64(cfg.Interval)*1.1)*time.Duration(cfg.Rise)+margin, victim.Up)
			t.Logf("up %v after the restart; %v kill to up", back, time.Since(killed))
			if !victim.Available() {
				t.Fatal("up but not Available")
			}

			// The verdict is stored before OnChange is called, so Up can be
			// seen before the event is recorded: wait for the event too.
			wait.Within(t, "the up event", margin, func() bool { return len(rec.changes(victim.String())) >= before+3 })
			ev := rec.changes(victim.String())[before:]
			if len(ev) != 3 || !ev[0].up || ev[1].up || !ev[2].up {
				t.Fatalf("OnChange events %+v; want up, down, up", ev)
			}
			if ev[1].reason != ReasonCheck || ev[1].err == nil || ev[2].err == nil {
				t.Errorf("down event %+v, up event %+v; want reason check with the last error", ev[1], ev[2])
			}
			if got := logs.count(`msg="backend down"`); got != 1 {
				t.Errorf("logged %d 'backend down' lines; want 1", got)
			}
			if rec.bad.Load() < int64(cfg.Fall) || rec.ok.Load() < 4 {
				t.Errorf("OnResult ok=%d fail=%d; want at least 4 and %d", rec.ok.Load(), rec.bad.Load(), cfg.Fall)
			}
		})
	}
}

// TestStartUpWaitsForFirstPass: before any check every backend is tried;
// once one has passed, a backend whose first check is still running is not.
func TestStartUpWaitsForFirstPass(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	fast := newTestBackend(t, nil)
	slow := newTestBackend(t, httpHandlerFunc(func() { <-release }))
	cfg := healthConfig(config.CheckHTTP)
	// The slow backend's first check hangs for the whole timeout.
	cfg.Interval, cfg.Timeout = 5*time.Second, 4*time.Second
	p := pool.New(poolConfig(cfg, fast, slow))
	bf, bs := p.Backends()[0], p.Backends()[1]

	seen := map[*pool.Backend]bool{}
	for range 10 {
		b, err := p.Pick(clientIP(), nil)
		if err != nil {
			t.Fatalf("Pick before any check: %v", err)
		}
		seen[b] = true
		b.Release()
	}
	if !seen[bf] || !seen[bs] {
		t.Fatal("before any check, not every backend was picked")
	}

	startChecks(t, p, cfg, nil, Hooks{})
	wait.Within(t, "fast backend up", margin, bf.Up)
	if bs.State() != pool.StateUnknown {
		t.Fatalf("slow backend is %v; want still unknown", bs.State())
	}
	neverPicked(t, p, bs, 200)
}

func TestHTTPCheck(t *testing.T) {
	tests := []struct {
		name   string
		status int
		expect int
		up     bool
	}{
		{name: "200", status: 200, expect: 200, up: true},
		{name: "500 fails", status: 500, expect: 200, up: false},
		{name: "204 expected", status: 204, expect: 204, up: true},
		{name: "200 when 204 expected fails", status: 200, expect: 204, up: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan string, 16)
			be := newTestBackend(t, statusHandler(tt.status, got))
			cfg := healthConfig(config.CheckHTTP)
			cfg.ExpectStatus = tt.expect
			p := pool.New(poolConfig(cfg, be))
			var rec recorder
			startChecks(t, p, cfg, nil, rec.hooks())
			b := p.Backends()[0]
			wait.Within(t, "first verdict", margin, func() bool { return b.State() != pool.StateUnknown })
			if b.Up() != tt.up {
				t.Fatalf("Up() = %v; want %v", b.Up(), tt.up)
			}
			select {
			case req := <-got:
				if want := "GET /healthz Host=" + be.addr + " close"; req != want {
					t.Errorf("request %q; want %q", req, want)
				}
			case <-time.After(margin):
				t.Fatal("the backend saw no request")
			}
			if ev := rec.changes(b.String()); !tt.up && (len(ev) != 1 || ev[0].err == nil || !strings.Contains(ev[0].err.Error(), "status")) {
				t.Errorf("down event %+v; want one with the status in its error", ev)
			}
		})
	}
}
