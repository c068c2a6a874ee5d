package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/wslb/wslb/access"
	"github.com/wslb/wslb/admin"
	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/frontend"
	"github.com/wslb/wslb/health"
	"github.com/wslb/wslb/l4"
	"github.com/wslb/wslb/l7"
	"github.com/wslb/wslb/metrics"
	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/status"
)

// instance is one running configuration: its pools, listeners and admin server.
type instance struct {
	cfg       *config.Config
	log       *slog.Logger
	access    *access.Logger
	reg       *prometheus.Registry
	metrics   *metrics.Metrics
	pools     map[string]*pool.Pool
	listeners []*frontend.Listener
	admin     *http.Server
	adminLn   net.Listener
	draining  atomic.Bool
	passive   *health.Passive
	board     *status.Board
	started   time.Time
}

// statusInterval is how often the status board samples every backend's
// active count, the resolution of the /status page's sparklines.
const statusInterval = time.Second

// newInstance builds everything cfg describes and binds every socket, so that
// a port in use is reported before anything serves.
func newInstance(ctx context.Context, cfg *config.Config, log *slog.Logger, acc *access.Logger) (*instance, error) {
	in := &instance{
		cfg: cfg, log: log, access: acc, reg: prometheus.NewRegistry(), pools: map[string]*pool.Pool{},
		board: status.NewBoard(statusInterval), started: time.Now(),
	}
	in.metrics = metrics.New(in.reg)
	in.passive = &health.Passive{Log: log, Hooks: in.healthHooks()}
	for _, pc := range cfg.Pools {
		p := pool.New(pc)
		in.pools[pc.Name] = p
		for _, b := range p.Backends() {
			in.metrics.HealthChecks.WithLabelValues(p.Name(), b.String(), "ok")
			in.metrics.HealthChecks.WithLabelValues(p.Name(), b.String(), "fail")
		}
	}
	in.refreshGauges()
	for _, lc := range cfg.Listeners {
		fl := &frontend.Listener{
			Name:     lc.Name,
			Addr:     lc.Listen,
			Workers:  cfg.Workers,
			MaxConns: lc.MaxConnections,
			Log:      log,
		}
		switch lc.Mode {
		case config.ModeL4:
			px := l4.New(lc, in.pools[lc.Pool], in.metrics, log)
			px.OnDialError = in.passive.DialFailed
			px.Access = acc
			fl.NewHandler = func() frontend.Handler { return px }
			fl.OnLimit = px.OnLimit
		case config.ModeL7:
			px, err := l7.New(lc, in.pools, in.metrics, log)
			if err != nil {
				in.close()
				return nil, err
			}
			px.OnDialError = in.passive.DialFailed
			px.Access = acc
			fl.NewHandler = px.NewWorker
			fl.OnLimit = px.OnLimit
			fl.Refuse = px.Refuse
		}
		if err := fl.Listen(ctx); err != nil {
			in.close()
			return nil, err
		}
		in.listeners = append(in.listeners, fl)
	}
	if cfg.Admin.Listen != "" {
		ln, err := net.Listen("tcp", cfg.Admin.Listen)
		if err != nil {
			in.close()
			return nil, fmt.Errorf("admin: bind %s: %w", cfg.Admin.Listen, err)
		}
		in.adminLn = ln
		in.admin = &http.Server{
			Handler:           admin.Handler(admin.Options{Gatherer: in.gatherer(), Ready: in.ready, Status: in.status}),
			ReadHeaderTimeout: 10 * time.Second,
		}
	}
	return in, nil
}

// close releases the sockets of an instance that never served.
func (in *instance) close() {
	for _, l := range in.listeners {
		l.Close()
	}
	if in.adminLn != nil {
		in.adminLn.Close()
	}
}

// ready is /readyz: every listener is bound (true once newInstance returned)
// and every pool has a backend that may take conns; never while draining.
func (in *instance) ready() (bool, string) {
	if in.draining.Load() {
		return false, "draining"
	}
	for name, p := range in.pools {
		up := false
		for _, b := range p.Backends() {
			// Healthy, not Available: a pool whose backends are all busy
			// (max_connections_per_backend) is still ready.
			up = up || b.Healthy()
		}
		if !up {
			return false, "pool " + name + " has no backend up"
		}
	}
	return true, "ready"
}

