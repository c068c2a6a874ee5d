package discovery

import (
	"context"
	"sync"
	"time"

	"github.com/wslb/wslb/clock"
)

// Clock is the time a Watcher keeps: the real one, or a test's.
type Clock = clock.Clock

// RealClock is time.Now and timers.
type RealClock = clock.Real

// Watcher looks the names of one pool up every interval and applies the
// answers to its Set. Set the fields, then call Run once, in the goroutine
// that should own the loop; Refresh may be called before, alone.
type Watcher struct {
	Set      *Set
	Resolver *Resolver
	// Interval is resolver.interval, measured from the start of one round
	// of lookups to the next.
	Interval time.Duration
	// Clock is nil for the real one.
	Clock Clock
	// OnLookups, when set, is told how many DNS lookups a round made for
	// the pool that were answered (NXDOMAIN and empty answers included)
	// and how many failed.
	OnLookups func(pool string, ok, failed int)
	// OnChange, when set, is called from Run's goroutine each time the
	// set's backends changed, to apply them. It must return once ctx is
	// done, so that stopping the watcher never waits on it.
	OnChange func(ctx context.Context, s *Set)
}

func (w *Watcher) clock() Clock {
	if w.Clock == nil {
		return RealClock{}
	}
	return w.Clock
}

// Refresh looks every name of the set up once, all at the same time, each
// bounded by resolver.timeout (an SRV name and then its targets: twice),
// and applies the answers. It reports whether the backends changed. A round
// cut short by ctx applies nothing: it says nothing about the names.
func (w *Watcher) Refresh(ctx context.Context) bool {
	names := w.Set.Names()
	prev := w.Set.prevAnswers()
	results := make([]result, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() { results[i] = lookup(ctx, w.Resolver, n, prev[i]) })
	}
	wg.Wait()
	if ctx.Err() != nil {
		return false
	}
	if w.OnLookups != nil {
		ok, failed := 0, 0
		for _, r := range results {
			ok, failed = ok+r.lookups-r.failed, failed+r.failed
		}
		w.OnLookups(w.Set.Name(), ok, failed)
	}
	return w.Set.apply(results, w.clock().Now())
}

// Run refreshes every Interval after the last refresh (at once while a
// name has never been answered, as after a reload that added it) and ends
// each hold when it is over, calling OnChange after every change, until ctx
// is done.
func (w *Watcher) Run(ctx context.Context) {
	clock := w.clock()
	next := w.Set.nextRefresh(w.Interval)
	for {
		wake := next
		if at, ok := w.Set.nextExpiry(); ok && at.Before(wake) {
			wake = at
		}
		select {
		case <-ctx.Done():
			return
		case <-clock.Until(wake):
		}
		now := clock.Now()
		var changed bool
		if !now.Before(next) {
			changed = w.Refresh(ctx)
			next = now.Add(w.Interval)
		} else {
			changed = w.Set.Expire(now)
		}
		if changed && w.OnChange != nil && ctx.Err() == nil {
			w.OnChange(ctx, w.Set)
		}
	}
}
