package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/discovery"
	"github.com/wslb/wslb/frontend"
	"github.com/wslb/wslb/pool"
)

// reload reads the configuration file again and applies what changed. An
// invalid file, or one whose new sockets cannot be bound, is rejected as a
// whole: every problem is logged and the running configuration is left
// exactly as it was. acceptCtx is what new listeners accept under; bg is what
// health checks run under.
func (in *instance) reload(acceptCtx, bg context.Context, trigger string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.draining.Load() {
		return
	}
	if in.path == "" {
		in.log.Warn("reload ignored: wslb was not started from a configuration file", "trigger", trigger)
		return
	}
	// The ACME managers of the config that runs once the reload is done,
	// applied or not: those of changed or removed blocks, or that a failed
	// reload made, are retired.
	defer func() { in.acme.Keep(in.gen.Load().cfg) }()
	cfg, err := config.Load(in.path)
	if err == nil {
		err = in.apply(acceptCtx, bg, cfg)
	}
	if err != nil {
		in.metrics.ConfigReloads.WithLabelValues("rejected").Inc()
		var ps config.Problems
		if errors.As(err, &ps) {
			for _, p := range ps {
				in.log.Error("reload: "+p.String(), "trigger", trigger)
			}
		} else {
			in.log.Error("reload: "+err.Error(), "trigger", trigger)
		}
		in.log.Error("configuration reload rejected; the running configuration keeps serving", "trigger", trigger, "file", in.path)
		return
	}
	in.metrics.ConfigReloads.WithLabelValues("ok").Inc()
}

// apply moves the running instance to cfg, in named steps. prepare is the
// only one that may fail, and it undoes what it did; after it nothing fails
// and nothing is undone.
//
//   - Listeners are matched by name. A new one is bound; a removed one stops
//     accepting and its conns run out (drain_timeout, then close_spread); one
//     whose address, mode or worker count changed is bound anew, and the
//     conns of its old sockets continue until they end or the process
//     drains; any other change applies in place, to conns accepted from now
//     on.
//   - Pools are reconciled by address: backends that stay keep their conns,
//     their counts and their health; added ones ramp up by slow start; the
//     conns of removed ones end after drain_timeout, spread over close_spread.
//     The addresses that names gave, and those held, stay as the last
//     lookups left them (carryDiscovery) until the next lookup.
//   - Nothing else ends an established conn.
func (in *instance) apply(acceptCtx, bg context.Context, cfg *config.Config) error {
	start := time.Now()
	old := in.gen.Load()
	next := &generation{cfg: cfg, pools: map[string]*pool.Pool{}, sets: map[string]*discovery.Set{},
		resolver: discovery.NewResolver(cfg.Resolver)}
	ch, err := in.prepare(acceptCtx, old, next)
	if err != nil {
		return err
	}
	in.carryDiscovery(old, next)
	in.reconcilePools(old, next)
	in.switchListeners(acceptCtx, next, ch)
	in.retireListeners(ch.retired, cfg)
	in.restartChecks(bg, old, next)
	next.stopDiscovery = in.startDiscovery(bg, next)
	in.restartRebalance(bg, old, next)
	in.gen.Store(next)
	in.refreshGauges()
	in.log.Info("configuration reloaded", "file", in.path, "listeners", len(next.listeners),
		"listeners_bound", len(ch.bound), "listeners_retired", len(ch.retired), "pools", len(next.pools),
		"took", time.Since(start))
	return nil
}

// change is what prepare made ready for the rest of a reload.
type change struct {
	bound   []*listener // new sockets with their proxies, not yet accepting
	commits []func()    // settings staged for kept listeners (l7.Proxy.Stage)
	retired []*listener // running listeners no listener of next keeps
}

