//go:build linux

package l7

import (
	"context"
	"errors"
	"net"
	"syscall"

	"github.com/wslb/wslb/frontend"
	"github.com/wslb/wslb/rawconn"
)

// ServeInline serves a plain-TCP conn's first request on the accept loop
// (frontend.Inline) when its head is there whole as the conn is accepted,
// as it mostly is: read, parsed, checked and routed there, and for a
// WebSocket upgrade whose backend side goes to the tunnel engine's loop
// (upgradeOnLoop), dialled and handed to that loop there too. Such a conn
// never has a goroutine of its own, and a storm of handshakes costs no
// goroutine stack per conn. A head not yet whole is waited for on the
// worker's keep-alive loop (awaitFirst). Whatever else must wait (a plain
// request's backend, a static file, a dial on a goroutine, a lingering
// close) is left to the goroutine the listener then starts, where the conn
// goes on exactly as on the goroutine path; so do conns that begin with a
// PROXY header or a TLS handshake.
func (w *worker) ServeInline(ctx context.Context, c net.Conn, hold *frontend.Hold) (rest func()) {
	st := w.px.cur.Load()
	rc, ok := c.(*rawconn.Conn)
	if !ok || st.l.AcceptProxyProtocol || st.tls != nil {
		return func() { w.ServeConn(ctx, c, hold) }
	}
	cc := w.newConn(ctx, c, hold, st)
	cc.src.now = rc
	_, err := cc.br.Peek(1) // one read, of what is there
	cc.src.now = nil
	if errors.Is(err, syscall.EAGAIN) || err == nil && !cc.headBuffered() {
		if w.awaitFirst(c, cc) {
			return nil
		}
		return func() { w.finish(c, cc, func() { w.serveRequests(ctx, cc, false) }) }
	}
	// A head is there, or the conn ended (EOF, a reset): either is served
	// here without a wait.
	if rest := w.serveHead(ctx, cc); rest != nil {
		return func() { w.finish(c, cc, rest) }
	}
	w.finish(c, cc, nil)
	return nil
}

// serveHead serves a conn's first request, whose head cc.br holds whole,
// where nothing may wait (cc.inline), and returns what must wait, for a
// goroutine: the rest of that request, then the conn's next requests; nil
// when nothing is left.
func (w *worker) serveHead(ctx context.Context, cc *clientConn) (rest func()) {
	cc.inline = true
	cc.linger = func() { cc.rest = func() bool { lingerClose(cc.conn); return false } }
	cc.readDeadline = true // newConn's handshake deadline
	more := w.serveOne(ctx, cc, cc.accepted)
	cc.inline, cc.linger = false, nil
	later := cc.rest
	cc.rest = nil
	if later == nil && !more {
		return nil
	}
	return func() {
		if later != nil {
			more = later()
			w.logRequest(cc, cc.begin)
		}
		if more {
			w.serveRequests(ctx, cc, true)
		}
	}
}

// firstFromLoop serves, on the event loop's goroutine, a new conn's first
// request whose head the loop waited for (awaitFirst) and does not serve
// itself: as ServeInline serves one, and what must wait on a goroutine.
func (w *worker) firstFromLoop(ctx context.Context, cc *clientConn, c net.Conn, pending []byte, release func()) {
	cc.rewrap(ctx, c, pending, release)
	end := func() {
		cc.endResumed(c, release)
		cc.toEngine()
	}
	rest := w.serveHead(ctx, cc)
	if rest == nil {
		end()
		return
	}
	go func() {
		defer end()
		rest()
	}()
}

// finish serves the rest of a conn ServeInline began (none when serve is
// nil), on the goroutine the listener started for it, and ends it as
// ServeConn does.
func (w *worker) finish(c net.Conn, cc *clientConn, serve func()) {
	if handOff := w.serveRest(c, cc, serve); handOff != nil {
		handOff()
	}
}

// serveRest runs serve, then ends the conn, with the deferred call that
// ends it when serve panics too (frontend recovers).
func (w *worker) serveRest(c net.Conn, cc *clientConn, serve func()) (handOff func()) {
	defer func() {
		cc.unwatchBackends() // forward's watch, when serve was one
		handOff = cc.end(c)
	}()
	if serve != nil {
		serve()
	}
	return nil
}
