package pool

import (
	"testing"
	"time"

	"github.com/wslb/wslb/config"
)

func passiveConfig(check string, maxFails int, failTimeout time.Duration) config.Pool {
	c := testConfig(config.BalanceLeastConn, 1, 1)
	c.Health.Check = check
	c.Passive = config.Passive{MaxFails: maxFails, FailTimeout: failTimeout}
	return c
}

// TestDialFailedWindow feeds failures at explicit offsets and checks which one
// ejects: only max_fails within fail_timeout count.
func TestDialFailedWindow(t *testing.T) {
	const ft = 10 * time.Second
	tests := []struct {
		name     string
		maxFails int
		at       []time.Duration // failure times from the start
		ejectAt  int             // index of the failure that ejects; -1 for none
	}{
		{name: "three quick failures", maxFails: 3, at: []time.Duration{0, time.Second, 2 * time.Second}, ejectAt: 2},
		{name: "spread beyond the window", maxFails: 3, at: []time.Duration{0, 6 * time.Second, 12 * time.Second, 18 * time.Second}, ejectAt: -1},
		{name: "the oldest expires, then three fit", maxFails: 3, at: []time.Duration{0, 9 * time.Second, 11 * time.Second, 12 * time.Second}, ejectAt: 3},
		{name: "exactly fail_timeout apart is outside", maxFails: 2, at: []time.Duration{0, ft}, ejectAt: -1},
		{name: "max_fails 1", maxFails: 1, at: []time.Duration{0}, ejectAt: 0},
		{name: "max_fails 0 disables", maxFails: 0, at: []time.Duration{0, 0, 0, 0, 0}, ejectAt: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			p := NewWithClock(passiveConfig(config.CheckNone, tt.maxFails, ft), clk.now)
			b := p.Backends()[0]
			start := clk.now()
			for i, d := range tt.at {
				got := b.DialFailed(start.Add(d))
				if want := i == tt.ejectAt; got != want {
					t.Fatalf("failure %d at %v: ejected = %v; want %v", i, d, got, want)
				}
			}
		})
	}
}

func TestPassiveCheckNone(t *testing.T) {
	const ft = 10 * time.Second
	clk := newFakeClock()
	c := passiveConfig(config.CheckNone, 3, ft)
	c.SlowStart = 0
	p := NewWithClock(c, clk.now)
	bs := p.Backends()
	for range 2 {
		bs[0].DialFailed(clk.now())
		clk.advance(time.Second)
	}
	if !bs[0].Available() {
		t.Fatal("out after 2 of 3 failures")
	}
	if !bs[0].DialFailed(clk.now()) {
		t.Fatal("the third failure did not eject")
	}
	if bs[0].Available() || bs[0].Healthy() || !bs[0].Ejected() || !bs[0].Up() {
		t.Fatalf("after ejection: Available, Healthy, Ejected, Up = %v, %v, %v, %v; want false, false, true, true",
			bs[0].Available(), bs[0].Healthy(), bs[0].Ejected(), bs[0].Up())
	}
	if got := picked(t, p, 50); got[1] != 50 {
		t.Fatalf("while ejected: picks %v; want all on backend 1", got)
	}
	// Failures of dials that started before the ejection must not extend it.
	clk.advance(ft - time.Second)
	if bs[0].DialFailed(clk.now()) {
		t.Error("a failure during the ejection ejected again")
	}
	if bs[0].Available() {
		t.Fatal("back before fail_timeout")
	}
	clk.advance(time.Second)
	if !bs[0].Available() || bs[0].Ejected() {
		t.Fatal("not back after fail_timeout")
	}
	if got := picked(t, p, 50); got[0] == 0 {
		t.Fatalf("after fail_timeout: picks %v; want backend 0 again", got)
	}
	// The window restarted with the ejection: one more failure is not enough.
	if bs[0].DialFailed(clk.now()) {
		t.Error("one failure after the ejection ejected again")
	}
}

func TestPassiveChecksOn(t *testing.T) {
	clk := newFakeClock()
	p := NewWithClock(passiveConfig(config.CheckTCP, 2, 10*time.Second), clk.now)
	bs := p.Backends()
	bs[0].SetState(StateUp, clk.now())
	bs[1].SetState(StateUp, clk.now())
	bs[0].DialFailed(clk.now())
	if !bs[0].DialFailed(clk.now()) {
		t.Fatal("max_fails failures did not eject")
	}
	// With checks on, time alone never brings it back.
	clk.advance(time.Hour)
	if bs[0].Available() {
		t.Fatal("back without an active pass")
	}
	if got := picked(t, p, 50); got[1] != 50 {
		t.Fatalf("while ejected: picks %v; want all on backend 1", got)
	}
	if !bs[0].CheckPassed(clk.now()) {
		t.Fatal("CheckPassed did not report the end of the ejection")
	}
	if !bs[0].Available() {
		t.Fatal("not back after an active pass")
	}
	if bs[0].CheckPassed(clk.now()) {
		t.Error("a second pass reported another reinstatement")
	}
}
