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
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wslb/wslb/access"
	"github.com/wslb/wslb/acme"
	"github.com/wslb/wslb/admin"
	"github.com/wslb/wslb/clock"
	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/discovery"
	"github.com/wslb/wslb/fdbudget"
	"github.com/wslb/wslb/frontend"
	"github.com/wslb/wslb/handoff"
	"github.com/wslb/wslb/health"
	"github.com/wslb/wslb/l4"
	"github.com/wslb/wslb/l7"
	"github.com/wslb/wslb/metrics"
	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/rebalance"
	"github.com/wslb/wslb/status"
	"github.com/wslb/wslb/tunnel"
)

// instance is the running process: the generation of configuration that new
// conns use, the listeners earlier generations left to run out, and the
// admin server. Reloads (reload.go) replace the generation.
type instance struct {
	path    string // the config file reloads read; "" when there is none
	log     *slog.Logger
	access  *access.Logger
	reg     *prometheus.Registry
	metrics *metrics.Metrics
	passive *health.Passive
	board   *status.Board
	// fds counts the descriptors of every socket, conn and pipe wslb holds
	// against RLIMIT_NOFILE; nil (nothing counted, nothing refused) if the
	// limit could not be read.
	fds *fdbudget.Budget
	// engine carries the established plain-TCP tunnels of every listener,
	// across reloads; nil (goroutine relays) if it could not start.
	engine *tunnel.Engine
	// acme holds the ACME managers of the TLS listeners with tls.acme,
	// across reloads (Keep after each), and answers HTTP-01 on plain ones.
	acme *acme.Set
	// closeWait is serveOptions.closeWait.
	closeWait time.Duration
	started   time.Time
	draining  atomic.Bool

	// gen is read by the admin routes at any time; mu serialises the
	// reloads and the drain that replace or end it.
	gen atomic.Pointer[generation]
	mu  sync.Mutex
	// reloadNow asks serve's loop for a reload, as SIGHUP does; -watch
	// sends on it when the file changes.
	reloadNow chan struct{}
	// discovered carries a pool's discovery set to serve's loop when its
	// names gave other backends (discover.go). clock is the watchers' and
	// the accept pacing's time: nil for the real one.
	discovered chan *discovery.Set
	clock      clock.Clock
	// rebalanceMinAge is serveOptions.rebalanceMinAge.
	rebalanceMinAge time.Duration

	// Listeners a reload removed or rebound stop accepting at once; their
	// conns run out in these goroutines, which a second signal cuts short.
	retiring    sync.WaitGroup
	retireCtx   context.Context
	cutRetiring context.CancelFunc
	// shutdown ends when the drain starts: listeners a reload rebound stop
	// waiting for their conns to end by themselves and drain with the rest.
	shutdown   context.Context
	beginDrain context.CancelFunc

	admin   *http.Server
	adminLn net.Listener
}

// generation is one applied configuration.
type generation struct {
	cfg        *config.Config
	pools      map[string]*pool.Pool
	listeners  []*listener // in cfg.Listeners order
	stopChecks []func()    // one per pool; nil until the checks start
	// sets hold what every pool's names give (its Pool is what the pool is
	// built from); resolver looks them up; stopDiscovery stops the
	// watchers, nil until they start.
	sets          map[string]*discovery.Set
	resolver      *discovery.Resolver
	stopDiscovery func()
	// rebalancers run each pool's rebalancing with this generation's
	// settings (rebalance.go); stopRebalance stops them, nil until they start.
	rebalancers   map[string]*rebalance.Rebalancer
	stopRebalance func()
}

// listener is one configured listener while it serves.
type listener struct {
	cfg    config.Listener
	fl     *frontend.Listener
	l4     *l4.Proxy // exactly one of l4 and l7 is set
	l7     *l7.Proxy
	stop   context.CancelFunc // stops accepting; nil before serving
	served chan struct{}      // closed once Serve has returned
}

