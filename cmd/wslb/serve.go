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

	"github.com/wslb/wslb/admin"
	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/frontend"
	"github.com/wslb/wslb/l4"
	"github.com/wslb/wslb/l7"
	"github.com/wslb/wslb/metrics"
	"github.com/wslb/wslb/pool"
)

// instance is one running configuration: its pools, listeners and admin server.
type instance struct {
	cfg       *config.Config
	log       *slog.Logger
	reg       *prometheus.Registry
	metrics   *metrics.Metrics
	pools     map[string]*pool.Pool
	listeners []*frontend.Listener
	admin     *http.Server
	adminLn   net.Listener
	draining  atomic.Bool
}

// newInstance builds everything cfg describes and binds every socket, so that
// a port in use is reported before anything serves.
func newInstance(ctx context.Context, cfg *config.Config, log *slog.Logger) (*instance, error) {
	in := &instance{cfg: cfg, log: log, reg: prometheus.NewRegistry(), pools: map[string]*pool.Pool{}}
	in.metrics = metrics.New(in.reg)
	for _, pc := range cfg.Pools {
		p := pool.New(pc)
		in.pools[pc.Name] = p
		for _, b := range p.Backends() {
			up := 0.0
			if b.Up() {
				up = 1
			}
			in.metrics.BackendUp.WithLabelValues(p.Name(), b.String()).Set(up)
		}
	}
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
			fl.NewHandler = func() frontend.Handler { return px }
			fl.OnLimit = px.OnLimit
		case config.ModeL7:
			px, err := l7.New(lc, in.pools, in.metrics, log)
			if err != nil {
				in.close()
				return nil, err
			}
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
		in.admin = &http.Server{Handler: admin.Handler(in.reg, in.ready), ReadHeaderTimeout: 10 * time.Second}
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
			up = up || b.Available()
		}
		if !up {
			return false, "pool " + name + " has no backend up"
		}
	}
	return true, "ready"
}

// serve runs cfg until ctx ends or SIGTERM/SIGINT arrives, then drains. A
// second SIGTERM/SIGINT during the drain closes every conn at once. started,
// when set, is called once every socket is bound.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, started func(*instance)) int {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	in, err := newInstance(ctx, cfg, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
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
	if started != nil {
		started(in)
	}

wait:
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGHUP {
				log.Warn("SIGHUP ignored: configuration reload is not available in this build yet; restart to apply changes")
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
				if s != syscall.SIGHUP {
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
