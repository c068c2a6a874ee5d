// Package handoff holds what l4 and l7 proxies share once a conn has a
// backend: Deps, the dependencies cmd/wslb wires into both, and StartTunnel,
// which hands an established conn pair (an l4 conn, an l7 tunnel) to the
// tunnel and returns; when the tunnel ends it settles what the pair held:
// the backend's reservation, the active gauge, the tunnel metrics and the
// listener's hold on the client conn. The rules of a tunnel's life live here
// once.
package handoff

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/wslb/wslb/access"
	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/fdbudget"
	"github.com/wslb/wslb/frontend"
	"github.com/wslb/wslb/metrics"
	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/tunnel"
	"github.com/wslb/wslb/upstream"
)

// Deps are what cmd/wslb wires into every l4 and l7 proxy, which embed it.
// Set them before the proxy takes conns.
type Deps struct {
	// Metrics receives every series; required.
	Metrics *metrics.Metrics
	// Log gets warnings for failures worth an operator's attention (a failed
	// dial), and debug lines.
	Log *slog.Logger
	// OnDialError, when set, is told of every failed backend dial (the
	// passive health checks count them).
	OnDialError func(b *pool.Backend, err error)
	// Access gets one line per request, tunnel and l4 conn as it ends; nil
	// is off.
	Access *access.Logger
	// Engine, when set, carries established plain-TCP tunnels on its event
	// loops (no goroutine or buffer per idle tunnel); TLS tunnels, or all
	// when nil, are relayed on goroutines.
	Engine *tunnel.Engine
	// FDs is the process's descriptor count; a refusal closes at once when
	// it is scarce (fdbudget.Budget.Scarce). nil: no count.
	FDs *fdbudget.Budget
	// CloseWait is how long a WebSocket tunnel's graceful close waits for
	// the Close replies (tunnel.Relay.CloseWait) when the Relay sets none;
	// 0 is tunnel.DefaultCloseWait.
	CloseWait time.Duration
	// Cut, when done, ends every graceful close under way at once (a
	// second SIGTERM during a drain); nil: never.
	Cut context.Context
}

// Dialer returns the upstream.Dialer of listener l, whose error counters
// are errs.
func (d *Deps) Dialer(l config.Listener, errs metrics.Errors) upstream.Dialer {
	return upstream.Dialer{
		Listener: l.Name, Timeout: l.Timeouts.Connect, ProxyProtocol: l.ProxyProtocol,
		Metrics: d.Metrics, Errs: errs, OnDialError: d.dialFailed, Log: d.Log,
	}
}

// dialFailed passes a failed dial on to OnDialError, which may be set after
// the Dialer was made.
func (d *Deps) dialFailed(b *pool.Backend, err error) {
	if d.OnDialError != nil {
		d.OnDialError(b, err)
	}
}

// Pair is an established client conn and backend conn, and what their
// tunnel needs.
type Pair struct {
	// Client is the accepted conn and Hold the listener's hold on it; or
	// Lease, when the hold was detached already (a handshake the engine
	// gave back), and Hold is then unused.
	Client net.Conn
	Hold   *frontend.Hold
	Lease  Lease
	// Backend is a conn to B, on which the pair holds one reservation.
	Backend net.Conn
	B       *pool.Backend
	// Listener and Pool name the metric series.
	Listener, Pool string
	Relay          tunnel.Relay
	// Ended, when set, is told how the tunnel ended and how long it lived,
	// after the metrics and before the listener lets go of the client conn
	// (the access line). It is what an idle tunnel costs besides the tunnel
	// itself, so it should keep little.
	Ended func(s tunnel.Stats, lived time.Duration)
}