// newInstance builds everything cfg describes and binds every socket, so that
// a port in use is reported before anything serves. The backend names are
// looked up first, within resolver.timeout.
func newInstance(ctx context.Context, cfg *config.Config, log *slog.Logger, o serveOptions) (*instance, error) {
	in := &instance{
		log: log, access: o.access, reg: prometheus.NewRegistry(),
		board: status.NewBoard(statusInterval), started: time.Now(), reloadNow: make(chan struct{}, 1),
		discovered: make(chan *discovery.Set), clock: o.clock, closeWait: o.closeWait,
		rebalanceMinAge: o.rebalanceMinAge,
	}
	in.retireCtx, in.cutRetiring = context.WithCancel(context.Background())
	in.shutdown, in.beginDrain = context.WithCancel(context.Background())
	in.metrics = metrics.New(in.reg)
	metrics.RegisterBuildInfo(in.reg, buildVersion())
	in.passive = &health.Passive{Log: log, Hooks: in.healthHooks()}
	in.acme = &acme.Set{Log: log}
	// First: the baseline is what is open before wslb opens anything of its
	// own, which is counted from here on.
	if fds, err := fdbudget.New(log); err != nil {
		log.Warn("descriptors not counted: no reserve is kept for running out", "err", err)
	} else {
		in.fds = fds
		log.Debug("file descriptors counted", "limit", fds.Limit(), "reserve", fds.Reserve(), "open_at_start", fds.Baseline())
	}
	if e, err := tunnel.NewCountedEngine(0, in.fds); err != nil {
		log.Warn("tunnel engine unavailable; tunnels use two goroutines each", "err", err)
	} else {
		in.engine = e
	}
	g := &generation{cfg: cfg, pools: map[string]*pool.Pool{}, sets: map[string]*discovery.Set{},
		resolver: discovery.NewResolver(cfg.Resolver)}
	for _, pc := range cfg.Pools {
		g.sets[pc.Name] = in.newSet(cfg, pc, nil)
		in.dnsSeries(pc)
	}
	in.firstLookups(ctx, g)
	for _, pc := range cfg.Pools {
		g.pools[pc.Name] = pool.NewCounted(g.sets[pc.Name].Pool(), in.fds)
		g.pools[pc.Name].SetCloseSpread(cfg.Shutdown.CloseSpread)
		in.newSeries(g.pools[pc.Name])
	}
	for _, lc := range cfg.Listeners {
		l, err := in.bind(ctx, cfg, lc)
		if err == nil {
			err = in.attach(l, g.pools)
		}
		if err != nil {
			in.close(g)
			in.engine.Close()
			return nil, err
		}
		g.listeners = append(g.listeners, l)
	}
	// Only now: a second wslb binding the same address at this moment has
	// its sockets listed here, or sees these in its own check.
	if err := frontend.Exclusive(sockets(g.listeners), nil); err != nil {
		in.close(g)
		in.engine.Close()
		return nil, err
	}
	in.gen.Store(g)
	in.acme.Keep(cfg) // HTTP-01 on before the first handshake
	in.listenerSeries(g)
	in.refreshGauges()
	if cfg.Admin.Listen != "" {
		ln, err := admin.Listen(cfg.Admin.Listen)
		if err != nil {
			in.close(g)
			in.engine.Close()
			return nil, fmt.Errorf("admin: bind %s: %w", cfg.Admin.Listen, err)
		}
		in.adminLn = admin.NewListener(ln, in.fds, admin.MaxConns)
		in.admin = admin.NewServer(admin.Handler(admin.Options{
			Gatherer: in.gatherer(), Ready: in.ready, Status: in.status, Addr: ln.Addr(),
			Pools: func() map[string]*pool.Pool { return in.gen.Load().pools }, Rebalance: in.rebalanceNow,
			Token: func() string { return in.gen.Load().cfg.Admin.Token }, Log: in.log,
		}))
	}
	return in, nil
}

// bind binds the sockets of listener lc; attach gives it a proxy.
func (in *instance) bind(ctx context.Context, cfg *config.Config, lc config.Listener) (*listener, error) {
	fl := &frontend.Listener{
		Name:     lc.Name,
		Addrs:    lc.Listen,
		Workers:  cfg.Workers,
		MaxConns: lc.MaxConnections,
		FDs:      in.fds,
		Log:      in.log,
		// A rebound listener's sockets count on in the same series.
		MaxAcceptRate: lc.MaxAcceptRate,
		Clock:         in.clock,
		OnAccept:      in.metrics.ConnectionsAccepted.WithLabelValues(lc.Name).Inc,
	}
	if err := fl.Listen(ctx); err != nil {
		return nil, err
	}
	return &listener{cfg: lc, fl: fl, served: make(chan struct{})}, nil
}

// attach builds l's proxy over pools and wires it to l's sockets.
func (in *instance) attach(l *listener, pools map[string]*pool.Pool) error {
	lc, fl := l.cfg, l.fl
	switch lc.Mode {
	case config.ModeL4:
		px := l4.New(lc, pools[lc.Pool], in.metrics, in.log)
		in.wire(&px.Deps)
		fl.NewHandler = func() frontend.Handler { return px }
		fl.OnLimit = px.OnLimit
		l.l4 = px
	case config.ModeL7:
		px := &l7.Proxy{Deps: handoff.Deps{Metrics: in.metrics, Log: in.log}, ACME: in.acme}
		in.wire(&px.Deps)
		if err := px.Update(lc, pools); err != nil {
			return err
		}
		fl.NewHandler = px.NewWorker
		fl.OnLimit = px.OnLimit
		fl.Refuse = px.Refuse
		l.l7 = px
	}
	return nil
}

// wire gives a proxy's dependencies what every proxy shares.
func (in *instance) wire(d *handoff.Deps) {
	d.OnDialError = in.passive.DialFailed
	d.Access = in.access
	d.Engine = in.engine
	d.FDs = in.fds
	d.CloseWait = in.closeWait
	// A second signal cuts what the drain left, graceful closes included.
	d.Cut = in.retireCtx
}

