package main

import (
	"context"
	"fmt"
	"sync"

	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/rebalance"
)

// startRebalance starts a rebalancer for every pool of g, with g's
// settings, and returns what stops them all and waits for them. A pool
// with rebalance.enabled false has one too, idle until rebalanceNow.
func (in *instance) startRebalance(ctx context.Context, g *generation) func() {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	g.rebalancers = map[string]*rebalance.Rebalancer{}
	for _, pc := range g.cfg.Pools {
		name := pc.Name
		r := &rebalance.Rebalancer{
			Pool:   func() *pool.Pool { return currentPool(in, g, name) },
			Config: pc.Rebalance, MinAge: in.rebalanceMinAge, Log: in.log,
		}
		g.rebalancers[name] = r
		wg.Go(func() { r.Run(ctx) })
	}
	return func() {
		cancel()
		wg.Wait()
	}
}

// currentPool is pool name as it is now: discovery may replace it within
// g. Before g is the running generation, or once a reload dropped the pool,
// it is g's own.
func currentPool(in *instance, g *generation, name string) *pool.Pool {
	if p := in.gen.Load().pools[name]; p != nil {
		return p
	}
	return g.pools[name]
}

// restartRebalance stops old's rebalancers and starts next's, so a reload's
// rebalance settings apply at once.
func (in *instance) restartRebalance(bg context.Context, old, next *generation) {
	if old.stopRebalance != nil {
		old.stopRebalance()
	}
	next.stopRebalance = in.startRebalance(bg, next)
}

// rebalanceNow starts rebalancing pool name now, at its rebalance.rate, even
// with rebalance.enabled false, and returns how many tunnels will be moved:
// what POST /api/v1/pools/{pool}/rebalance answers.
func (in *instance) rebalanceNow(name string) (int, error) {
	r := in.gen.Load().rebalancers[name]
	if r == nil {
		return 0, fmt.Errorf("no pool named %q", name)
	}
	return r.Now(), nil
}
