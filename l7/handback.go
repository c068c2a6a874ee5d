package l7

import (
	"bytes"
	"context"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/wslb/wslb/handoff"
	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/tunnel"
	"github.com/wslb/wslb/upstream"
)

// An upgrade whose backend side ran on the engine's loop (upgrade_linux.go)
// and came back: a dial that failed, an answer other than a valid switch, a
// timeout, a drain. The conn continues here on a goroutine of its own, in
// the code the goroutine path runs, so that every answer stays what it is.

// handover is a clientConn's part in a handshake on the engine's loop.
type handover struct {
	// start gives the conn to the loop; set by upgradeOnLoop, run by
	// toEngine.
	start func()
	// lease is the listener's hold on a conn that came back from the loop,
	// detached already: whatever takes the conn next (a tunnel, another
	// handshake) takes the lease, never the hold, which the listener's
	// goroutine may still be reading.
	lease handoff.Lease
}

// toEngine gives the conn to the engine's loop if upgradeOnLoop readied it.
// It is the last deferred call of whoever served the conn (ServeConn, back),
// so that once the loop has it, nothing else touches cc.
func (cc *clientConn) toEngine() {
	if start := cc.handover.start; start != nil {
		cc.handover.start = nil
		start()
	}
}

// loopUpgrade is an upgrade whose backend side runs on the engine's loop:
// what its callbacks need.
type loopUpgrade struct {
	w     *worker
	cc    *clientConn
	u     *upgradeReq
	r     upstream.Request
	b     *pool.Backend
	start time.Time // the connect's
	// connected: Dialed ran, and observed the connect's time.
	connected bool
	// early is what the client sent behind its head (the tunnel's first
	// bytes to the backend): a conn that comes back reads it first. Its
	// buffers are not kept while the conn is the loop's: a storm holds
	// thousands of handshakes there at once.
	early []byte
	// What answer parses from.
	rd    bytes.Reader
	ended *func(tunnel.Stats, time.Duration)
}

// back continues, on a goroutine of its own, a handshake the engine's loop
// gave back. It owns hb's sockets, lu.b's reservation and the lease: it
// serves the answer as the goroutine path does, then the conn's next
// requests, and ends the conn as ServeConn would.
func (lu *loopUpgrade) back(hb tunnel.HandBack, lease handoff.Lease) {
	w, cc := lu.w, lu.cc
	ctx := lease.Ctx
	cc.handover.lease = lease
	cc.detached = false
	cc.stopWatch = nil // ServeConn's watch ended with its request loop
	cc.unwatch = func() bool { return false }
	defer lu.end(lease)
	if hb.Client < 0 {
		// Cancelled (a drain) or never registered: nobody to answer.
		closeFD(hb.Backend)
		lu.b.Release()
		cc.e.Status, cc.e.Reason = statusClientClosed, endReason(ctx, "error")
		w.logRequest(cc, cc.begin)
		return
	}
	c, err := fileConn(hb.Client)
	if err != nil {
		closeFD(hb.Backend)
		lu.b.Release()
		w.px.Log.Warn("client conn lost coming back from the tunnel engine", "listener", cc.st.l.Name, "err", err)
		return
	}
	cc.conn, cc.src.conn, cc.sw.conn, cc.raw = c, c, c, nil
	cc.br = getReaderAfter(lu.early, &cc.src, minBuffer)
	cc.bw = getWriter(&cc.sw)
	cc.unwatch = context.AfterFunc(ctx, func() { c.Close() })
	var more bool
	switch {
	case !hb.Connected:
		closeFD(hb.Backend)
		err := hb.Err
		if !lu.connected { // a timeout: Dialed never ran
			lu.observe(lu.b)
			err = fmt.Errorf("dial %s: %w", lu.b, err)
		}
		more = lu.failed(ctx, lu.b, err)
	default:
		more = lu.answered(ctx, hb)
	}
	w.logRequest(cc, cc.begin)
	if more {
		w.serveNext(ctx, cc)
	}
}

