package main

// What the instance shows of itself: metric series and the gauges derived
// from pool state, health check results, readiness, and /status.

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/health"
	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/status"
)

// newSeries creates p's per-backend series that have no other source before
// the first event: dashboards see every backend from the start.
func (in *instance) newSeries(p *pool.Pool) {
	for _, b := range p.Backends() {
		in.metrics.HealthChecks.WithLabelValues(p.Name(), b.String(), "ok")
		in.metrics.HealthChecks.WithLabelValues(p.Name(), b.String(), "fail")
		in.metrics.AgentChecks.WithLabelValues(p.Name(), b.String(), "ok")
		in.metrics.AgentChecks.WithLabelValues(p.Name(), b.String(), "fail")
	}
}

// dnsSeries creates wslb_dns_lookups_total of pool pc at 0, names or not:
// alerts on failed lookups see the series before the first failure, and a
// reload that adds a name adds no series.
func (in *instance) dnsSeries(pc config.Pool) {
	in.metrics.DNSLookups.WithLabelValues(pc.Name, "ok")
	in.metrics.DNSLookups.WithLabelValues(pc.Name, "error")
}

// listenerSeries creates the per-backend series of every listener of g at
// their current values, so dashboards see every backend before it serves.
func (in *instance) listenerSeries(g *generation) {
	for _, l := range g.listeners {
		for _, name := range l.cfg.PoolNames() {
			if p := g.pools[name]; p != nil {
				for _, b := range p.Backends() {
					in.metrics.ConnectionsActive.WithLabelValues(l.cfg.Name, p.Name(), b.String())
				}
			}
		}
	}
}

// ready is /readyz: every listener is bound (true once newInstance returned)
// and every pool has a backend that may take conns; never while draining.
func (in *instance) ready() (bool, string) {
	if in.draining.Load() {
		return false, "draining"
	}
	for name, p := range in.gen.Load().pools {
		up, out := false, 0
		for _, b := range p.Backends() {
			// Healthy, not Available: a pool whose backends are all busy
			// (max_connections_per_backend) is still ready. A backend in
			// drain or maint is not Healthy: it takes no new conns.
			up = up || b.Healthy()
			if b.Admin() != pool.AdminReady {
				out++
			}
		}
		if !up {
			if out > 0 {
				return false, fmt.Sprintf("pool %s has no backend up (%d in drain or maint)", name, out)
			}
			return false, "pool " + name + " has no backend up"
		}
	}
	return true, "ready"
}

// startChecks starts the active health checks of every pool of g and
// returns their stop funcs.
func (in *instance) startChecks(ctx context.Context, g *generation) []func() {
	var stops []func()
	for _, pc := range g.cfg.Pools {
		stops = append(stops, health.Start(ctx, g.pools[pc.Name], pc.Health, in.log, in.healthHooks()))
	}
	return stops
}

// healthHooks feed the health checks' results into the metrics.
func (in *instance) healthHooks() health.Hooks {
	return health.Hooks{
		OnResult: func(poolName string, b *pool.Backend, err error) {
			result := "ok"
			if err != nil {
				result = "fail"
			}
			in.metrics.HealthChecks.WithLabelValues(poolName, b.String(), result).Inc()
			in.board.CheckDone(poolName, b.String(), err, time.Now())
		},
		OnChange: func(poolName string, b *pool.Backend, up bool, _ string, lastErr error) {
			in.metrics.BackendUp.WithLabelValues(poolName, b.String()).Set(boolFloat(b.Healthy()))
			if !up && lastErr != nil {
				// A passive ejection's dial error, or the agent's down, which
				// no active check reported.
				in.board.Failed(poolName, b.String(), lastErr, time.Now())
			}
		},
		OnAgent: func(poolName string, b *pool.Backend, err error) {
			result := "ok"
			if err != nil {
				result = "fail"
			}
			in.metrics.AgentChecks.WithLabelValues(poolName, b.String(), result).Inc()
		},
		SetAdmin: in.agentAdmin,
	}
}

// agentAdmin applies a backend agent's ready, drain or maint as the backend's
// admin state, as the write API would: the agent's word and the operator's
// are one state, the last one set wins (HAProxy's rule). The checker calls
// it only when the agent's word changes, so an agent that keeps saying ready
// does not undo an operator's drain at every check.
func (in *instance) agentAdmin(b *pool.Backend, state string) {
	a, err := pool.ParseAdmin(state)
	if err != nil {
		in.log.Warn("agent check: ignored an admin state", "pool", b.PoolName(), "backend", b.String(), "err", err)
		return
	}
	if prev := b.SetAdmin(a); prev != a {
		in.log.Info("backend admin state set by its agent", "pool", b.PoolName(), "backend", b.String(), "state", a.String(), "was", prev.String())
	}
}

// gatherer refreshes the gauges that are derived from pool state before every
// scrape: a passive ejection ends when fail_timeout passes, with no event to
// hook, and idle caches change in every worker. It is the one writer of
// wslb_idle_connections: read from the count the caches keep, the gauge is
// exact whatever order the workers' changes land in.
func (in *instance) gatherer() prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		in.refreshGauges()
		return in.reg.Gather()
	})
}

func (in *instance) refreshGauges() {
	for _, p := range in.gen.Load().pools {
		in.metrics.Backends.WithLabelValues(p.Name()).Set(float64(len(p.Backends())))
		for _, b := range p.Backends() {
			in.metrics.BackendUp.WithLabelValues(p.Name(), b.String()).Set(boolFloat(b.Healthy()))
			in.metrics.IdleConnections.WithLabelValues(p.Name(), b.String()).Set(float64(b.Idle()))
			a := b.Admin()
			for _, s := range pool.Admins {
				in.metrics.BackendState.WithLabelValues(p.Name(), b.String(), s.String()).Set(boolFloat(s == a))
			}
			in.metrics.BackendWeight.WithLabelValues(p.Name(), b.String()).Set(b.EffectiveWeight(p.Clock()()))
		}
	}
}

// status is /status.json, read from the running instance.
func (in *instance) status() status.Snapshot {
	g := in.gen.Load()
	return in.board.Snapshot(status.Sources{
		Version: buildVersion(), Started: in.started, Config: g.cfg, Pools: g.pools,
		Listeners: sockets(g.listeners), Metrics: in.metrics, Ready: in.ready, Draining: in.draining.Load(),
	}, time.Now())
}

// sample feeds the status board's history once per statusInterval.
func (in *instance) sample(ctx context.Context) {
	t := time.NewTicker(statusInterval)
	defer t.Stop()
	in.board.Sample(in.gen.Load().pools)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			in.board.Sample(in.gen.Load().pools)
		}
	}
}

func boolFloat(v bool) float64 {
	if v {
		return 1
	}
	return 0
}

// statusInterval is how often the status board samples every backend's
// active count, the resolution of the /status page's sparklines.
const statusInterval = time.Second
