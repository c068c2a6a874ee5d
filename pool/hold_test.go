package pool

import (
	"testing"

	"github.com/wslb/wslb/config"
)

// TestHeldBackend: a backend configured Held takes no new conns under any
// policy while its reservations run on; lifting the hold brings it back at
// once at its full weight, with its count and state; a hold of another
// reason outlives a reconcile.
func TestHeldBackend(t *testing.T) {
	for _, balance := range []string{config.BalanceLeastConn, config.BalanceRoundRobin, config.BalanceSourceHash} {
		t.Run(balance, func(t *testing.T) {
			c := testConfig(balance, 1, 1)
			c.Backends[1].Source = "chat.internal"
			c.SlowStart = 1 << 40 // a ramp, were one started, would show in EffectiveWeight
			p := New(c)
			held := p.Backends()[1]
			if held.Source() != "chat.internal" || p.Backends()[0].Source() != "" {
				t.Fatalf("sources %q, %q", p.Backends()[0].Source(), held.Source())
			}
			b, err := p.Pick(clientIP(1), p.Backends()[0])
			if err != nil || b != held {
				t.Fatalf("pick excluding the other = %v, %v", b, err)
			}

			c.Backends[1].Held = true
			p = Reconcile(p, c)
			if p.Backends()[1] != held || !held.Held() || held.Healthy() || held.Available() {
				t.Fatalf("held backend: same %v, held %v, healthy %v", p.Backends()[1] == held, held.Held(), held.Healthy())
			}
			for i := range 20 {
				got, err := p.Pick(clientIP(i), nil)
				if err != nil || got == held {
					t.Fatalf("pick %d = %v, %v: a held backend took a conn", i, got, err)
				}
				got.Release()
			}
			if _, err := p.Pick(clientIP(1), p.Backends()[0]); err != ErrNoBackend {
				t.Fatalf("only the held backend left: err %v, want ErrNoBackend", err)
			}
			if held.Active() != 1 {
				t.Fatalf("held backend's conn count %d, want its conn to run on (1)", held.Active())
			}
			held.Release()

			held.SetHold(1<<5, true) // another reason, as an operator's drain will be
			c.Backends[1].Held = false
			p = Reconcile(p, c)
			if held.Holds() != 1<<5 || held.Healthy() {
				t.Fatalf("holds %b after the reconcile, want the other reason kept", held.Holds())
			}
			held.SetHold(1<<5, false)
			if !held.Healthy() || held.EffectiveWeight(p.Clock()()) != 1 {
				t.Fatalf("back: healthy %v, effective weight %v, want full at once", held.Healthy(), held.EffectiveWeight(p.Clock()()))
			}
			if got, err := p.Pick(clientIP(1), p.Backends()[0]); err != nil || got != held {
				t.Fatalf("pick after the hold = %v, %v", got, err)
			}
		})
	}
}
