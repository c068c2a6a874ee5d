package health

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/syncbuf"
	"github.com/wslb/wslb/pool"
)

// Short timings keep the suite fast; margins absorb -race and busy machines.
const (
	testInterval = 50 * time.Millisecond
	testTimeout  = 40 * time.Millisecond
	testRise     = 2
	testFall     = 2
	margin       = 300 * time.Millisecond
)

// backend is a real HTTP server on 127.0.0.1 that can die and come back on the
// same port, as a restarted WebSocket server does.
type backend struct {
	t    *testing.T
	addr string
	h    http.Handler
	// tls, when set before start, makes it serve https and wss.
	tls *tls.Config

	mu   sync.Mutex
	srv  *http.Server
	done chan struct{}
}

func newTestBackend(t *testing.T, h http.Handler) *backend {
	t.Helper()
	if h == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	}
	b := &backend{t: t, addr: "127.0.0.1:0", h: h}
	b.start()
	t.Cleanup(b.stop)
	return b
}

// start listens on b.addr (the same port after the first start) and serves.
func (b *backend) start() {
	b.t.Helper()
	ln, err := net.Listen("tcp", b.addr)
	if err != nil {
		b.t.Fatalf("listen %s: %v", b.addr, err)
	}
	if b.tls != nil {
		ln = tls.NewListener(ln, b.tls)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.addr = ln.Addr().String()
	b.srv = &http.Server{Handler: b.h, ErrorLog: nil}
	b.done = make(chan struct{})
	srv, done := b.srv, b.done
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
}

// stop closes the listener and every conn, so dials are refused, and waits
// for the serving goroutine.
func (b *backend) stop() {
	b.mu.Lock()
	srv, done := b.srv, b.done
	b.srv = nil
	b.mu.Unlock()
	if srv == nil {
		return
	}
	srv.Close()
	<-done
}

func (b *backend) addrPort() netip.AddrPort { return netip.MustParseAddrPort(b.addr) }

// healthConfig is a pool health block with the short test timings.
func healthConfig(check string) config.Health {
	return config.Health{
		Check: check, Path: "/healthz", ExpectStatus: 200,
		Interval: testInterval, Timeout: testTimeout, Rise: testRise, Fall: testFall,
	}
}

// poolConfig is a least_conn pool named "p" over bes with cfg.
func poolConfig(cfg config.Health, bes ...*backend) config.Pool {
	c := config.Pool{
		Name: "p", Balance: config.BalanceLeastConn, Health: cfg,
		Passive: config.Passive{MaxFails: 3, FailTimeout: 10 * time.Second},
	}
	for _, be := range bes {
		ap := be.addrPort()
		c.Backends = append(c.Backends, config.Backend{Address: ap.String(), Weight: 1, Addr: ap})
	}
	return c
}

// event is one OnChange call.
type event struct {
	backend string
	up      bool
	reason  string
	err     error
}

// recorder collects hook calls from many goroutines.
type recorder struct {
	mu      sync.Mutex
	events  []event
	ok, bad atomic.Int64
}

func (r *recorder) hooks() Hooks {
	return Hooks{
		OnResult: func(poolName string, b *pool.Backend, err error) {
			if err == nil {
				r.ok.Add(1)
			} else {
				r.bad.Add(1)
			}
		},
		OnChange: func(poolName string, b *pool.Backend, up bool, reason string, err error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.events = append(r.events, event{backend: b.String(), up: up, reason: reason, err: err})
		},
	}
}

func (r *recorder) changes(backend string) []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []event
	for _, e := range r.events {
		if e.backend == backend {
			out = append(out, e)
		}
	}
	return out
}

// logBuffer is a concurrency-safe log sink.
type logBuffer struct{ syncbuf.Buffer }

func (l *logBuffer) count(substr string) int { return strings.Count(l.String(), substr) }

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// neverPicked runs n picks and fails if any returns b.
func neverPicked(t *testing.T, p *pool.Pool, b *pool.Backend, n int) {
	t.Helper()
	for i := range n {
		got, err := p.Pick(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), nil)
		if errors.Is(err, pool.ErrNoBackend) {
			continue
		}
		if err != nil {
			t.Fatalf("Pick: %v", err)
		}
		got.Release()
		if got == b {
			t.Fatalf("pick %d returned %s, which is down", i, b)
		}
	}
}

// startChecks runs Start with a deadline-bound context and stops it at cleanup.
func startChecks(t *testing.T, p *pool.Pool, cfg config.Health, log *slog.Logger, hooks Hooks) func() {
	t.Helper()
	stop := Start(t.Context(), p, cfg, log, hooks)
	t.Cleanup(stop)
	return stop
}

// handlerFor is a healthy backend's handler for each check kind.
func handlerFor(check string) http.Handler {
	switch check {
	case config.CheckWebSocket:
		return echo.WSHandler(echo.WSOptions{})
	case config.CheckHTTP:
		return statusHandler(http.StatusOK, nil)
	}
	return nil
}

// statusHandler answers every request with status and, when got is set,
// sends it a summary of the request.
func statusHandler(status int, got chan<- string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got != nil {
			s := r.Method + " " + r.URL.Path + " Host=" + r.Host
			if r.Close {
				s += " close"
			}
			select {
			case got <- s:
			default:
			}
		}
		w.WriteHeader(status)
		w.Write([]byte("a body the check reads and discards"))
	})
}

// httpHandlerFunc runs f, then answers 200.
func httpHandlerFunc(f func()) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { f() })
}

// clientIP is any client address: the pools in these tests are least_conn.
func clientIP() netip.Addr { return netip.MustParseAddr("192.0.2.1") }

// clock is an injectable clock that moves only when told to.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.set(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	return c
}

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) set(t time.Time)         { c.ns.Store(t.UnixNano()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// heldShare makes n picks without releasing them, returns b's share, then
// releases them all.
func heldShare(t *testing.T, p *pool.Pool, b *pool.Backend, n int) float64 {
	t.Helper()
	held := make([]*pool.Backend, 0, n)
	defer func() {
		for _, h := range held {
			h.Release()
		}
	}()
	got := 0
	for range n {
		x, err := p.Pick(clientIP(), nil)
		if err != nil {
			t.Fatalf("Pick: %v", err)
		}
		held = append(held, x)
		if x == b {
			got++
		}
	}
	return float64(got) / float64(n)
}

func itoa(n int) string { return strconv.Itoa(n) }
