//go:build linux

package l7

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"

	"github.com/wslb/wslb/route"
	"github.com/wslb/wslb/tunnel"
)

// How a conn moves between its goroutine and the event loop. A conn comes to
// the loop once, after its goroutine served a request and found nothing
// more buffered (toLoop): the move costs a dup, a close and an epoll_ctl,
// paid once for all the requests that follow. It goes back when a request
// needs what only a goroutine does (handBack, handBackAnswer), and stays
// there: a conn that asks for static files or sends bodies would otherwise
// move for every request.

// toLoop prepares cc's move to the worker's event loop, between two of its
// requests, and reports whether it moves: the caller, ServeConn's
// goroutine, then lets go of cc and calls cc.handOff once it has returned,
// which gives it to the loop.
func (w *worker) toLoop(cc *clientConn) bool {
	if cc.br.Buffered() > 0 {
		return false
	}
	lc, moved := w.loopConnOf(cc)
	if lc != nil {
		cc.releaseBuffers(nil)
		cc.handOff = func() { lc.l.add(lc) }
	}
	return moved
}

// awaitFirst gives a conn just accepted, whose first head is not there
// whole, to the worker's event loop, which waits for the rest (ServeInline):
// no goroutine waits for it, and the socket stays off Go's netpoller. It
// reports false, having done nothing, when the conn cannot go there; the
// caller then serves it on a goroutine.
func (w *worker) awaitFirst(c net.Conn, cc *clientConn) bool {
	read, _ := cc.br.Peek(cc.br.Buffered())
	read = bytes.Clone(read)
	lc, moved := w.loopConnOf(cc)
	switch {
	case lc != nil:
		lc.first, lc.in = true, read
		cc.releaseBuffers(nil)
		lc.l.add(lc)
	case moved: // the conn is gone: let go of the rest, as ServeConn would
		cc.end(c)
	}
	return moved
}

// loopConnOf takes cc off its goroutine for the worker's event loop, and
// reports whether it did: lc is the conn on the loop, to add, and nil when
// it was lost on the way (out of descriptors), closed. A conn that stays
// (not plain TCP, TLS, a loop that cannot be had, a PROXY header or TLS
// toward backends, drained) is never looked at again.
func (w *worker) loopConnOf(cc *clientConn) (lc *loopConn, moved bool) {
	st := cc.st
	if !tunnel.Plain(cc.conn) || cc.looped || cc.handover.lease.Release != nil || cc.tls {
		return nil, false
	}
	// Decided once per conn: a conn whose listener cannot use the loop
	// would otherwise walk every pool's backends before each request.
	cc.looped = true
	l := w.evLoop()
	if l == nil || st.dial.ProxyProtocol != "" || !plainPools(st) {
		return nil, false
	}
	if !cc.unwatch() {
		return nil, false // drained: ServeConn closes the conn
	}
	fd, err := tunnel.Detach(cc.conn) // it closes the conn either way
	if err != nil {
		return nil, true // the conn is gone; the listener lets go of it
	}
	// The listener keeps counting the conn until release; c is closed
	// already, so serveConn's close of it does nothing.
	ctx, release := cc.hold.Detach()
	lc = &loopConn{l: l, cc: cc, ctx: ctx, release: release, fd: fd, slot: -1, hidx: -1, readiness: readiness{writable: true}}
	lc.wr.lc = lc
	cc.linger = func() { lc.lingering = true }
	return lc, true
}

// plainPools reports whether every pool st routes to has plain-TCP
// backends only: the loop dials no TLS.
func plainPools(st *state) bool {
	for _, p := range st.pools {
		for _, b := range p.Backends() {
			if b.TLS() != nil {
				return false
			}
		}
	}
	return true
}

// evLoop returns the worker's event loop, started on first use; nil when it
// cannot be had (no descriptors), and the conn stays on its goroutine.
func (w *worker) evLoop() *evLoop {
	w.loopMu.Lock()
	defer w.loopMu.Unlock()
	if w.loop == nil && !w.loopFailed {
		l, err := newEvLoop(w)
		if err != nil {
			w.loopFailed = true
			w.px.Log.Warn("no event loop for kept-alive conns; they stay on goroutines", "err", err)
			return nil
		}
		w.loop = l
		go l.run()
	}
	return w.loop
}

// closeLoop stops the worker's event loop, if it started.
func (w *worker) closeLoop() {
	w.loopMu.Lock()
	l := w.loop
	w.loop = nil
	w.loopMu.Unlock()
	if l != nil {
		l.close()
	}
}

// handBack gives the conn back to a goroutine with what was read of its next
// request, which the goroutine path then reads, checks and serves from its
// first byte: nothing of it has been acted on.
func (lc *loopConn) handBack() {
	first := lc.first
	c := lc.detach()
	if c == nil {
		return
	}
	cc, pending := lc.cc, bytes.Clone(lc.in)
	lc.in = nil
	w := lc.l.w
	if first && headEnd(pending, 0) >= 0 {
		// A new conn's first head, whole: served here as ServeInline
		// serves one, so that an upgrade goes to the engine's loop
		// without a goroutine.
		w.firstFromLoop(lc.ctx, cc, c, pending, lc.release)
		return
	}
	go w.resume(lc.ctx, cc, c, pending, lc.release, nil)
}

// handBackAnswer gives the request in flight to a goroutine once its
// answer turned out to be one the loop does not relay (too large, interim
// answers, a body that ends with the conn): the backend conn goes along,
// with data, what was read of the answer, and the goroutine relays it as
// forward would have.
func (lc *loopConn) handBackAnswer(be *loopBackend, data []byte) {
	l := lc.l
	l.unwatch(be.slot, be.fd, true)
	bconn, err := fileConn(be.fd)
	be.fd = -1
	lc.be = nil
	if err != nil {
		lc.backendFailed(be, io.ErrUnexpectedEOF)
		return
	}
	c := lc.detach()
	if c == nil {
		bconn.Close()
		lc.finishBackend()
		return
	}
	prefix := bytes.Clone(data)
	bc := &backendConn{b: lc.b, conn: bconn, reused: be.reused, br: getReaderAfter(prefix, bconn, minBuffer)}
	cc, req, out, res, pending := lc.cc, lc.req, lc.out7, lc.res, bytes.Clone(lc.in)
	lc.in, lc.b, lc.counted = nil, nil, false // the goroutine releases them
	w := l.w
	go w.resume(lc.ctx, cc, c, pending, lc.release, func(ctx context.Context) bool {
		return w.resumeAnswer(ctx, cc, req, out, res, bc)
	})
}

// detach takes the client's socket off the loop and wraps it in a net.Conn
// again (registered with Go's netpoller); nil, the conn closed and let go
// of, if that fails (out of descriptors).
func (lc *loopConn) detach() net.Conn {
	l := lc.l
	l.stopTimer(lc)
	l.unwatch(lc.slot, lc.fd, true)
	c, err := fileConn(lc.fd)
	lc.fd = -1
	lc.leave()
	if err != nil {
		lc.finishBackend()
		lc.release()
		return nil
	}
	return c
}

// resumeAnswer relays the answer to the request the loop sent on bc, then
// lets go of what the loop took for it: the active gauge and bc's backend.
func (w *worker) resumeAnswer(ctx context.Context, cc *clientConn, req, out *http.Request, res route.Result, bc *backendConn) bool {
	defer bc.b.Release()
	defer cc.series.conn.Active.Dec()
	keep := w.exchange(ctx, cc, req, out, res, bc, true)
	w.logRequest(cc, cc.begin)
	return keep
}
