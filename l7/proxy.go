// Package l7 serves HTTP/1.x conns: read the request head with limits, route
// it by path prefix, then either tunnel an Upgrade (WebSocket) after checking
// both sides of the handshake, forward a plain request over the worker's idle
// backend conns, serve static files, or answer an error.
//
// Read conn.go (ServeConn, the request loop) first, then what a request
// becomes: upgrade.go (handshake, then the tunnel via handoff) or forward.go
// (the round trip), both getting their backend conn from backend.go
// (upstream.Dialer and the idle cache) and their request head from
// outgoing.go; response.go relays answers, respond.go writes wslb's own.
// body.go reads request bodies under their limits, and deadline.go bounds
// every write of a plain request (timeouts.send).
// head.go reads and checks heads, keepalive.go and buffers.go keep idle
// conns cheap.
package l7

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wslb/wslb/access"
	"github.com/wslb/wslb/acme"
	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/frontend"
	"github.com/wslb/wslb/handoff"
	"github.com/wslb/wslb/header"
	"github.com/wslb/wslb/metrics"
	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/proxyheader"
	"github.com/wslb/wslb/route"
	"github.com/wslb/wslb/static"
	"github.com/wslb/wslb/upstream"
)

// Proxy is the handler of one l7 listener, shared by its workers. Update swaps
// its settings for conns accepted later; a conn keeps the state it started with.
type Proxy struct {
	// Wired by cmd/wslb. Engine carries the plain-TCP tunnels; TLS ones
	// relay on goroutines.
	handoff.Deps

	// ACME is the process's ACME managers: a TLS listener with tls.acme
	// gets its certificates from one, and a plain listener answers their
	// HTTP-01 challenges. Set it before New's Update, or use a literal;
	// required for a listener with tls.acme.
	ACME *acme.Set

	cur atomic.Pointer[state]

	// loopConns counts the client conns the workers' event loops hold.
	loopConns atomic.Int64

	// rateGrace, when set, replaces defaultRateGrace: tests shorten it
	// rather than wait 5 s for http.min_body_rate to apply.
	rateGrace time.Duration
	// h2Grace, when set, replaces h2DrainGrace: tests shorten it.
	h2Grace time.Duration
}

// state is everything a conn reads once when it starts.
type state struct {
	l      config.Listener
	pools  map[string]*pool.Pool
	dial   upstream.Dialer // to the backends of pools
	routes *route.Table
	static map[staticKey]*static.Handler
	tls    *tls.Config
	// http01, on a plain listener, answers the HTTP-01 challenges of the
	// process's ACME managers.
	http01 *acme.Set
	m      *metrics.Metrics
	errs   metrics.Errors
}

// staticKey names the handler of static routes: one per folder and fallback.
type staticKey struct{ dir, fallback string }

// New returns the Proxy of l7 listener l, whose routes use pools.
func New(l config.Listener, pools map[string]*pool.Pool, m *metrics.Metrics, log *slog.Logger) (*Proxy, error) {
	px := &Proxy{Deps: handoff.Deps{Metrics: m, Log: log}}
	if err := px.Update(l, pools); err != nil {
		return nil, err
	}
	return px, nil
}

// Update makes conns accepted from now on use l and pools: Stage, then the
// commit. A bad file leaves the running state untouched.
func (px *Proxy) Update(l config.Listener, pools map[string]*pool.Pool) error {
	commit, err := px.Stage(l, pools)
	if err != nil {
		return err
	}
	commit()
	return nil
}

// Stage prepares the state of l over pools, loading its TLS certificate and
// opening its static folders, which may fail; commit makes conns accepted
// from then on use it, and cannot fail. A reload stages every listener before
// it changes anything. pools is read when commit runs, so a reload may still
// reconcile its pools in between.
func (px *Proxy) Stage(l config.Listener, pools map[string]*pool.Pool) (commit func(), err error) {
	st := &state{l: l, pools: pools, routes: route.New(l.Routes, l.Pool), static: map[staticKey]*static.Handler{}, m: px.Metrics}
	if l.TLS != nil {
		tc, err := tlsConfig(l.TLS)
		if err == nil && l.TLS.ACME != nil {
			tc, err = px.acmeTLS(l.TLS.ACME, tc)
		}
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", l.Name, err)
		}
		st.tls = tc
	} else {
		st.http01 = px.ACME
	}
	for _, r := range l.Routes {
		k := staticKey{r.Static, r.Fallback}
		if r.Static == "" || st.static[k] != nil {
			continue
		}
		h, err := static.New(r.Static, r.Fallback)
		if err != nil {
			return nil, fmt.Errorf("listener %s: route %s: %w", l.Name, r.Path, err)
		}
		st.static[k] = h
	}
	st.errs = px.Metrics.ListenerErrors(l.Name)
	st.dial = px.Dialer(l, st.errs)
	return func() { px.commit(st) }, nil
}

