package pool

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/wslb/wslb/config"
)

var policies = []string{config.BalanceLeastConn, config.BalanceRoundRobin, config.BalanceSourceHash}

// testConfig returns a pool config with one backend per weight, at 10.0.0.1:80,
// 10.0.0.2:80 and so on.
func testConfig(balance string, weights ...int) config.Pool {
	c := config.Pool{Name: "test", Balance: balance, IdlePerWorker: 2}
	for i, w := range weights {
		c.Backends = append(c.Backends, testBackend(i+1, w))
	}
	return c
}

func testBackend(n, weight int) config.Backend {
	ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(n)}), 80)
	return config.Backend{Address: ap.String(), Weight: weight, Addr: ap}
}

// clientIP returns a distinct client address for each i.
func clientIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)})
}

// index returns b's position in p.Backends(), or -1.
func index(p *Pool, b *Backend) int {
	for i, x := range p.Backends() {
		if x == b {
			return i
		}
	}
	return -1
}

func TestNew(t *testing.T) {
	c := testConfig("", 1, 3)
	c.MaxConnectionsPerBackend = 7
	c.IdlePerWorker = 4
	c.Backends[0].Weight = 0 // an undefaulted weight still counts as 1
	p := New(c)
	if p.Name() != "test" {
		t.Errorf("Name() = %q; want %q", p.Name(), "test")
	}
	if _, ok := p.policy.(*leastConn); !ok {
		t.Errorf("policy for empty balance = %T; want *leastConn", p.policy)
	}
	bs := p.Backends()
	if len(bs) != 2 {
		t.Fatalf("len(Backends()) = %d; want 2", len(bs))
	}
	for i, want := range []struct {
		s      string
		weight int
	}{{"10.0.0.1:80", 1}, {"10.0.0.2:80", 3}} {
		b := bs[i]
		if b.String() != want.s || b.Addr().String() != want.s {
			t.Errorf("backend %d: String() = %q, Addr() = %v; want %s", i, b.String(), b.Addr(), want.s)
		}
		if b.Weight() != want.weight || b.MaxConns() != 7 || b.IdleMax() != 4 {
			t.Errorf("backend %d: Weight, MaxConns, IdleMax = %d, %d, %d; want %d, 7, 4", i, b.Weight(), b.MaxConns(), b.IdleMax(), want.weight)
		}
		if !b.Up() || !b.Available() || b.Active() != 0 || b.Idle() != 0 || b.Context().Err() != nil {
			t.Errorf("backend %d does not start up, available, idle and alive", i)
		}
	}
	if _, err := New(testConfig(config.BalanceLeastConn)).Pick(clientIP(1), nil); !errors.Is(err, ErrNoBackend) {
		t.Errorf("Pick on an empty pool: err = %v; want ErrNoBackend", err)
	}
}

func TestReleaseWithoutPickPanics(t *testing.T) {
	b := New(testConfig("", 1)).Backends()[0]
	defer func() {
		if recover() == nil {
			t.Error("Release without Pick did not panic")
		}
	}()
	b.Release()
}