// serve runs cfg until ctx ends or SIGTERM/SIGINT arrives, then drains. A
// second SIGTERM/SIGINT during the drain closes every conn at once. SIGUSR1
// reopens the access log file. acc is the access log (nil: off). started,
// when set, is called once every socket is bound.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, acc *access.Logger, started func(*instance)) int {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(sigs)

	in, err := newInstance(ctx, cfg, log, acc)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	checksCtx, stopChecks := context.WithCancel(context.WithoutCancel(ctx))
	defer stopChecks()
	var checks []func()
	for _, pc := range cfg.Pools {
		checks = append(checks, health.Start(checksCtx, in.pools[pc.Name], pc.Health, log, in.healthHooks()))
	}
	defer func() {
		for _, stop := range checks {
			stop()
		}
	}()
	acceptCtx, stopAccepting := context.WithCancel(ctx)
	defer stopAccepting()
	var accepting, adminServing sync.WaitGroup
	for _, l := range in.listeners {
		accepting.Go(func() { l.Serve(acceptCtx) })
		log.Info("listening", "listener", l.Name, "addr", l.BoundAddr().String())
	}
	if in.admin != nil {
		adminServing.Go(func() {
			if err := in.admin.Serve(in.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("admin listener failed", "err", err)
			}
		})
		log.Info("admin listening", "addr", in.adminLn.Addr().String())
	}
	// The status board's sampler runs until the instance has drained, so the
	// page keeps showing conns go away during a drain.
	var sampling sync.WaitGroup
	samplerCtx, stopSampling := context.WithCancel(context.WithoutCancel(ctx))
	defer func() {
		stopSampling()
		sampling.Wait()
	}()
	sampling.Go(func() { in.sample(samplerCtx) })
	if started != nil {
		started(in)
	}

wait:
	for {
		select {
		case s := <-sigs:
			switch s {
			case syscall.SIGHUP:
				log.Warn("SIGHUP ignored: configuration reload is not available in this build yet; restart to apply changes")
				continue
			case syscall.SIGUSR1:
				in.reopenAccessLog()
				continue
			}
			log.Info("draining", "signal", s.String(), "drain_timeout", cfg.Shutdown.DrainTimeout, "close_spread", cfg.Shutdown.CloseSpread)
			break wait
		case <-ctx.Done():
			log.Info("draining", "drain_timeout", cfg.Shutdown.DrainTimeout, "close_spread", cfg.Shutdown.CloseSpread)
			break wait
		}
	}
	// Listening sockets close at once: new conns are refused, not left
	// queued, while the established ones drain.
	in.draining.Store(true)
	stopAccepting()
	accepting.Wait()
	in.drain(sigs)
	adminServing.Wait()
	log.Info("stopped")
	return 0
}

// drain lets conns run for drain_timeout, then closes the rest spread over
// close_spread, then stops the admin server. Another SIGTERM/SIGINT cuts it short.
func (in *instance) drain(sigs <-chan os.Signal) {
	ctx, cutShort := context.WithCancel(context.Background())
	defer cutShort()
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				switch s {
				case syscall.SIGHUP:
				case syscall.SIGUSR1:
					in.reopenAccessLog()
				default:
					in.log.Warn("second signal: closing every conn now", "signal", s.String())
					cutShort()
					return
				}
			case <-done:
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for _, l := range in.listeners {
		wg.Go(func() { l.Drain(ctx, in.cfg.Shutdown.DrainTimeout, in.cfg.Shutdown.CloseSpread) })
	}
	wg.Wait()
	close(done)
	if in.admin != nil {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		in.admin.Shutdown(shutdownCtx)
		cancel()
	}
}

// reopenAccessLog is SIGUSR1: logrotate moved the file away.
func (in *instance) reopenAccessLog() {
	if err := in.access.Reopen(); err != nil {
		in.log.Error("cannot reopen the access log; still writing to the old file", "err", err)
		return
	}
	in.log.Info("access log reopened")
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
			if !up {
				// A passive ejection's dial error, which no check reported.
				in.board.Failed(poolName, b.String(), lastErr, time.Now())
			}
		},
	}
}

// gatherer refreshes the gauges that are derived from pool state before every
// scrape: a passive ejection ends when fail_timeout passes, with no event to
// hook, and idle caches change in every worker.
func (in *instance) gatherer() prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		in.refreshGauges()
		return in.reg.Gather()
	})
}

func (in *instance) refreshGauges() {
	for _, p := range in.pools {
		for _, b := range p.Backends() {
			in.metrics.BackendUp.WithLabelValues(p.Name(), b.String()).Set(boolFloat(b.Healthy()))
			in.metrics.IdleConnections.WithLabelValues(p.Name(), b.String()).Set(float64(b.Idle()))
		}
	}
}

// status is /status.json, read from the running instance.
func (in *instance) status() status.Snapshot {
	return in.board.Snapshot(status.Sources{
		Version: buildVersion(), Started: in.started, Config: in.cfg, Pools: in.pools,
		Listeners: in.listeners, Metrics: in.metrics, Ready: in.ready, Draining: in.draining.Load(),
	}, time.Now())
}

// sample feeds the status board's history once per statusInterval.
func (in *instance) sample(ctx context.Context) {
	t := time.NewTicker(statusInterval)
	defer t.Stop()
	in.board.Sample(in.pools)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			in.board.Sample(in.pools)
		}
	}
}

func boolFloat(v bool) float64 {
	if v {
		return 1
	}
	return 0
}
