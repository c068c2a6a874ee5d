package pool

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wslb/wslb/config"
)

// fakeClock is an injectable clock that moves only when told to.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// checkedConfig is testConfig with active checks on.
func checkedConfig(balance string, weights ...int) config.Pool {
	c := testConfig(balance, weights...)
	c.Health.Check = config.CheckTCP
	return c
}

// picked runs n pick/release cycles and counts picks per backend index; an
// ErrNoBackend counts at index len(backends).
func picked(t *testing.T, p *Pool, n int) []int {
	t.Helper()
	got := make([]int, len(p.Backends())+1)
	for i := range n {
		b, err := p.Pick(clientIP(i), nil)
		if errors.Is(err, ErrNoBackend) {
			got[len(got)-1]++
			continue
		}
		if err != nil {
			t.Fatalf("Pick: %v", err)
		}
		got[index(p, b)]++
		b.Release()
	}
	return got
}

func TestInitialState(t *testing.T) {
	tests := []struct {
		name  string
		check string
		want  State
	}{
		{name: "check none is up", check: config.CheckNone, want: StateUp},
		{name: "no check configured is up", check: "", want: StateUp},
		{name: "tcp starts unknown", check: config.CheckTCP, want: StateUnknown},
		{name: "websocket starts unknown", check: config.CheckWebSocket, want: StateUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig(config.BalanceLeastConn, 1, 1)
			c.Health.Check = tt.check
			for _, b := range New(c).Backends() {
				if b.State() != tt.want || b.Up() != (tt.want == StateUp) {
					t.Errorf("%s: State() = %v, Up() = %v; want %v", b, b.State(), b.Up(), tt.want)
				}
				if !b.Healthy() || !b.Available() {
					t.Errorf("%s: not available at start", b)
				}
			}
		})
	}
}

// TestStartUp checks DESIGN's "Health at start" for every policy: before any
// check every backend is tried; once one has passed, unknown ones are not.
func TestStartUp(t *testing.T) {
	for _, policy := range policies {
		t.Run(policy, func(t *testing.T) {
			p := New(checkedConfig(policy, 1, 1, 1))
			bs := p.Backends()
			if got := picked(t, p, 300); got[0] == 0 || got[1] == 0 || got[2] == 0 || got[3] != 0 {
				t.Fatalf("before any check: picks %v; want every backend, no ErrNoBackend", got)
			}
			// A failed first check takes that backend out but does not end the
			// start-up rule: nobody has passed yet.
			bs[2].SetUp(false)
			if got := picked(t, p, 300); got[0] == 0 || got[1] == 0 || got[2] != 0 || got[3] != 0 {
				t.Fatalf("one down, none passed: picks %v; want 0 and 1 only", got)
			}
			bs[0].SetUp(true)
			if got := picked(t, p, 300); got[0] != 300 {
				t.Fatalf("after backend 0 passed: picks %v; want all on 0", got)
			}
			if bs[1].Available() || bs[1].Healthy() {
				t.Error("an unchecked backend is available after a peer passed")
			}
			bs[0].SetUp(false)
			if got := picked(t, p, 30); got[3] != 30 {
				t.Fatalf("all down or unknown after a pass: picks %v; want ErrNoBackend only", got)
			}
		})
	}
}

func TestReconcileHealth(t *testing.T) {
	t.Run("a new backend waits for its check once a peer passed", func(t *testing.T) {
		c := checkedConfig(config.BalanceLeastConn, 1, 1)
		old := New(c)
		old.Backends()[0].SetUp(true)
		c.Backends = append(c.Backends, testBackend(3, 1))
		p := Reconcile(old, c)
		added := p.Backends()[2]
		if added.State() != StateUnknown || added.Available() {
			t.Errorf("added backend: State() = %v, Available() = %v; want unknown, false", added.State(), added.Available())
		}
		if got := picked(t, p, 30); got[0] != 30 {
			t.Errorf("picks %v; want all on the backend that passed", got)
		}
	})
	t.Run("replacing every backend restarts the start-up rule", func(t *testing.T) {
		c := checkedConfig(config.BalanceLeastConn, 1)
		old := New(c)
		old.Backends()[0].SetUp(true)
		c.Backends = []config.Backend{testBackend(2, 1), testBackend(3, 1)}
		p := Reconcile(old, c)
		if got := picked(t, p, 30); got[0] == 0 || got[1] == 0 {
			t.Errorf("picks %v; want both new unknown backends tried", got)
		}
	})
	t.Run("a reload to check none brings down and ejected backends back", func(t *testing.T) {
		c := checkedConfig(config.BalanceLeastConn, 1, 1)
		c.Passive = config.Passive{MaxFails: 1, FailTimeout: time.Minute}
		old := New(c)
		bs := old.Backends()
		bs[0].SetUp(false)
		bs[1].SetUp(true)
		bs[1].DialFailed(time.Now())
		if bs[1].Available() {
			t.Fatal("ejected backend still available")
		}
		c.Health.Check = config.CheckNone
		p := Reconcile(old, c)
		for _, b := range p.Backends() {
			if !b.Up() || !b.Available() {
				t.Errorf("%s: Up() = %v, Available() = %v after the reload to check none; want true, true", b, b.Up(), b.Available())
			}
		}
	})
}
