package health

import (
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/internal/wait"
	"github.com/wslb/wslb/pool"
)

// TestSlowStartAfterRecovery: a backend that comes back after being down gets
// a small share of held least_conn picks, and its full share after slow_start.
func TestSlowStartAfterRecovery(t *testing.T) {
	clk := newClock()
	bes := []*backend{newTestBackend(t, nil), newTestBackend(t, nil)}
	cfg := healthConfig(config.CheckTCP)
	c := poolConfig(cfg, bes...)
	c.SlowStart = time.Minute
	p := pool.NewWithClock(c, clk.now)
	startChecks(t, p, cfg, nil, Hooks{})
	b := p.Backends()[1]
	wait.Within(t, "both up", margin, func() bool { return p.Backends()[0].Up() && b.Up() })
	if got := heldShare(t, p, b, 1000); got < 0.45 {
		t.Fatalf("share %.3f before any recovery; want about 0.5 (a first pass does not ramp)", got)
	}
	bes[1].stop()
	wait.Within(t, "down", time.Duration(cfg.Fall)*cfg.Interval+margin, func() bool { return b.State() == pool.StateDown })
	bes[1].start()
	wait.Within(t, "back up", time.Duration(cfg.Rise)*cfg.Interval+margin, b.Up)
	points := []struct {
		at   time.Duration
		want float64
	}{
		{at: 0, want: 0.1 / 1.1},
		{at: c.SlowStart / 2, want: 0.55 / 1.55},
		{at: c.SlowStart, want: 0.5},
	}
	start := clk.now()
	for _, pt := range points {
		clk.set(start.Add(pt.at))
		if got := heldShare(t, p, b, 1000); got < pt.want-0.01 || got > pt.want+0.01 {
			t.Errorf("%v into the ramp: share %.3f; want %.3f ± 0.01", pt.at, got, pt.want)
		}
	}
}

// TestAllDown: with every backend known down, Pick fails at once.
func TestAllDown(t *testing.T) {
	bes := []*backend{newTestBackend(t, nil), newTestBackend(t, nil)}
	cfg := healthConfig(config.CheckTCP)
	p := pool.New(poolConfig(cfg, bes...))
	startChecks(t, p, cfg, nil, Hooks{})
	wait.Within(t, "up", margin, func() bool { return p.Backends()[0].Up() && p.Backends()[1].Up() })
	for _, be := range bes {
		be.stop()
	}
	wait.Within(t, "all down", time.Duration(cfg.Fall)*cfg.Interval+margin, func() bool {
		return !p.Backends()[0].Up() && !p.Backends()[1].Up()
	})
	start := time.Now()
	for range 1000 {
		if _, err := p.Pick(clientIP(), nil); !errors.Is(err, pool.ErrNoBackend) {
			t.Fatalf("Pick: err = %v; want ErrNoBackend", err)
		}
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("1000 failing picks took %v; want no waiting", d)
	}
}

// TestStopLeavesNoGoroutine starts checkers of every kind, lets them run, and
// checks that stop returns the goroutine count to where it started.
func TestStopLeavesNoGoroutine(t *testing.T) {
	var bes []*backend
	for _, check := range []string{config.CheckTCP, config.CheckHTTP, config.CheckWebSocket} {
		bes = append(bes, newTestBackend(t, handlerFor(check)), newTestBackend(t, handlerFor(check)))
	}
	before := runtime.NumGoroutine()
	var stops []func()
	var rec recorder
	for i, check := range []string{config.CheckTCP, config.CheckHTTP, config.CheckWebSocket} {
		cfg := healthConfig(check)
		p := pool.New(poolConfig(cfg, bes[2*i], bes[2*i+1]))
		stops = append(stops, Start(t.Context(), p, cfg, nil, rec.hooks()))
	}
	wait.Within(t, "checks running", 2*time.Second, func() bool { return rec.ok.Load() >= 18 })
	for _, stop := range stops {
		stop()
	}
	wait.Within(t, "goroutines back to "+itoa(before), 2*time.Second, func() bool { return runtime.NumGoroutine() <= before })
}

// TestRunStopsWhenRemoved: a reload that drops a backend ends its checker.
func TestRunStopsWhenRemoved(t *testing.T) {
	be := newTestBackend(t, nil)
	cfg := healthConfig(config.CheckTCP)
	c := poolConfig(cfg, be)
	p := pool.New(c)
	done := make(chan struct{})
	ch := &Checker{Pool: "p", Backend: p.Backends()[0], Config: cfg}
	go func() {
		defer close(done)
		ch.Run(t.Context())
	}()
	c.Backends = nil
	pool.Reconcile(p, c)
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Run still running after its backend was removed")
	}
}

func TestRunCheckNoneReturns(t *testing.T) {
	be := newTestBackend(t, nil)
	cfg := healthConfig(config.CheckNone)
	p := pool.New(poolConfig(cfg, be))
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&Checker{Backend: p.Backends()[0], Config: cfg}).Run(t.Context())
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Run with check none did not return at once")
	}
}
