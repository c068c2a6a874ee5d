package pool

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wslb/wslb/config"
)

// TestParseAdmin: every state's word reads back as that state; anything
// else is an error that names the valid words.
func TestParseAdmin(t *testing.T) {
	for _, a := range Admins {
		if got, err := ParseAdmin(a.String()); err != nil || got != a {
			t.Errorf("ParseAdmin(%q) = %v, %v", a.String(), got, err)
		}
	}
	for _, bad := range []string{"", "Drain", "up", "maintenance"} {
		if _, err := ParseAdmin(bad); err == nil || err.Error() != `unknown backend state "`+bad+`": use ready, drain or maint` {
			t.Errorf("ParseAdmin(%q) error = %v", bad, err)
		}
	}
}

// TestAdminState: drain and maint take a backend out of every policy's
// picks while its reservations run on and its health stays as it was;
// ready brings it back; the state outlives a reconcile that keeps the
// backend, and a backend re-added after a removal starts ready.
func TestAdminState(t *testing.T) {
	for _, balance := range []string{config.BalanceLeastConn, config.BalanceRoundRobin, config.BalanceSourceHash} {
		t.Run(balance, func(t *testing.T) {
			c := testConfig(balance, 1, 1)
			p := New(c)
			b := p.Backends()[1]
			held, err := p.Pick(clientIP(1), p.Backends()[0])
			if err != nil || held != b {
				t.Fatalf("pick excluding the other = %v, %v", held, err)
			}
			for _, a := range []Admin{AdminDrain, AdminMaint} {
				b.SetAdmin(a)
				if b.Admin() != a || b.Healthy() || b.State() != StateUp {
					t.Fatalf("%v: admin %v, healthy %v, state %v", a, b.Admin(), b.Healthy(), b.State())
				}
				for i := range 10 {
					got, err := p.Pick(clientIP(i), nil)
					if err != nil || got == b {
						t.Fatalf("%v: pick %d = %v, %v", a, i, got, err)
					}
					got.Release()
				}
			}
			if b.Active() != 1 {
				t.Fatalf("active %d, want the conn it had to run on", b.Active())
			}
			b.Release()
			b.SetAdmin(AdminDrain)
			p = Reconcile(p, c)
			if p.Backends()[1] != b || b.Admin() != AdminDrain {
				t.Fatalf("after a reconcile: same backend %v, admin %v", p.Backends()[1] == b, b.Admin())
			}
			if prev := b.SetAdmin(AdminReady); prev != AdminDrain || !b.Healthy() {
				t.Fatalf("ready: prev %v, healthy %v", prev, b.Healthy())
			}
			if got, err := p.Pick(clientIP(1), p.Backends()[0]); err != nil || got != b {
				t.Fatalf("pick after ready = %v, %v", got, err)
			}

			b.SetAdmin(AdminMaint)
			p = Reconcile(p, testConfig(balance, 1))
			p = Reconcile(p, c)
			if nb := p.Backends()[1]; nb == b || nb.Admin() != AdminReady || !nb.Healthy() {
				t.Fatalf("re-added backend: new %v, admin %v, healthy %v", nb != b, nb.Admin(), nb.Healthy())
			}
		})
	}
}

// TestMaintSpread: maint stops every tunnel the backend has with ErrMaint,
// spread evenly over the close spread, oldest first; going back to ready
// part way stops the close, and the rest run on. drain closes nothing.
func TestMaintSpread(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := New(testConfig(config.BalanceLeastConn, 1))
		p.SetCloseSpread(4 * time.Second)
		b := p.Backends()[0]
		l := &stopLog{start: time.Now()}
		for id := range 4 {
			l.open(b, id)
		}
		b.SetAdmin(AdminDrain)
		time.Sleep(time.Minute) // synctest's clock: drain must close nothing, ever
		if n := b.Tunnels(); n != 4 {
			t.Fatalf("drain: Tunnels = %d, want 4 running on", n)
		}
		b.SetAdmin(AdminMaint)
		time.Sleep(5 * time.Second)
		got := l.get()
		if len(got) != 4 {
			t.Fatalf("maint closed %d tunnels, want 4", len(got))
		}
		for i, s := range got {
			if s.id != i || s.at != time.Minute+time.Duration(i)*time.Second || !errors.Is(s.cause, ErrMaint) {
				t.Errorf("stop %d = %+v, want tunnel %d at 1m%ds with ErrMaint", i, s, i, i)
			}
		}
		if r := ErrMaint.(interface{ Reason() string }).Reason(); r != "maint" {
			t.Errorf("ErrMaint's reason %q", r)
		}

		b.SetAdmin(AdminReady)
		for id := range 4 {
			l.open(b, 10+id)
		}
		b.SetAdmin(AdminMaint)
		time.Sleep(1500 * time.Millisecond)
		b.SetAdmin(AdminReady)
		time.Sleep(time.Minute)
		if n := b.Tunnels(); n != 2 {
			t.Fatalf("ready 1.5 s into a 4 s maint close: Tunnels = %d, want 2 left running", n)
		}
	})
}
