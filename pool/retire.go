package pool

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Retire says how the conns of a backend that a reload removed come to an
// end: they run on for Grace, then are closed one by one, spread evenly over
// Spread (shutdown.drain_timeout and close_spread), so its clients reconnect
// to the other backends in a trickle rather than all in one second.
type Retire struct {
	Grace, Spread time.Duration
}

// retirement is a removed backend's Retire and what it had when removed.
type retirement struct {
	Retire
	at   time.Time
	n    int64        // conns it served when removed: the spread's slots
	next atomic.Int64 // the next conn's slot
}

// remove records how b's conns end, then cancels b's Context with
// ErrRemoved: b takes no new conns from now on.
func (b *Backend) remove(r Retire) {
	b.retired.CompareAndSwap(nil, &retirement{Retire: r, at: time.Now(), n: b.active.Load()})
	b.cancel(ErrRemoved)
}

// OnRemoved arranges for end to be called once a reload has removed b and
// the conn's turn in the retirement spread has come: the i-th conn of n at
// Grace + i·Spread/n after the removal. A conn to b calls it when it starts
// to live on its own (a tunnel, an l4 conn), and calls stop when it ends;
// stop makes sure end is not called after it returns, unless it already was.
func (b *Backend) OnRemoved(end func()) (stop func()) {
	var mu sync.Mutex
	var timer *time.Timer
	stopped := false
	stopAfter := context.AfterFunc(b.ctx, func() {
		var d time.Duration
		if r := b.retired.Load(); r != nil {
			n := max(r.n, 1)
			i := min(r.next.Add(1)-1, n-1)
			d = r.Grace + r.Spread*time.Duration(i)/time.Duration(n) - time.Since(r.at)
		}
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			timer = time.AfterFunc(max(d, 0), end)
		}
	})
	return func() {
		stopAfter()
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		if timer != nil {
			timer.Stop()
		}
	}
}

// Remove retires every backend of p, for a pool a reload deleted.
func (p *Pool) Remove(r Retire) {
	for _, b := range p.backends {
		b.remove(r)
	}
}
