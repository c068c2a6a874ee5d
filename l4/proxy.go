// Package l4 serves raw TCP passthrough conns: pick a backend by the pool's
// policy, dial it (one other backend is tried if that fails), optionally send
// a PROXY header, then hand both conns to tunnel.Relay.
//
// Conns arrive from frontend.Listener; the bytes move in package tunnel.
package l4

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/wslb/wslb/access"
	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/frontend"
	"github.com/wslb/wslb/handoff"
	"github.com/wslb/wslb/metrics"
	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/proxyheader"
	"github.com/wslb/wslb/tunnel"
)

// Proxy is the handler of one l4 listener. It is safe for concurrent use by
// every worker; Update swaps its settings and pool for conns accepted later,
// while established conns keep the ones they started with.
type Proxy struct {
	// Metrics receives the per-conn series; required.
	Metrics *metrics.Metrics
	// Log gets one debug line per conn and warnings for failures.
	Log *slog.Logger
	// OnDialError, when set, is told of every failed backend dial (passive
	// health checks count them).
	OnDialError func(b *pool.Backend, err error)
	// Access gets one line per conn when it ends; nil is off.
	Access *access.Logger
	// Engine, when set, carries the established conns on its event loops
	// (no goroutine or buffer per idle conn); nil relays on goroutines.
	Engine *tunnel.Engine

	cur atomic.Pointer[state]
}

// state is what a conn reads once at its start.
type state struct {
	l    config.Listener
	pool *pool.Pool
	errs metrics.Errors
}

// New returns a Proxy serving listener l from p.
func New(l config.Listener, p *pool.Pool, m *metrics.Metrics, log *slog.Logger) *Proxy {
	px := &Proxy{Metrics: m, Log: log}
	px.Update(l, p)
	return px
}

// Update makes conns accepted from now on use l and p. It also creates the
// per-backend series at their current values so dashboards see every backend
// before it serves.
func (px *Proxy) Update(l config.Listener, p *pool.Pool) {
	px.cur.Store(&state{l: l, pool: p, errs: px.Metrics.ListenerErrors(l.Name)})
	for _, b := range p.Backends() {
		px.Metrics.ConnectionsActive.WithLabelValues(l.Name, p.Name(), b.String())
	}
}

// OnLimit counts a conn refused by max_connections or an accept that ran out
// of file descriptors; wire it to frontend.Listener.OnLimit.
func (px *Proxy) OnLimit() { px.cur.Load().errs.Limit.Inc() }

var _ frontend.Handler = (*Proxy)(nil)

// ServeConn proxies c to a backend. It owns c: it closes c when no tunnel
// opens, else hands it to the tunnel and returns; the tunnel's end releases
// the backend and the listener's count, and writes the access line.
func (px *Proxy) ServeConn(ctx context.Context, c net.Conn) {
	st := px.cur.Load()
	client := proxyheader.AddrPort(c.RemoteAddr())
	accepted := time.Now()

	// Bytes read past a PROXY header belong to the client's stream; the relay
	// writes them to the backend first, and copies from c itself, so splice
	// keeps working.
	var early []byte
	if st.l.AcceptProxyProtocol {
		br := bufio.NewReader(c)
		src, err := proxyheader.Read(c, br, st.l.Timeouts.Handshake)
		if err != nil {
			reason := "proxy_protocol"
			if errors.Is(err, proxyheader.ErrTimeout) {
				st.errs.Timeout.Inc()
				reason = "timeout"
			} else {
				st.errs.ProxyProtocol.Inc()
			}
			px.Log.Debug("bad PROXY header", "listener", st.l.Name, "remote", client.String(), "err", err)
			px.refuse(c, st, client, accepted, reason, nil)
			return
		}
		if src.IsValid() {
			client = src
		}
		if n := br.Buffered(); n > 0 {
			// A copy, so that br's buffer is not kept for the conn's life.
			early, _ = br.Peek(n)
			early = bytes.Clone(early)
		}
	}

	b, bc, err := px.connect(ctx, st, client.Addr())
	if err != nil {
		reason := "dial"
		if errors.Is(err, pool.ErrNoBackend) {
			reason = "no_backend"
		}
		px.Log.Debug("no backend for conn", "listener", st.l.Name, "remote", client.String(), "err", err)
		px.refuse(c, st, client, accepted, reason, nil)
		return
	}
	if err := writeProxyHeader(bc, st.l.ProxyProtocol, client, c.LocalAddr()); err != nil {
		bc.Close()
		b.Release()
		px.Log.Debug("write to backend", "listener", st.l.Name, "backend", b.String(), "err", err)
		px.refuse(c, st, client, accepted, "error", b)
		return
	}
	px.relay(ctx, st, b, c, bc, early, client, accepted)
}