// TestPickSkips checks, for every policy, that Pick never returns an excluded,
// down or full backend, and returns ErrNoBackend when nothing is left.
func TestPickSkips(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(bs []*Backend) (exclude *Backend)
		never   int // index of the backend that must not be picked; -1 for none
		noneErr bool
	}{
		{
			name:  "excluded",
			setup: func(bs []*Backend) *Backend { return bs[0] },
			never: 0,
		},
		{
			name:  "down",
			setup: func(bs []*Backend) *Backend { bs[1].SetUp(false); return nil },
			never: 1,
		},
		{
			name: "full",
			setup: func(bs []*Backend) *Backend {
				bs[2].reserve(time.Now())
				bs[2].reserve(time.Now())
				return nil
			},
			never: 2,
		},
		{
			name: "all down",
			setup: func(bs []*Backend) *Backend {
				for _, b := range bs {
					b.SetUp(false)
				}
				return nil
			},
			never:   -1,
			noneErr: true,
		},
		{
			name: "all full",
			setup: func(bs []*Backend) *Backend {
				for _, b := range bs {
					b.reserve(time.Now())
					b.reserve(time.Now())
				}
				return nil
			},
			never:   -1,
			noneErr: true,
		},
		{
			name: "only the excluded one is left",
			setup: func(bs []*Backend) *Backend {
				bs[0].SetUp(false)
				bs[1].SetUp(false)
				return bs[2]
			},
			never:   -1,
			noneErr: true,
		},
	}
	for _, policy := range policies {
		for _, tt := range tests {
			t.Run(policy+"/"+tt.name, func(t *testing.T) {
				c := testConfig(policy, 1, 1, 1)
				c.MaxConnectionsPerBackend = 2
				p := New(c)
				bs := p.Backends()
				exclude := tt.setup(bs)
				before := make([]int64, len(bs))
				for i, b := range bs {
					before[i] = b.Active()
				}
				seen := make([]int, len(bs))
				for i := range 60 {
					b, err := p.Pick(clientIP(i), exclude)
					if tt.noneErr {
						if !errors.Is(err, ErrNoBackend) || b != nil {
							t.Fatalf("Pick = %v, %v; want nil, ErrNoBackend", b, err)
						}
						continue
					}
					if err != nil {
						t.Fatalf("Pick: %v", err)
					}
					seen[index(p, b)]++
					b.Release()
				}
				if tt.never >= 0 && seen[tt.never] != 0 {
					t.Errorf("backend %d picked %d times; want never (picks %v)", tt.never, seen[tt.never], seen)
				}
				for i, b := range bs {
					if b.Active() != before[i] {
						t.Errorf("backend %d: Active() = %d after the picks; want %d", i, b.Active(), before[i])
					}
				}
			})
		}
	}
}

// TestPickConcurrent runs pick/release cycles from many goroutines (meant for
// -race) and checks that the reservation never overshoots max_connections_per_backend.
func TestPickConcurrent(t *testing.T) {
	const (
		goroutines = 8
		cycles     = 1000
		limit      = 5
	)
	for _, policy := range policies {
		t.Run(policy, func(t *testing.T) {
			c := testConfig(policy, 1, 2, 3)
			c.MaxConnectionsPerBackend = limit
			p := New(c)
			var wg sync.WaitGroup
			for g := range goroutines {
				wg.Go(func() {
					for i := range cycles {
						b, err := p.Pick(clientIP(g*cycles+i), nil)
						if err != nil {
							// 8 holders never fill 3 backends of 5.
							t.Errorf("Pick: %v", err)
							return
						}
						if a := b.Active(); a > limit {
							t.Errorf("%s: Active() = %d; want <= %d", b, a, limit)
						}
						b.Release()
					}
				})
			}
			wg.Wait()
			for _, b := range p.Backends() {
				if b.Active() != 0 {
					t.Errorf("%s: Active() = %d at the end; want 0", b, b.Active())
				}
			}
		})
	}
}