// prepare fills next.listeners and everything a reload may fail on: it binds
// the sockets of added and rebound listeners (refusing an address another
// process listens on) and builds their proxies, and stages the settings of
// kept l7 listeners (TLS files, static folders). The
// proxies are built over next.pools, which holds the running pools (and new
// ones) until reconcilePools swaps in their successors, so a failure here
// has changed nothing: the new sockets are closed and the error returned.
func (in *instance) prepare(acceptCtx context.Context, old, next *generation) (*change, error) {
	cfg, ch := next.cfg, &change{}
	oldByName := map[string]*listener{}
	for _, l := range old.listeners {
		oldByName[l.cfg.Name] = l
	}
	fail := func(err error) (*change, error) {
		for _, b := range ch.bound {
			b.fl.Close()
		}
		return nil, err
	}
	for _, pc := range cfg.Pools {
		next.pools[pc.Name] = old.pools[pc.Name]
		if next.pools[pc.Name] == nil {
			// A new pool's names are looked up by its watcher at once.
			next.sets[pc.Name] = in.newSet(cfg, pc, nil)
			next.pools[pc.Name] = pool.NewCounted(next.sets[pc.Name].Pool(), in.fds)
		}
	}
	for _, lc := range cfg.Listeners {
		if ol := oldByName[lc.Name]; ol != nil && !mustRebind(old.cfg, ol.cfg, cfg, lc) {
			kept := *ol // shares the running sockets, proxy and stop
			kept.cfg = lc
			if kept.l7 != nil {
				commit, err := kept.l7.Stage(lc, next.pools)
				if err != nil {
					return fail(err)
				}
				ch.commits = append(ch.commits, commit)
			}
			next.listeners = append(next.listeners, &kept)
			delete(oldByName, lc.Name)
			continue
		}
		// SO_REUSEPORT lets a rebound listener bind its address while the
		// old sockets still accept, so no conn is refused in between.
		l, err := in.bind(acceptCtx, cfg, lc)
		if err != nil {
			return fail(err)
		}
		ch.bound = append(ch.bound, l)
		if err := in.attach(l, next.pools); err != nil {
			return fail(err)
		}
		next.listeners = append(next.listeners, l)
	}
	// The sockets wslb holds already are its own, not another process's:
	// a rebound address is shared with them until they retire.
	if err := frontend.Exclusive(sockets(ch.bound), sockets(old.listeners)); err != nil {
		return fail(err)
	}
	for _, ol := range oldByName {
		ch.retired = append(ch.retired, ol)
	}
	if cfg.Admin.Listen != old.cfg.Admin.Listen {
		in.log.Warn("admin.listen changed; the admin listener stays where it is until a restart",
			"running", old.cfg.Admin.Listen, "configured", cfg.Admin.Listen)
	}
	return ch, nil
}

// reconcilePools swaps the successor of every running pool into next.pools
// (pool.ReconcileRetiring: kept backends keep their state, removed ones
// retire), retires the pools next drops, and forgets the series of every
// backend that left.
func (in *instance) reconcilePools(old, next *generation) {
	cfg := next.cfg
	retire := pool.Retire{Grace: cfg.Shutdown.DrainTimeout, Spread: cfg.Shutdown.CloseSpread}
	for _, pc := range cfg.Pools {
		if op := old.pools[pc.Name]; op != nil {
			next.pools[pc.Name] = pool.ReconcileRetiring(op, next.sets[pc.Name].Pool(), retire)
		}
		// A new pool's too: where a backend put in maint spreads its closes.
		next.pools[pc.Name].SetCloseSpread(retire.Spread)
		in.dnsSeries(pc)
		in.newSeries(next.pools[pc.Name])
	}
	for name, op := range old.pools {
		if next.pools[name] == nil {
			op.Remove(retire)
		}
	}
	in.forgetRemoved(old, next)
}

// carryDiscovery stops old's discovery watchers and gives each pool of next
// that old had a set carrying over its last answers and holds, so a reload
// keeps the backends the names gave rather than dropping to none until the
// next lookup. Stopping first means no answer lands in old's set after the
// copy.
func (in *instance) carryDiscovery(old, next *generation) {
	if old.stopDiscovery != nil {
		old.stopDiscovery()
	}
	for _, pc := range next.cfg.Pools {
		if next.sets[pc.Name] == nil {
			next.sets[pc.Name] = in.newSet(next.cfg, pc, old.sets[pc.Name])
		}
	}
}

// switchListeners makes every proxy of next use the reconciled pools and its
// new settings, for conns accepted from now on, then starts the new sockets.
// (An l7 proxy reads next.pools, the map reconcilePools filled in.)
func (in *instance) switchListeners(acceptCtx context.Context, next *generation, ch *change) {
	for _, commit := range ch.commits {
		commit()
	}
	for _, l := range next.listeners {
		if l.l4 != nil {
			l.l4.Update(l.cfg, next.pools[l.cfg.Pool])
		}
		l.fl.SetMaxConns(l.cfg.MaxConnections)
		l.fl.SetMaxAcceptRate(l.cfg.MaxAcceptRate)
	}
	in.listenerSeries(next)
	for _, l := range ch.bound {
		in.start(acceptCtx, l)
	}
}

