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
	defer func() {
		if !cc.detached {
			c.Close()
			release()
		}
	}()
	cc.unwatch = context.AfterFunc(ctx, func() { c.Close() })
	defer cc.unwatch()
	cc.br = getReaderAfter(pending, &cc.src, minBuffer)
	cc.bw = getWriter(&cc.sw)
	defer cc.releaseBuffers(nil)
	if then != nil && !then(ctx) {
		return
	}
	w.serveRequests(ctx, cc, true)
}
