package health

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/internal/wait"
	"github.com/wslb/wslb/pool"
)

// TestPassiveChecksOn: max_fails failed dials take an up backend out until the
// next active pass.
func TestPassiveChecksOn(t *testing.T) {
	be := newTestBackend(t, nil)
	cfg := healthConfig(config.CheckTCP)
	cfg.Interval, cfg.Timeout = 300*time.Millisecond, 200*time.Millisecond
	p := pool.New(poolConfig(cfg, be))
	b := p.Backends()[0]
	var rec recorder
	var logs logBuffer
	startChecks(t, p, cfg, logs.logger(), rec.hooks())
	wait.Within(t, "up", margin, b.Up)
	// Right after a pass the next one is an interval away.
	okBefore := rec.ok.Load()
	wait.Within(t, "a second pass", cfg.Interval*2, func() bool { return rec.ok.Load() > okBefore })

	passive := &Passive{Log: logs.logger(), Hooks: rec.hooks()}
	dialErr := errors.New("connection refused")
	for range 3 {
		passive.DialFailed(b, dialErr)
	}
	if b.Available() || !b.Ejected() {
		t.Fatal("not ejected after max_fails failures")
	}
	neverPicked(t, p, b, 100)
	took := wait.Within(t, "back after the next pass", cfg.Interval+margin, b.Available)
	t.Logf("back %v after the ejection", took)

	ev := rec.changes(b.String())
	if len(ev) != 3 || ev[1].up || ev[1].reason != ReasonPassive || ev[1].err != dialErr || !ev[2].up || ev[2].reason != ReasonCheck {
		t.Fatalf("events %+v; want up (check), down (passive, the dial error), up (check)", ev)
	}
	if got := logs.count(`reason=passive`); got != 1 {
		t.Errorf("%d passive log lines; want 1", got)
	}
}

// TestPassiveCheckNone: with check none, an ejection lapses after
// fail_timeout on the injected clock, with no goroutine or timer involved.
func TestPassiveCheckNone(t *testing.T) {
	clk := newClock()
	be := newTestBackend(t, nil)
	c := poolConfig(healthConfig(config.CheckNone), be)
	p := pool.NewWithClock(c, clk.now)
	b := p.Backends()[0]
	if stop := Start(t.Context(), p, c.Health, nil, Hooks{}); stop == nil {
		t.Fatal("Start returned a nil stop")
	} else {
		stop()
	}
	if !b.Up() || !b.Available() {
		t.Fatal("check none: not up from the start")
	}
	var rec recorder
	passive := &Passive{Hooks: rec.hooks(), Now: clk.now}
	passive.DialFailed(b, context.Canceled) // a client gone is not the backend's fault
	for range 2 {
		passive.DialFailed(b, errors.New("refused"))
		clk.advance(time.Second)
	}
	if !b.Available() {
		t.Fatal("ejected after 2 counted failures; max_fails is 3")
	}
	passive.DialFailed(b, errors.New("refused"))
	if b.Available() {
		t.Fatal("not ejected after 3 failures")
	}
	if _, err := p.Pick(clientIP(), nil); !errors.Is(err, pool.ErrNoBackend) {
		t.Fatalf("Pick with the only backend ejected: err = %v; want ErrNoBackend", err)
	}
	clk.advance(c.Passive.FailTimeout - time.Millisecond)
	if b.Available() {
		t.Fatal("back before fail_timeout")
	}
	clk.advance(time.Millisecond)
	if !b.Available() {
		t.Fatal("not back after fail_timeout")
	}
	if ev := rec.changes(b.String()); len(ev) != 1 || ev[0].up || ev[0].reason != ReasonPassive {
		t.Errorf("events %+v; want one passive down", ev)
	}
}