// retireListeners closes the sockets no listener of cfg uses any more. The
// conns of a removed listener run for drain_timeout; those of a rebound one
// are not cut by the reload (DESIGN: they continue) but by the next drain.
func (in *instance) retireListeners(retired []*listener, cfg *config.Config) {
	stillConfigured := map[string]bool{}
	for _, lc := range cfg.Listeners {
		stillConfigured[lc.Name] = true
	}
	for _, ol := range retired {
		in.retireListener(ol, stillConfigured[ol.cfg.Name], cfg.Shutdown.DrainTimeout, cfg.Shutdown.CloseSpread)
	}
}

// restartChecks stops old's health checks and starts next's, over the
// reconciled pools; kept backends keep their up or down state meanwhile.
func (in *instance) restartChecks(bg context.Context, old, next *generation) {
	for _, stop := range old.stopChecks {
		stop()
	}
	next.stopChecks = in.startChecks(bg, next)
}

// mustRebind reports whether listener l (of configuration cfg) needs new
// sockets rather than an update of the running ones ol (of old).
func mustRebind(old *config.Config, ol config.Listener, cfg *config.Config, l config.Listener) bool {
	return !slices.Equal(ol.Listen, l.Listen) || ol.Mode != l.Mode || old.Workers != cfg.Workers
}

// retireListener stops l accepting and lets its conns run out in the
// background: drain_timeout, then closed spread over close_spread. With
// keep, they run until they end by themselves or the process drains.
func (in *instance) retireListener(l *listener, keep bool, grace, spread time.Duration) {
	l.stop()
	// Serve closes the sockets too, but in its own time; closed now, they
	// are gone before the next reload checks that no other process shares
	// wslb's addresses (frontend.Exclusive), which knows only the running
	// listeners' sockets as wslb's own.
	l.fl.Close()
	in.log.Info("listener sockets retired; their conns run out", "listener", l.cfg.Name,
		"addr", boundAddrs(l.fl), "conns", l.fl.Active(), "until_drain", keep)
	in.retiring.Go(func() {
		<-l.served
		if keep && l.fl.WaitIdle(in.shutdown) {
			grace, spread = 0, 0 // nothing left to wait for
		}
		l.fl.Drain(in.retireCtx, grace, spread)
	})
}

// forgetRemoved deletes the per-backend series of backends that left every
// pool, so dashboards do not show them as down forever. Their connection
// and byte series stay: their conns may still be running out.
func (in *instance) forgetRemoved(old, next *generation) {
	for name, op := range old.pools {
		np := next.pools[name]
		if np == nil {
			in.metrics.Backends.DeleteLabelValues(name)
			in.metrics.DNSLookups.DeleteLabelValues(name, "ok")
			in.metrics.DNSLookups.DeleteLabelValues(name, "error")
		}
		for _, b := range op.Backends() {
			if np != nil && np.Has(b) {
				continue
			}
			in.metrics.BackendUp.DeleteLabelValues(name, b.String())
			in.metrics.IdleConnections.DeleteLabelValues(name, b.String())
			in.metrics.HealthChecks.DeleteLabelValues(name, b.String(), "ok")
			in.metrics.HealthChecks.DeleteLabelValues(name, b.String(), "fail")
			for _, s := range pool.Admins {
				in.metrics.BackendState.DeleteLabelValues(name, b.String(), s.String())
			}
			in.metrics.AgentChecks.DeleteLabelValues(name, b.String(), "ok")
			in.metrics.AgentChecks.DeleteLabelValues(name, b.String(), "fail")
			in.metrics.BackendWeight.DeleteLabelValues(name, b.String())
		}
	}
}

// watchFile sends on changed when path's file changes: its size, its
// modification time, or the file itself (an editor or a Kubernetes ConfigMap
// replaces it by a rename). Polling works on every filesystem and through
// symlinks; once a second is quick enough for a human edit.
// It returns at once with the function to run: the first look at the file
// is taken before, so a change made right after start-up is not missed.
func watchFile(path string, every time.Duration, changed chan<- struct{}, log *slog.Logger) func(ctx context.Context) {
	last, err := os.Stat(path)
	if err != nil {
		log.Warn("watch: cannot stat the configuration file", "file", path, "err", err)
	}
	return func(ctx context.Context) { watchLoop(ctx, path, every, last, changed) }
}

func watchLoop(ctx context.Context, path string, every time.Duration, last os.FileInfo, changed chan<- struct{}) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur, err := os.Stat(path)
		if err != nil {
			continue // mid-replace; the next tick sees the new file
		}
		if last != nil && os.SameFile(last, cur) && cur.Size() == last.Size() && cur.ModTime().Equal(last.ModTime()) {
			continue
		}
		last = cur
		select {
		case changed <- struct{}{}:
		default: // a reload is already pending
		}
	}
}