// StartTunnel relays p's conns, on d.Engine when both are plain TCP, and
// returns at once.
//
// Ownership: from the call on, the tunnel owns both conns and closes them;
// the caller must not touch them again. It detaches p.Hold, so the
// handler may return while the listener still counts the conn and a drain
// still ends it (its context's cause, frontend.ErrDrain, names the reason).
// The tunnel is in p.B's registry while it runs, through which a reload that
// removes p.B ends it in its turn of the retirement spread (pool.ErrRemoved),
// and its max_connection_age (pool.ErrMaxAge), rebalancing and maint end it;
// nothing else a reload does may cut it. When the
// tunnel has ended, its end releases p.B's reservation (the one place this
// path releases it), closes the active gauge, records the tunnel metrics,
// calls p.Ended, then releases the hold.
func (d *Deps) StartTunnel(p Pair) {
	lf, ctx := d.life(&p)
	lf.open()
	stop := d.Engine.Start(ctx, p.Relay, p.Client, p.Backend, lf.end)
	lf.tracked.Started(stop)
}

// StartHandshake runs h, an upgrade whose backend socket (h.Backend) is
// connecting, on d.Engine's loop, which must be set, for p's client conn
// (plain TCP; p.Backend is unused), and returns at once. It detaches p.Hold
// (or takes p.Lease) as StartTunnel does. When the backend switches, the
// tunnel opens in place and lives as StartTunnel's does (p.Relay is its);
// when the handshake goes back, back gets it on a goroutine of its own,
// with the lease on the conn: it owns the sockets, p.B's reservation and
// the lease from then on.
func (d *Deps) StartHandshake(p Pair, h tunnel.Handshake, back func(tunnel.HandBack, Lease)) {
	lf, ctx := d.life(&p)
	h.Relay = p.Relay
	h.Opened = func(stop func(error)) {
		lf.open()
		lf.tracked.Started(stop)
	}
	h.Done = lf.end
	h.Back = func(hb tunnel.HandBack) { back(hb, Lease{Ctx: ctx, Release: lf.release}) }
	d.Engine.Handshake(ctx, p.Client, &h)
}

// Lease is a conn whose listener's hold was detached: its context, which a
// drain cancels, and the release its owner calls once, after closing it.
type Lease struct {
	Ctx     context.Context
	Release func()
}

// life is what a tunnel settles when it ends.
type life struct {
	m              *metrics.Metrics
	mc             metrics.Conn
	b              *pool.Backend
	listener, pool string
	ended          func(tunnel.Stats, time.Duration)
	release        func()
	// Set when the tunnel opens.
	start   time.Time
	closed  func()
	tracked *pool.Tunnel
}

// life detaches p's hold (or takes its lease) and completes p.Relay.
func (d *Deps) life(p *Pair) (*life, context.Context) {
	lf := &life{m: d.Metrics, b: p.B, listener: p.Listener, pool: p.Pool, ended: p.Ended}
	lf.mc = d.Metrics.Conn(p.Listener, p.Pool, p.B.String())
	p.Relay.Rx, p.Relay.Tx = lf.mc.Rx, lf.mc.Tx
	if p.Relay.CloseWait == 0 {
		p.Relay.CloseWait = d.CloseWait
	}
	p.Relay.Cut = d.Cut
	ctx := p.Lease.Ctx
	if lf.release = p.Lease.Release; lf.release == nil {
		ctx, lf.release = p.Hold.Detach()
	}
	return lf, ctx
}

// open counts the tunnel open and puts it in its backend's registry.
func (lf *life) open() {
	lf.closed = lf.mc.Open()
	lf.start = time.Now()
	lf.tracked = lf.b.Track()
}

// end settles the ended tunnel: the registry, its metrics, the backend's
// reservation, the access line, then the hold.
func (lf *life) end(s tunnel.Stats) {
	lf.tracked.Ended()
	lived := time.Since(lf.start)
	lf.m.TunnelEnded(lf.listener, lf.pool, s.Reason(), lived)
	lf.closed()
	lf.b.Release()
	if lf.ended != nil {
		lf.ended(s, lived)
	}
	lf.release()
}