func TestReconcile(t *testing.T) {
	oldCfg := testConfig(config.BalanceLeastConn, 1, 1, 1) // .1 .2 .3
	old := New(oldCfg)
	a, b, removed := old.Backends()[0], old.Backends()[1], old.Backends()[2]
	a.reserve(time.Now())
	a.reserve(time.Now())
	b.SetUp(false)

	newCfg := testConfig(config.BalanceRoundRobin)
	newCfg.Name = "renamed"
	newCfg.MaxConnectionsPerBackend = 9
	newCfg.IdlePerWorker = 5
	// With checks on, health survives the reload and the new backend waits for
	// its first check (state_test.go covers a reload to check none).
	newCfg.Health.Check = config.CheckTCP
	newCfg.Backends = []config.Backend{testBackend(4, 1), testBackend(2, 1), testBackend(1, 3)}
	p := Reconcile(old, newCfg)

	if p.Name() != "renamed" {
		t.Errorf("Name() = %q; want renamed", p.Name())
	}
	if _, ok := p.policy.(*roundRobin); !ok {
		t.Errorf("policy = %T; want *roundRobin", p.policy)
	}
	bs := p.Backends()
	added := bs[0]
	tests := []struct {
		name     string
		got      *Backend
		want     *Backend // nil: must be a new Backend
		active   int64
		up       bool
		weight   int
		canceled bool
	}{
		{name: "kept with reservations", got: bs[2], want: a, active: 2, up: true, weight: 3},
		{name: "kept down", got: bs[1], want: b, active: 0, up: false, weight: 1},
		{name: "added", got: added, active: 0, up: false, weight: 1},
		{name: "removed", got: removed, want: removed, active: 0, up: true, weight: 1, canceled: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.want != nil && tt.got != tt.want {
				t.Errorf("got a different *Backend for %s", tt.want)
			}
			if tt.want == nil && (tt.got == a || tt.got == b || tt.got == removed) {
				t.Errorf("added backend reuses an old *Backend")
			}
			if tt.got.Active() != tt.active || tt.got.Up() != tt.up || tt.got.Weight() != tt.weight {
				t.Errorf("Active, Up, Weight = %d, %v, %d; want %d, %v, %d",
					tt.got.Active(), tt.got.Up(), tt.got.Weight(), tt.active, tt.up, tt.weight)
			}
			if !tt.canceled && (tt.got.MaxConns() != 9 || tt.got.IdleMax() != 5) {
				t.Errorf("MaxConns, IdleMax = %d, %d; want 9, 5", tt.got.MaxConns(), tt.got.IdleMax())
			}
			ctx := tt.got.Context()
			if canceled := ctx.Err() != nil; canceled != tt.canceled {
				t.Fatalf("context canceled = %v; want %v", canceled, tt.canceled)
			}
			if tt.canceled {
				if cause := context.Cause(ctx); !errors.Is(cause, ErrRemoved) {
					t.Errorf("context.Cause = %v; want ErrRemoved", cause)
				}
				if tt.got.Available() {
					t.Error("removed backend is still Available")
				}
			}
		})
	}

	// The old pool keeps serving conns that hold it, but never the removed backend.
	for i := range 10 {
		got, err := old.Pick(clientIP(i), nil)
		if err != nil {
			t.Fatalf("old pool Pick: %v", err)
		}
		if got == removed {
			t.Fatalf("old pool picked the removed backend")
		}
		got.Release()
	}
	if a.Active() != 2 {
		t.Errorf("kept backend: Active() = %d after old-pool picks; want 2", a.Active())
	}
}

func TestReconcileNilOld(t *testing.T) {
	p := Reconcile(nil, testConfig(config.BalanceSourceHash, 1, 1))
	if n := len(p.Backends()); n != 2 {
		t.Fatalf("len(Backends()) = %d; want 2", n)
	}
	if _, ok := p.policy.(*sourceHash); !ok {
		t.Errorf("policy = %T; want *sourceHash", p.policy)
	}
}

func ExamplePool_Pick() {
	p := New(config.Pool{
		Name:    "ws",
		Balance: config.BalanceRoundRobin,
		Backends: []config.Backend{
			{Weight: 2, Addr: netip.MustParseAddrPort("10.0.0.1:80")},
			{Weight: 1, Addr: netip.MustParseAddrPort("10.0.0.2:80")},
		},
	})
	for range 3 {
		b, err := p.Pick(netip.MustParseAddr("192.0.2.1"), nil)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(b) // dial and serve, then:
		b.Release()
	}
	// Output:
	// 10.0.0.1:80
	// 10.0.0.2:80
	// 10.0.0.1:80
}
