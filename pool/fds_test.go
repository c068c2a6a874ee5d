package pool

import (
	"bufio"
	"testing"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/fdbudget"
	"github.com/wslb/wslb/internal/wait"
)

// TestDescriptorsCharged: each reservation and each idle conn is one
// descriptor of the pool's budget, through a reconcile (backends added and
// removed) and every way the cache lets go of a conn; all given back, the
// count is where it started.
func TestDescriptorsCharged(t *testing.T) {
	fds := fdbudget.WithLimit(1000, 10, nil)
	c := testConfig(config.BalanceRoundRobin, 1, 1)
	c.IdlePerWorker = 2
	p := NewCounted(c, fds)
	want := func(n int64, what string) {
		t.Helper()
		if got := fds.Used(); got != n {
			t.Fatalf("%s: %d descriptors counted, want %d", what, got, n)
		}
	}
	a, _ := p.Pick(clientIP(1), nil)
	b, _ := p.Pick(clientIP(2), nil)
	want(12, "two reservations")
	if a.FDs() != fds {
		t.Fatal("a backend does not carry its pool's budget")
	}

	var cache IdleCache
	ps := dialPairs(t, 4)
	for _, pr := range ps[:3] {
		cache.Put(a, pr.client, bufio.NewReader(pr.client)) // the third evicts the first
	}
	want(14, "two idle conns (one evicted) and two reservations")
	cache.Put(a, ps[3].client, nil) // at the cap: evicts one, keeps the count
	want(14, "an idle conn evicted for a new one")
	if _, _, ok := cache.Get(a); !ok {
		t.Fatal("no idle conn")
	}
	want(13, "a conn taken from the cache (its reservation covers it)")
	a.Release()
	b.Release()
	want(11, "the reservations released, one idle conn left")

	// A reload keeping a and adding a third backend charges the same budget;
	// removing a purges its idle conn.
	c2 := testConfig(config.BalanceRoundRobin, 1, 1, 1)
	next := Reconcile(p, c2)
	third := next.Backends()[2]
	if third.FDs() != fds {
		t.Fatal("a backend added by a reload is not charged to the pool's budget")
	}
	r, _ := next.Pick(clientIP(3), nil)
	want(12, "a reservation on the reconciled pool")
	r.Release()
	c3 := testConfig(config.BalanceRoundRobin)
	c3.Backends = []config.Backend{testBackend(2, 1), testBackend(3, 1)}
	Reconcile(next, c3)
	wait.For(t, "the removed backend's idle conn to be purged", func() bool { return fds.Used() == 10 })
	cache.Close()
	want(10, "everything given back")
}