// answered serves the answer of a backend the loop connected to and sent
// the head: from the bytes it read, then the conn.
func (lu *loopUpgrade) answered(ctx context.Context, hb tunnel.HandBack) bool {
	cc, u := lu.cc, lu.u
	bconn, err := fileConn(hb.Backend)
	if err != nil {
		lu.b.Release()
		return cc.respondBackendError(ctx, u.req, u.res.Pool, err, nil)
	}
	// What the loop read is buffered whole: bytes of it left unread keep
	// the conn out of the idle cache (IdleCache.Put).
	bc := &backendConn{b: lu.b, conn: bconn, br: getReaderAfter(hb.Read, bconn, minBuffer)}
	u.sent, u.answerBy, u.failed = true, hb.Deadline, hb.Err
	return lu.w.switchOn(ctx, cc, u, bc)
}

// end ends the conn as ServeConn's deferred calls do, unless a tunnel or
// another handshake on the loop took it.
func (lu *loopUpgrade) end(lease handoff.Lease) {
	cc := lu.cc
	if r := recover(); r != nil {
		// What frontend's recover does for ServeConn, which this goroutine
		// is the rest of.
		cc.detached = false
		lu.w.px.Log.Error("panic serving conn", "listener", cc.st.l.Name, "panic", r, "stack", string(debug.Stack()))
	}
	cc.releaseBuffers(nil)
	cc.unwatch()
	if cc.detached {
		cc.toEngine()
		return
	}
	cc.conn.Close()
	lease.Release()
}

// observe records the connect's time in wslb_backend_connect_seconds, as
// Dialer.Dial does for its own.
func (lu *loopUpgrade) observe(b *pool.Backend) {
	lu.w.px.Metrics.BackendConnect.WithLabelValues(lu.u.p.Name(), b.String()).Observe(time.Since(lu.start).Seconds())
}

// dial opens the conn to b, reserved, that StartDial left to Dial (TLS, a
// PROXY header, a name), and serves the handshake on it.
func (lu *loopUpgrade) dial(ctx context.Context, b *pool.Backend) bool {
	uc, err := lu.cc.st.dial.Dial(ctx, lu.r, b)
	if err != nil {
		return lu.failed(ctx, b, err)
	}
	return lu.w.switchOn(ctx, lu.cc, lu.u, newBackendConn(uc))
}

// failed takes a failed dial to b, reserved, as Connect does: the passive
// checks are told, one other backend is tried (on a goroutine's dial: the
// rare path), and the handshake goes on there.
func (lu *loopUpgrade) failed(ctx context.Context, b *pool.Backend, err error) bool {
	cc, u := lu.cc, lu.u
	d := &cc.st.dial
	if err := d.Failed(lu.r, b, err); err != nil {
		return cc.respondConnectError(u.req, u.res.Pool, err)
	}
	r := lu.r
	r.Tried = b
	uc, err := d.Connect(ctx, r)
	if err != nil {
		return cc.respondConnectError(u.req, u.res.Pool, err)
	}
	cc.e.Backend = uc.Backend.String()
	return lu.w.switchOn(ctx, cc, u, newBackendConn(uc))
}

// serveNext goes on with a conn's requests after one served outside
// serveRequests' loop: it waits for the next request as that loop does, then
// gives the conn to the loop as if just accepted, its head read under the
// deadline set here (wslb_handshake_seconds, which uses accepted, was
// observed already).
func (w *worker) serveNext(ctx context.Context, cc *clientConn) {
	st := cc.st
	if err := cc.awaitRequest(st.l.Timeouts.Keepalive); err != nil {
		return
	}
	cc.accepted = time.Now()
	if !cc.headBuffered() {
		_ = cc.conn.SetReadDeadline(cc.accepted.Add(st.l.Timeouts.Handshake))
	}
	w.serveRequests(ctx, cc, false)
}