// refuse closes c, which no tunnel took, and writes its access line.
func (px *Proxy) refuse(c net.Conn, st *state, client netip.AddrPort, accepted time.Time, reason string, b *pool.Backend) {
	c.Close()
	e := access.Entry{Kind: access.KindConn, Listener: st.l.Name, Client: client, Pool: st.pool.Name(),
		Duration: time.Since(accepted), Reason: reason}
	if b != nil {
		e.Backend = b.String()
	}
	px.Access.Log(&e)
}

// connect reserves a backend and dials it; when the dial fails, one other
// backend is tried, as nginx's proxy_next_upstream does for a refused connect.
func (px *Proxy) connect(ctx context.Context, st *state, client netip.Addr) (*pool.Backend, net.Conn, error) {
	var tried *pool.Backend
	for range 2 {
		b, err := st.pool.Pick(client, tried)
		if err != nil {
			if tried == nil {
				st.errs.NoBackend.Inc()
				return nil, nil, err
			}
			// Only the backend that just failed was eligible.
			return nil, nil, fmt.Errorf("no other backend after a failed dial: %v", err)
		}
		bc, err := px.dial(ctx, st, b)
		if err == nil {
			return b, bc, nil
		}
		b.Release()
		st.errs.Dial.Inc()
		if px.OnDialError != nil {
			px.OnDialError(b, err)
		}
		px.Log.Warn("backend dial failed", "listener", st.l.Name, "pool", st.pool.Name(), "backend", b.String(), "err", err)
		tried = b
	}
	return nil, nil, errors.New("dial failed twice")
}

func (px *Proxy) dial(ctx context.Context, st *state, b *pool.Backend) (net.Conn, error) {
	d := net.Dialer{Timeout: st.l.Timeouts.Connect, KeepAliveConfig: frontend.KeepAlive()}
	start := time.Now()
	c, err := d.DialContext(ctx, "tcp", b.String())
	px.Metrics.BackendConnect.WithLabelValues(st.pool.Name(), b.String()).Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", b, err)
	}
	return c, nil
}

// relay hands c and bc to the tunnel; when it ends, the access line is
// written. early are client bytes read behind a PROXY header, for the
// backend first.
func (px *Proxy) relay(ctx context.Context, st *state, b *pool.Backend, c, bc net.Conn, early []byte, client netip.AddrPort, accepted time.Time) {
	r := tunnel.Relay{Idle: st.l.Timeouts.Idle, ToBackend: early}
	handoff.Start(ctx, px.Engine, r, px.Metrics, st.l.Name, st.pool, b, c, bc, func(s tunnel.Stats, _ time.Duration) {
		ln, pn, why := st.l.Name, st.pool.Name(), s.Reason()
		if s.End == tunnel.EndError {
			px.Log.Debug("l4 conn failed", "listener", ln, "pool", pn, "backend", b.String(), "remote", client.String(), "err", s.Err)
		}
		px.Access.Log(&access.Entry{Kind: access.KindConn, Listener: ln, Client: client, Pool: pn, Backend: b.String(),
			Rx: s.Rx, Tx: s.Tx, Duration: time.Since(accepted), Reason: why})
	})
}

// writeProxyHeader sends the PROXY header (version "v1" or "v2"), if any.
func writeProxyHeader(bc net.Conn, version string, client netip.AddrPort, local net.Addr) error {
	if version == "" {
		return nil
	}
	return proxyheader.Write(bc, version, client, local)
}
