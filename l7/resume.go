package l7

import (
	"context"
	"net"

	"github.com/wslb/wslb/handoff"
)

// resume serves cc on a goroutine again, over c, after the event loop handed
// it back (loophand_linux.go): pending is what was read of the next request,
// and then, when set, finishes the request in flight first and reports
// whether the conn goes on. The conn's hold was detached when it moved to
// the loop, so release lets go of it here, once the conn is closed, unless
// a tunnel took it over.
func (w *worker) resume(ctx context.Context, cc *clientConn, c net.Conn, pending []byte, release func(), then func(context.Context) bool) {
	w.serveResumed(ctx, cc, c, pending, release, then)
	cc.toEngine() // a handshake readied for the engine's loop, last
}

// serveResumed is resume up to a handshake's move to the engine.
func (w *worker) serveResumed(ctx context.Context, cc *clientConn, c net.Conn, pending []byte, release func(), then func(context.Context) bool) {
	cc.rewrap(ctx, c, pending, release)
	defer cc.endResumed(c, release)
	if then != nil && !then(ctx) {
		return
	}
	w.serveRequests(ctx, cc, true)
}

// rewrap sets cc up to be served over c again, after the event loop handed
// it back with pending, what was read of its next request.
func (cc *clientConn) rewrap(ctx context.Context, c net.Conn, pending []byte, release func()) {
	// The hold was detached when the conn moved to the loop: a tunnel or
	// handshake takes this lease of it.
	cc.handover.lease = handoff.Lease{Ctx: ctx, Release: release}
	cc.conn = c
	cc.linger, cc.raw, cc.probe, cc.probeErr = nil, nil, nil, nil
	cc.src = socketReader{conn: c, fd: -1}
	cc.sw = deadlineWriter{conn: c, timeout: cc.st.l.Timeouts.Send}
	cc.detached, cc.stopWatch = false, nil
	cc.watched.Store(nil)
	cc.drained.Store(false)
	cc.unwatch = context.AfterFunc(ctx, func() { c.Close() })
	cc.stopDrain = cc.unwatch
	cc.br = getReaderAfter(pending, &cc.src, minBuffer)
	cc.bw = getWriter(&cc.sw)
}

// endResumed lets go of a conn rewrap set up once it is served: closed, and
// the hold released, unless a tunnel or a handshake took it over.
func (cc *clientConn) endResumed(c net.Conn, release func()) {
	cc.releaseBuffers(nil)
	cc.stopDrain()
	cc.unwatchBackends()
	if !cc.detached {
		c.Close()
		release()
	}
}
