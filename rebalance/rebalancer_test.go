package rebalance

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/pool"
)

// TestRunNow: with rebalancing off, the loop sleeps until Now, which
// reports the moves needed and makes them at rate, the first step at once,
// each stop with ErrRebalance; then it sleeps again.
func TestRunNow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		p := pool.New(simPool(1))
		var at []time.Duration
		start := time.Now()
		// open places a client with Pick; when moved, it comes back at once.
		var open func()
		open = func() {
			mu.Lock()
			b, err := p.Pick(netip.Addr{}, nil)
			mu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			tr := b.Track()
			tr.Started(func(cause error) {
				if !errors.Is(cause, ErrRebalance) {
					t.Errorf("stopped with %v", cause)
				}
				tr.Ended()
				b.Release()
				mu.Lock()
				at = append(at, time.Since(start))
				mu.Unlock()
				open()
			})
		}
		for range 40 {
			open()
		}
		time.Sleep(MinAge)
		mu.Lock()
		p = pool.Reconcile(p, simPool(2))
		mu.Unlock()
		r := &Rebalancer{Pool: func() *pool.Pool { mu.Lock(); defer mu.Unlock(); return p }, Config: config.Rebalance{Tolerance: 0.2, Rate: 7}}
		done := make(chan struct{})
		ctx, cancelRun := context.WithCancel(t.Context())
		go func() { defer close(done); r.Run(ctx) }()
		time.Sleep(time.Minute)
		synctest.Wait()
		if len(at) != 0 {
			t.Fatalf("%d moved with rebalancing off and no Now", len(at))
		}
		if n := r.Now(); n != 20 {
			t.Fatalf("Now = %d, want 20", n)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		cancelRun()
		<-done
		mu.Lock()
		defer mu.Unlock()
		if len(at) != 20 {
			t.Fatalf("%d moved, want 20", len(at))
		}
		// 7 at once, 7 a second later, 6 the second after.
		for i, d := range at {
			if want := MinAge + time.Minute + time.Duration(i/7)*time.Second; d != want {
				t.Fatalf("move %d at %v, want %v", i, d, want)
			}
		}
	})
}
