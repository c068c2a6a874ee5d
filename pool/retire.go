package pool

import (
	"context"
	"time"
)

// Retire says how the conns of a backend that a reload removed come to an
// end: they run on for Grace, then are closed one by one, spread evenly over
// Spread (shutdown.drain_timeout and close_spread), so its clients reconnect
// to the other backends in a trickle rather than all in one second.
type Retire struct {
	Grace, Spread time.Duration
}

// remove cancels b's Context with ErrRemoved, so that b takes no new conns
// from now on, and retires its tunnels and l4 conns as r says, once: in a
// goroutine of its own that ends when the last of them has been told to
// close. It goes through b's tunnel registry, as maint does.
func (b *Backend) remove(r Retire) {
	if !b.retiring.CompareAndSwap(false, true) {
		return
	}
	b.cancel(ErrRemoved)
	go b.retire(r)
}

// retire waits r.Grace, then closes b's tunnels with ErrRemoved, the i-th of
// n at i·Spread/n; a tunnel that opens afterwards (its conn was picked before
// the removal) is closed as soon as it opens.
func (b *Backend) retire(r Retire) {
	grace := time.NewTimer(r.Grace)
	<-grace.C
	b.closeSpread(context.Background(), r.Spread, ErrRemoved, true)
}

// Remove retires every backend of p, for a pool a reload deleted.
func (p *Pool) Remove(r Retire) {
	for _, b := range p.backends {
		b.remove(r)
	}
}
