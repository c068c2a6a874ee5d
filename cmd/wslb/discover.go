package main

// Backends by name: every pool's discovery.Set, the first lookups before
// anything serves, a Watcher per pool with names for each generation, and
// a change applied as a reload applies changed backends, to that pool only.

import (
	"context"
	"maps"
	"slices"
	"sync"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/discovery"
	"github.com/wslb/wslb/health"
	"github.com/wslb/wslb/pool"
)

// newSet is pc's discovery set in cfg, carrying over what prev (the running
// pool's set, or nil) knows of the names that stay.
func (in *instance) newSet(cfg *config.Config, pc config.Pool, prev *discovery.Set) *discovery.Set {
	return discovery.NewSet(pc, cfg.Resolver.Hold, in.log, prev)
}

// firstLookups looks up the names of every pool of g once, all at the same
// time, before anything serves: a name that answers starts with its
// backends; one that does not is logged and counted, and its pool starts
// without them. Each lookup is bounded by resolver.timeout.
func (in *instance) firstLookups(ctx context.Context, g *generation) {
	var wg sync.WaitGroup
	for _, s := range g.sets {
		if len(s.Names()) > 0 {
			wg.Go(func() { in.watcher(g, s).Refresh(ctx) })
		}
	}
	wg.Wait()
}

// watcher is the discovery loop of set s in generation g: its changes go to
// serve's loop, which applies them one at a time between reloads.
func (in *instance) watcher(g *generation, s *discovery.Set) *discovery.Watcher {
	return &discovery.Watcher{
		Set: s, Resolver: g.resolver, Interval: g.cfg.Resolver.Interval, Clock: in.clock,
		OnLookups: func(poolName string, ok, failed int) {
			in.metrics.DNSLookups.WithLabelValues(poolName, "ok").Add(float64(ok))
			in.metrics.DNSLookups.WithLabelValues(poolName, "error").Add(float64(failed))
		},
		OnChange: func(ctx context.Context, s *discovery.Set) {
			select {
			case in.discovered <- s:
			case <-ctx.Done():
			}
		},
	}
}

// startDiscovery runs a watcher for every pool of g with names, and returns
// the func that stops them and waits for them to return.
func (in *instance) startDiscovery(ctx context.Context, g *generation) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, s := range g.sets {
		if len(s.Names()) > 0 {
			w := in.watcher(g, s)
			wg.Go(func() { w.Run(ctx) })
		}
	}
	return func() {
		cancel()
		wg.Wait()
	}
}

// applyDiscovered applies what set s gives now to its pool, as a reload
// applies changed backends but to that pool alone: the pool is reconciled
// (kept backends keep their conns, counts and health; added ones ramp up by
// slow start; removed ones retire after drain_timeout, spread over
// close_spread), every proxy gets it, the series of removed backends go,
// and the pool's health checks restart. bg is what the checks run under.
func (in *instance) applyDiscovered(bg context.Context, s *discovery.Set) {
	in.mu.Lock()
	defer in.mu.Unlock()
	g := in.gen.Load()
	i := slices.IndexFunc(g.cfg.Pools, func(pc config.Pool) bool { return pc.Name == s.Name() })
	if in.draining.Load() || i < 0 || g.sets[s.Name()] != s {
		return // a reload or the drain got there first
	}
	pc := g.cfg.Pools[i]
	next := *g
	next.pools = maps.Clone(g.pools)
	retire := pool.Retire{Grace: g.cfg.Shutdown.DrainTimeout, Spread: g.cfg.Shutdown.CloseSpread}
	next.pools[pc.Name] = pool.ReconcileRetiring(g.pools[pc.Name], s.Pool(), retire)
	in.newSeries(next.pools[pc.Name])
	in.forgetRemoved(g, &next)
	for _, l := range next.listeners {
		switch {
		case l.l4 != nil && l.cfg.Pool == pc.Name:
			l.l4.Update(l.cfg, next.pools[pc.Name])
		case l.l7 != nil:
			l.l7.SetPools(next.pools)
		}
	}
	in.listenerSeries(&next)
	if g.stopChecks != nil {
		next.stopChecks = slices.Clone(g.stopChecks)
		next.stopChecks[i]()
		next.stopChecks[i] = health.Start(bg, next.pools[pc.Name], pc.Health, in.log, in.healthHooks())
	}
	in.gen.Store(&next)
	in.refreshGauges()
}