// start runs l's accept loops until l.stop is called.
func (in *instance) start(ctx context.Context, l *listener) {
	actx, stop := context.WithCancel(ctx)
	l.stop = stop
	go func() {
		defer close(l.served)
		l.fl.Serve(actx)
	}()
	in.log.Info("listening", "listener", l.cfg.Name, "mode", l.cfg.Mode, "addr", boundAddrs(l.fl))
}

// boundAddrs lists the bound addresses of fl, for logs.
func boundAddrs(fl *frontend.Listener) string {
	var out []string
	for _, a := range fl.BoundAddrs() {
		out = append(out, a.String())
	}
	return strings.Join(out, ", ")
}

// sockets returns the frontend listeners of ls.
func sockets(ls []*listener) []*frontend.Listener {
	out := make([]*frontend.Listener, len(ls))
	for i, l := range ls {
		out[i] = l.fl
	}
	return out
}

// close releases the sockets of a generation that never served.
func (in *instance) close(g *generation) {
	for _, l := range g.listeners {
		l.fl.Close()
	}
	if in.adminLn != nil {
		in.adminLn.Close()
	}
}

// addr is the bound address of the i-th listener, for tests and the demo.
func (in *instance) addr(i int) string { return in.gen.Load().listeners[i].fl.BoundAddr().String() }

// serveOptions are what the command line adds to a configuration.
type serveOptions struct {
	// path is the configuration file that SIGHUP (and watch) reload; ""
	// means there is none and reloads are refused.
	path string
	// watch reloads path when it changes, checked once a second.
	watch bool
	// access is the access log; nil is off.
	access *access.Logger
	// clock is the discovery watchers' and the accept pacing's time; nil
	// is the real clock.
	clock clock.Clock
	// closeWait is how long a WebSocket tunnel's graceful close waits for
	// the Close replies; 0 is tunnel.DefaultCloseWait. Tests shorten it.
	closeWait time.Duration
	// rebalanceMinAge, when positive, replaces rebalance.MinAge (10 s), the
	// youngest a tunnel may be to be moved; tests shorten it.
	rebalanceMinAge time.Duration
}

// serve runs cfg until ctx ends or SIGTERM/SIGINT arrives, then drains. A
// second SIGTERM/SIGINT during the drain closes every conn at once. SIGHUP
// reloads the configuration file; SIGUSR1 reopens the access log file.
// started, when set, is called once every socket is bound.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, o serveOptions, started func(*instance)) int {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(sigs)

	in, err := newInstance(ctx, cfg, log, o)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	in.path = o.path
	// Conns outlive the accept loops: they are detached from ctx and ended
	// only by the drain. Checks and the status sampler run until serve
	// returns, so the page shows the conns go away during a drain.
	bg, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	var background sync.WaitGroup
	defer in.acme.Close()
	defer func() {
		stopBackground()
		background.Wait()
	}()
	g := in.gen.Load()
	g.stopChecks = in.startChecks(bg, g)
	g.stopDiscovery = in.startDiscovery(bg, g)
	g.stopRebalance = in.startRebalance(bg, g)
	for _, l := range g.listeners {
		in.start(ctx, l)
	}
	var adminServing sync.WaitGroup
	if in.admin != nil {
		adminServing.Go(func() {
			if err := in.admin.Serve(in.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("admin listener failed", "err", err)
			}
		})
		log.Info("admin listening", "addr", in.adminLn.Addr().String())
	}
	background.Go(func() { in.sample(bg) })
	if o.watch && in.path != "" {
		watch := watchFile(in.path, time.Second, in.reloadNow, log)
		background.Go(func() { watch(bg) })
	}
	if started != nil {
		started(in)
	}

wait:
	for {
		select {
		case s := <-sigs:
			switch s {
			case syscall.SIGHUP:
				in.reload(ctx, bg, "SIGHUP")
				continue
			case syscall.SIGUSR1:
				in.reopenAccessLog()
				continue
			}
			log.Info("draining", "signal", s.String(), "drain_timeout", in.gen.Load().cfg.Shutdown.DrainTimeout,
				"close_spread", in.gen.Load().cfg.Shutdown.CloseSpread)
			break wait
		case <-in.reloadNow:
			in.reload(ctx, bg, "file changed")
		case s := <-in.discovered:
			in.applyDiscovered(bg, s)
		case <-ctx.Done():
			log.Info("draining", "drain_timeout", in.gen.Load().cfg.Shutdown.DrainTimeout,
				"close_spread", in.gen.Load().cfg.Shutdown.CloseSpread)
			break wait
		}
	}
	in.drain(sigs)
	in.engine.Close() // every conn has ended
	adminServing.Wait()
	log.Info("stopped")
	return 0
}