// SetPools makes conns accepted from now on use pools, every other setting
// kept: discovery changed a pool's backends, and nothing of the listener's
// own (its files) needs loading again.
func (px *Proxy) SetPools(pools map[string]*pool.Pool) {
	st := *px.cur.Load()
	st.pools = pools
	px.cur.Store(&st)
}

// commit makes conns accepted from now on use st. Static handlers of the
// previous state are left open: conns that started with it may still be
// serving files. They hold one folder fd each.
func (px *Proxy) commit(st *state) { px.cur.Store(st) }

// OnLimit counts a conn refused by max_connections or an accept that ran out
// of file descriptors; wire it to frontend.Listener.OnLimit.
func (px *Proxy) OnLimit() { px.cur.Load().errs.Limit.Inc() }

// NewWorker returns the handler for one worker of the listener, with an idle
// backend conn cache of its own; wire it to frontend.Listener.NewHandler.
func (px *Proxy) NewWorker() frontend.Handler {
	w := &worker{px: px, cache: pool.NewIdleCache()}
	w.idle = w.cache.Get
	if px.cur.Load().tls == nil {
		// Started now rather than at the first kept-alive conn, so that its
		// two descriptors count from the start, as the tunnel engine's do.
		w.evLoop()
	}
	return w
}

// worker serves the conns one accept loop takes.
type worker struct {
	px    *Proxy
	cache *pool.IdleCache
	// idle is cache.Get, for upstream.Request.Idle: a method value made
	// once, not per request.
	idle func(b *pool.Backend) (net.Conn, *bufio.Reader, bool)

	// loop serves the worker's kept-alive conns once they have had a
	// request (loop_linux.go); started on first use.
	loopMu     sync.Mutex
	loop       *evLoop
	loopFailed bool
}

// Close closes the worker's idle backend conns; the listener calls it once
// every conn of the worker has ended.
func (w *worker) Close() error {
	w.closeLoop()
	w.cache.Close()
	return nil
}

// refuseWait bounds how long a refused conn waits for its request before
// the 503 goes out anyway.
const refuseWait = time.Second

// Refuse answers a conn over max_connections, or accepted with only the
// descriptor reserve left, with a 503 and closes it; wire it to
// frontend.Listener.Refuse. The request is not parsed: the answer goes out
// as soon as its first bytes arrive (a client answered before it sent
// anything, Go's http.Transport among them, reports an unsolicited response
// rather than the 503), then the conn lingers briefly so the client can read
// it. When descriptors are scarce it neither waits nor lingers: each refusal
// holds one, and the reserve is the admin listener's.
func (px *Proxy) Refuse(c net.Conn) {
	st := px.cur.Load()
	h := http.Header{"Content-Type": {"text/plain; charset=utf-8"}, "Connection": {"close"}}
	header.SetResponseHeaders(h, st.l.HTTP.ResponseHeaders)
	body := "503 Service Unavailable: too many connections\n"
	h.Set("Content-Length", strconv.Itoa(len(body)))
	st.m.HTTPRequests.WithLabelValues(st.l.Name, "", "503").Inc()
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	b.WriteString("HTTP/1.1 503 Service Unavailable\r\n")
	h.Write(&b)
	b.WriteString("\r\n" + body)
	scarce := px.FDs.Scarce()
	if st.tls == nil {
		if !scarce {
			_ = c.SetReadDeadline(time.Now().Add(refuseWait))
			_, _ = c.Read(make([]byte, 512)) // lingerClose discards the rest
		}
		_, _ = io.WriteString(c, b.String())
	}
	if scarce {
		c.Close()
	} else {
		lingerClose(c)
	}
	px.Access.Log(&access.Entry{
		Kind: access.KindRequest, Listener: st.l.Name, Client: proxyheader.AddrPort(c.RemoteAddr()),
		Status: http.StatusServiceUnavailable, Reason: "limit",
	})
}
