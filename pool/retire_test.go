package pool

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wslb/wslb/config"
)

// TestRemovedBackendConnsSpread: the conns of a backend a reload removed end
// after the grace, one by one over the spread, while a conn that ended by
// itself is not called back.
func TestRemovedBackendConnsSpread(t *testing.T) {
	// In a synctest bubble the grace and spread timers run on a fake clock:
	// each end comes exactly on time, and waiting for them takes no time.
	synctest.Test(t, func(t *testing.T) {
		old := New(testConfig(config.BalanceLeastConn, 1))
		b := old.Backends()[0]
		const n = 4
		var mu sync.Mutex
		var ends []time.Duration
		var start time.Time
		tunnels := make([]*Tunnel, n+1)
		for i := range n + 1 {
			if _, err := old.Pick(clientIP(i), nil); err != nil {
				t.Fatal(err)
			}
			tunnels[i] = b.Track()
			tunnels[i].Started(func(error) {
				mu.Lock()
				defer mu.Unlock()
				ends = append(ends, time.Since(start))
			})
		}
		tunnels[n].Ended() // this conn ended before the reload
		b.Release()

		grace, spread := 100*time.Millisecond, 400*time.Millisecond
		start = time.Now()
		p := ReconcileRetiring(old, testConfig(config.BalanceLeastConn), Retire{Grace: grace, Spread: spread})
		if len(p.Backends()) != 0 {
			t.Fatal("backend kept")
		}
		if _, err := old.Pick(clientIP(9), nil); err == nil {
			t.Fatal("a removed backend was picked")
		}
		// The fake clock: past the last end, and past where a stopped
		// conn's call would come; then every call due has been made.
		time.Sleep(grace + spread)
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if len(ends) != n {
			t.Fatalf("%d conns ended, want %d: %v", len(ends), n, ends)
		}
		// The i-th of n ends at grace + i·spread/n: 100, 200, 300, 400 ms. The
		// slack is for real timers on a loaded machine (on the fake clock the
		// ends are exact); no end may come early.
		for i, d := range ends {
			want := grace + spread*time.Duration(i)/n
			if d < want-5*time.Millisecond || d > want+spread/n {
				t.Errorf("conn %d ended at %v, want about %v (all: %v)", i, d, want, ends)
			}
		}
		for _, tn := range tunnels {
			tn.Ended()
		}
	})
}

// TestReloadAddedBackendRamps: a backend a reload adds starts slow start; the
// ones of the first configuration do not.
func TestReloadAddedBackendRamps(t *testing.T) {
	c := testConfig(config.BalanceLeastConn, 10)
	c.SlowStart = time.Minute
	old := New(c)
	now := time.Now()
	if w := old.Backends()[0].EffectiveWeight(now); w != 10 {
		t.Fatalf("first backend weight %v, want 10", w)
	}
	c2 := testConfig(config.BalanceLeastConn, 10, 10)
	c2.SlowStart = time.Minute
	p := ReconcileRetiring(old, c2, Retire{})
	if w := p.Backends()[0].EffectiveWeight(time.Now()); w != 10 {
		t.Errorf("kept backend weight %v, want 10", w)
	}
	if w := p.Backends()[1].EffectiveWeight(time.Now()); w >= 2 {
		t.Errorf("added backend weight %v, want about 1 (10%% of 10) at its start", w)
	}
}

// TestRetiredBackendClosesLateTunnels: a conn picked before the removal that
// becomes a tunnel after the retirement closed the others is stopped as it
// opens, with ErrRemoved.
func TestRetiredBackendClosesLateTunnels(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		old := New(testConfig(config.BalanceLeastConn, 1))
		b := old.Backends()[0]
		if _, err := old.Pick(clientIP(1), nil); err != nil {
			t.Fatal(err)
		}
		ReconcileRetiring(old, testConfig(config.BalanceLeastConn), Retire{Grace: 10 * time.Millisecond})
		time.Sleep(20 * time.Millisecond)
		synctest.Wait()
		var got error
		late := b.Track()
		late.Started(func(cause error) { got = cause })
		if got != ErrRemoved || b.Tunnels() != 0 {
			t.Fatalf("a tunnel opened after the retirement: stopped with %v, %d listed; want ErrRemoved, 0", got, b.Tunnels())
		}
		late.Ended()
		b.Release()
	})
}
