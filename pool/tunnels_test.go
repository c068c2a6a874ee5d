package pool

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wslb/wslb/config"
)

// stopLog records the causes a registry's tunnels were stopped with, as a
// tunnel's stop func would receive them, and when.
type stopLog struct {
	mu    sync.Mutex
	start time.Time
	stops []stopped
}

type stopped struct {
	id    int
	cause error
	at    time.Duration
}

// open starts a tunnel id on b whose stop is recorded in l.
func (l *stopLog) open(b *Backend, id int) *Tunnel {
	t := b.Track()
	t.Started(func(cause error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.stops = append(l.stops, stopped{id, cause, time.Since(l.start)})
	})
	return t
}

func (l *stopLog) get() []stopped {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]stopped(nil), l.stops...)
}

// TestTunnelRegistry: Started lists a tunnel, Ended takes it off, Ended
// before Started leaves nothing listed, and a closed tunnel is no longer
// counted even before its Ended (its graceful close may take seconds).
func TestTunnelRegistry(t *testing.T) {
	b := New(testConfig(config.BalanceLeastConn, 1)).Backends()[0]
	l := &stopLog{start: time.Now()}
	a := l.open(b, 1)
	c := l.open(b, 2)
	if n := b.Tunnels(); n != 2 {
		t.Fatalf("Tunnels = %d, want 2", n)
	}
	a.Ended()
	a.Ended() // twice is harmless
	if n := b.Tunnels(); n != 1 {
		t.Fatalf("after Ended: Tunnels = %d, want 1", n)
	}
	early := b.Track()
	early.Ended()
	early.Started(func(error) { t.Error("stop of an ended tunnel called") })
	if n := b.Tunnels(); n != 1 {
		t.Fatalf("Started after Ended listed it: Tunnels = %d, want 1", n)
	}
	if n := b.CloseYoungest(5, 0, ErrMaxAge); n != 1 {
		t.Fatalf("CloseYoungest = %d, want 1", n)
	}
	if n := b.Tunnels(); n != 0 {
		t.Fatalf("a closing tunnel is counted: Tunnels = %d", n)
	}
	c.Ended()
	if got := l.get(); len(got) != 1 || got[0].id != 2 || !errors.Is(got[0].cause, ErrMaxAge) {
		t.Fatalf("stops = %+v, want tunnel 2 with ErrMaxAge", got)
	}
}

// TestCloseYoungest: the most recently opened tunnels go first, none younger
// than minAge, at most n.
func TestCloseYoungest(t *testing.T) {
	now := time.Unix(1000, 0)
	p := NewWithClock(testConfig(config.BalanceLeastConn, 1), func() time.Time { return now })
	b := p.Backends()[0]
	l := &stopLog{}
	for id := range 6 { // opened at 0, 5, 10, 15, 20, 25 s
		l.open(b, id)
		now = now.Add(5 * time.Second)
	}
	// Now is 30 s: ids 4 and 5 (10 s and 5 s old) are younger than 11 s.
	cause := errors.New("test")
	if n := b.CloseYoungest(3, 11*time.Second, cause); n != 3 {
		t.Fatalf("CloseYoungest = %d, want 3", n)
	}
	var ids []int
	for _, s := range l.get() {
		ids = append(ids, s.id)
		if s.cause != cause {
			t.Errorf("tunnel %d stopped with %v", s.id, s.cause)
		}
	}
	if want := []int{3, 2, 1}; !slices.Equal(ids, want) {
		t.Fatalf("closed %v, want %v (youngest first, none under 11 s)", ids, want)
	}
	if n := b.CloseYoungest(10, 11*time.Second, cause); n != 1 {
		t.Fatalf("second CloseYoungest = %d, want only tunnel 0 left old enough", n)
	}
	if n := b.Tunnels(); n != 2 {
		t.Fatalf("Tunnels = %d, want the 2 young ones", n)
	}
}

// TestMaxAge: each tunnel is stopped with ErrMaxAge within ±10% of the
// pool's max_connection_age as it was when the tunnel opened; a reload
// changes it for tunnels opened after it only, and a tunnel that ended is
// never stopped.
func TestMaxAge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := testConfig(config.BalanceLeastConn, 1)
		c.MaxConnectionAge = 10 * time.Second
		p := New(c)
		b := p.Backends()[0]
		l := &stopLog{start: time.Now()}
		const n = 50
		for id := range n {
			l.open(b, id)
		}
		l.open(b, n).Ended() // ended before its age: not stopped
		c.MaxConnectionAge = time.Hour
		Reconcile(p, c)
		l.open(b, n+1) // opened after the reload: an hour

		time.Sleep(30 * time.Minute)
		synctest.Wait()
		got := l.get()
		if len(got) != n {
			t.Fatalf("%d tunnels stopped, want %d", len(got), n)
		}
		var lo, hi time.Duration = time.Hour, 0
		for _, s := range got {
			if !errors.Is(s.cause, ErrMaxAge) || s.id >= n {
				t.Fatalf("stopped %+v", s)
			}
			lo, hi = min(lo, s.at), max(hi, s.at)
		}
		if lo < 9*time.Second || hi > 11*time.Second {
			t.Fatalf("stopped between %v and %v, want within 9s..11s", lo, hi)
		}
		// 50 uniform draws over 2 s spread out: all at one instant would
		// mean no jitter.
		if hi-lo < time.Second {
			t.Errorf("ages span only %v: no jitter?", hi-lo)
		}
		if b.Tunnels() != 1 {
			t.Fatalf("Tunnels = %d, want the one opened after the reload", b.Tunnels())
		}
		time.Sleep(time.Hour)
		synctest.Wait()
		if got := l.get(); len(got) != n+1 || got[n].at < 54*time.Minute {
			t.Fatalf("the tunnel opened after the reload: %+v", got[n:])
		}
	})
}

// TestCloseAllSpread: CloseAll stops every tunnel the backend had, the i-th
// of n at i·spread/n, oldest first, and stops early when its ctx is done.
func TestCloseAllSpread(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(testConfig(config.BalanceLeastConn, 1)).Backends()[0]
		l := &stopLog{start: time.Now()}
		for id := range 4 {
			l.open(b, id)
		}
		cause := errors.New("maint")
		if n := b.CloseAll(t.Context(), 4*time.Second, cause); n != 4 {
			t.Fatalf("CloseAll = %d, want 4", n)
		}
		for i, s := range l.get() {
			if s.id != i || s.at != time.Duration(i)*time.Second || s.cause != cause {
				t.Errorf("stop %d = %+v, want tunnel %d at %ds", i, s, i, i)
			}
		}

		for id := range 4 {
			l.open(b, 10+id)
		}
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(1500*time.Millisecond, cancel)
		if n := b.CloseAll(ctx, 4*time.Second, cause); n != 2 {
			t.Fatalf("CloseAll cancelled after 1.5 s of 4 s = %d, want 2", n)
		}
		if b.Tunnels() != 2 {
			t.Fatalf("Tunnels = %d, want 2 left", b.Tunnels())
		}
	})
}
