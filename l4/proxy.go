// Package l4 serves raw TCP passthrough conns: read an accepted PROXY
// header if configured, connect to a backend (upstream.Dialer: pick, dial,
// one retry, outgoing PROXY header), then hand both conns to the tunnel
// (handoff.Deps.StartTunnel), which releases the backend when the conn ends.
//
// Conns arrive from frontend.Listener; the bytes move in package tunnel.
package l4

import (
	"bufio"
	"bytes"
	"context"
	"errors"
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
	"github.com/wslb/wslb/upstream"
)

// state is what a conn reads once at its start.
type state struct {
	l    config.Listener
	pool *pool.Pool
	errs metrics.Errors
	dial upstream.Dialer
}

// Proxy is the handler of one l4 listener. It is safe for concurrent use by
// every worker; Update swaps its settings and pool for conns accepted later,
// while established conns keep the ones they started with.
type Proxy struct {
	// Metrics, Log, OnDialError, Access and Engine, set by cmd/wslb.
	handoff.Deps

	cur atomic.Pointer[state]
}

// New returns a Proxy serving listener l from p.
func New(l config.Listener, p *pool.Pool, m *metrics.Metrics, log *slog.Logger) *Proxy {
	px := &Proxy{Deps: handoff.Deps{Metrics: m, Log: log}}
	px.Update(l, p)
	return px
}

// Update makes conns accepted from now on use l and p.
func (px *Proxy) Update(l config.Listener, p *pool.Pool) {
	errs := px.Metrics.ListenerErrors(l.Name)
	px.cur.Store(&state{l: l, pool: p, errs: errs, dial: px.Dialer(l, errs)})
}

// OnLimit counts a conn refused by max_connections or an accept that ran out
// of file descriptors; wire it to frontend.Listener.OnLimit.
func (px *Proxy) OnLimit() { px.cur.Load().errs.Limit.Inc() }

var _ frontend.Handler = (*Proxy)(nil)

// ServeConn proxies c to a backend. It owns c: it closes c when no tunnel
// opens, else hands it, with hold, to the tunnel and returns; the tunnel's
// end releases the backend and the listener's hold, and writes the access
// line.
func (px *Proxy) ServeConn(ctx context.Context, c net.Conn, hold *frontend.Hold) {
	st := px.cur.Load()
	ends := proxyheader.ConnAddrs(c)
	accepted := time.Now()

	// Bytes read past a PROXY header belong to the client's stream; the relay
	// writes them to the backend first, and copies from c itself, so splice
	// keeps working.
	var early []byte
	if st.l.AcceptProxyProtocol {
		br := bufio.NewReader(c)
		front, err := proxyheader.Read(c, br, st.l.Timeouts.Handshake)
		if err != nil {
			reason := "proxy_protocol"
			if errors.Is(err, proxyheader.ErrTimeout) {
				st.errs.Timeout.Inc()
				reason = "timeout"
			} else {
				st.errs.ProxyProtocol.Inc()
			}
			px.Log.Debug("bad PROXY header", "listener", st.l.Name, "remote", ends.Source.String(), "err", err)
			px.refuse(c, st, ends.Source, accepted, reason)
			return
		}
		ends = front
		if n := br.Buffered(); n > 0 {
			// A copy, so that br's buffer is not kept for the conn's life.
			early, _ = br.Peek(n)
			early = bytes.Clone(early)
		}
	}

	client := ends.Source
	bc, err := st.dial.Connect(ctx, upstream.Request{Pool: st.pool, ClientIP: client.Addr(), Addrs: ends})
	if err != nil {
		px.Log.Debug("no backend for conn", "listener", st.l.Name, "remote", client.String(), "err", err)
		px.refuse(c, st, client, accepted, upstream.Reason(err))
		return
	}
	px.relay(st, hold, bc, c, early, client, accepted)
}

// refuse closes c, which no tunnel took, and writes its access line.
func (px *Proxy) refuse(c net.Conn, st *state, client netip.AddrPort, accepted time.Time, reason string) {
	c.Close()
	px.Access.Log(&access.Entry{Kind: access.KindConn, Listener: st.l.Name, Client: client, Pool: st.pool.Name(),
		Duration: time.Since(accepted), Reason: reason})
}

// relay hands c and bc to the tunnel, which releases bc's backend when it
// ends; then the access line is written. early are client bytes read behind
// a PROXY header, for the backend first.
func (px *Proxy) relay(st *state, hold *frontend.Hold, bc upstream.Conn, c net.Conn, early []byte, client netip.AddrPort, accepted time.Time) {
	b := bc.Backend
	px.StartTunnel(handoff.Pair{
		Client: c, Hold: hold, Backend: bc.Net, B: b, Listener: st.l.Name, Pool: st.pool.Name(),
		Relay: tunnel.Relay{Idle: st.l.Timeouts.Idle, ToBackend: early},
		Ended: func(s tunnel.Stats, _ time.Duration) {
			ln, pn, why := st.l.Name, st.pool.Name(), s.Reason()
			if s.End == tunnel.EndError {
				px.Log.Debug("l4 conn failed", "listener", ln, "pool", pn, "backend", b.String(), "remote", client.String(), "err", s.Err)
			}
			px.Access.Log(&access.Entry{Kind: access.KindConn, Listener: ln, Client: client, Pool: pn, Backend: b.String(),
				Rx: s.Rx, Tx: s.Tx, Duration: time.Since(accepted), Reason: why})
		},
	})
}
