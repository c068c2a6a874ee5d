package l7

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wslb/wslb/access"
	"github.com/wslb/wslb/frontend"
	"github.com/wslb/wslb/header"
	"github.com/wslb/wslb/metrics"
	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/proxyheader"
	"github.com/wslb/wslb/route"
	"github.com/wslb/wslb/tunnel"
)

// clientConn is one client conn and what every request on it shares.
type clientConn struct {
	st   *state
	conn net.Conn // raw TCP, or the *tls.Conn after the handshake
	// br and bw come from the pools below and go back to them whenever the
	// conn waits for a request with nothing buffered (awaitRequest), and when
	// it ends or becomes a tunnel; nil meanwhile.
	br *bufio.Reader
	bw *bufio.Writer
	// src is what br reads: the raw conn, or its socket while awaitRequest
	// probes it.
	src   socketReader
	rsize int         // the largest br: a whole head must fit (growReader)
	raw   rawConnFunc // the raw conn's SyscallConn, once awaitRequest needed it
	// probe is readAwaited, and probeErr its error.
	probe    func(fd uintptr) bool
	probeErr error
	peer     netip.AddrPort // the TCP peer, or the source an accepted PROXY header named
	local    netip.AddrPort // the listener's end: X-Forwarded-Port's port
	dest     netip.AddrPort // local, or the destination an accepted PROXY header named
	tls      bool
	accepted time.Time
	answered bool // the first response byte went out (wslb_handshake_seconds)
	// txBytes counts the next relayed response body, for the request being
	// forwarded; nil for answers not served by a pool.
	txBytes prometheus.Counter
	// unwatch stops ServeConn closing the conn when its ctx ends; a tunnel
	// calls it, since tunnel.Relay closes its conns itself and must be the
	// one that does, to tell a drain from a failure. stopDrain is the one
	// newConn (or rewrap) set, which end stops: a handshake the engine's
	// loop gives back sets unwatch anew, on another goroutine.
	unwatch, stopDrain func() bool
	// e is the access line of the request being served; whatever serves
	// it fills in what it learns (status, backend, bytes, how it ended).
	e access.Entry
	// begin is when the request being served began (its head's first
	// byte, or the accept), for its access line.
	begin time.Time
	// hold is the listener's hold on the conn, which a tunnel takes over;
	// detached is set when it did: the tunnel now owns the conn and writes
	// the access line when it ends.
	hold     *frontend.Hold
	detached bool
	handover handover // a handshake on the engine's loop (upgrade_linux.go)

	// watched is the backend conn of the request being forwarded, closed by
	// the drain watch (watchBackend) when ctx ends; drained records that it
	// fired. One watch per client conn, rather than a context.AfterFunc per
	// request.
	watched   atomic.Pointer[backendConn]
	drained   atomic.Bool
	stopWatch func() bool

	// Label lookups hash every label value under a lock; a keep-alive conn
	// mostly goes to one backend and gets one status, so the last series
	// are kept.
	series   backendSeries
	requests requestSeries
	// readDeadline: a read deadline may be set on conn that a tunnel must
	// not inherit.
	readDeadline bool
	// sw is what bw writes to: conn, with timeouts.send per write.
	sw deadlineWriter
	// bsw is what the request being forwarded is written to its backend
	// conn through, by one goroutine at a time: here rather than in each
	// backendConn, which is made per request.
	bsw deadlineWriter
	// linger, when set, replaces lingerClose after an answer that closes
	// the conn: the event loop's, which must not block (loopconn_linux.go).
	linger func()
	// handOff, set by toLoop, gives the conn to the event loop once its
	// goroutine has let go of it.
	handOff func()
	// looped: toLoop has decided on this conn (it moved to the event loop,
	// or cannot); a conn the loop handed back is not moved there again.
	looped bool
	// inline: the conn is being served on its listener's accept loop
	// (ServeInline), where nothing may wait; rest is what must, left for
	// the conn's goroutine by later.
	inline bool
	rest   func() bool
	// rateGrace is how long a request body is waited for before
	// http.min_body_rate applies (defaultRateGrace; shorter in tests).
	rateGrace time.Duration
	// stream is set on the clientConn of one HTTP/2 stream (h2Request),
	// which answers through it; such a clientConn has no conn or br.
	stream *h2Stream
}

// backendSeries are the series of requests that b of p serves.
type backendSeries struct {
	p    *pool.Pool
	b    *pool.Backend
	conn metrics.Conn
}

// requestSeries is the wslb_http_requests_total child of one pool and status.
type requestSeries struct {
	pool    string
	status  int
	counter prometheus.Counter
}

// ServeConn serves one client conn until it closes, errs, idles out or
// becomes a tunnel. It owns c until then; a tunnel (upgrade.go) takes c and
// hold over and ServeConn returns at once.
func (w *worker) ServeConn(ctx context.Context, c net.Conn, hold *frontend.Hold) {
	if handOff := w.serveConn(ctx, c, hold); handOff != nil {
		handOff()
	}
}

// serveConn is ServeConn up to the conn's move to the event loop: it returns
// what moves it (cc.handOff), to be called once it has let go of cc.
func (w *worker) serveConn(ctx context.Context, c net.Conn, hold *frontend.Hold) (handOff func()) {
	cc := w.newConn(ctx, c, hold, w.px.cur.Load())
	defer func() { handOff = cc.end(c) }()
	st := cc.st
	if st.l.AcceptProxyProtocol {
		front, err := proxyheader.Read(c, cc.br, time.Until(cc.accepted.Add(st.l.Timeouts.Handshake)))
		if err != nil {
			if errors.Is(err, proxyheader.ErrTimeout) {
				st.errs.Timeout.Inc()
			} else {
				st.errs.ProxyProtocol.Inc()
			}
			return nil
		}
		cc.peer, cc.dest = front.Source, front.Dest
		_ = c.SetDeadline(cc.accepted.Add(st.l.Timeouts.Handshake))
	}
	if st.tls != nil && !w.startTLS(ctx, cc) {
		return nil
	}
	if cc.h2() {
		w.serveH2(ctx, cc)
		return nil
	}
	_ = cc.conn.SetWriteDeadline(time.Time{})
	w.serveRequests(ctx, cc, false)
	return nil
}

// newConn sets up the conn c just accepted: its clientConn, the deadline of
// timeouts.handshake, which runs from accept through the PROXY header, the
// TLS handshake and the first request head, a drain's watch, and its
// buffers.
func (w *worker) newConn(ctx context.Context, c net.Conn, hold *frontend.Hold, st *state) *clientConn {
	ends := proxyheader.ConnAddrs(c)
	cc := &clientConn{
		st: st, conn: c, hold: hold, accepted: time.Now(),
		peer: ends.Source, local: ends.Dest, dest: ends.Dest,
		// Drain cancels ctx: whatever the conn is doing, it ends.
		unwatch:   context.AfterFunc(ctx, func() { c.Close() }),
		sw:        deadlineWriter{conn: c, timeout: st.l.Timeouts.Send},
		rateGrace: cmp.Or(w.px.rateGrace, defaultRateGrace),
	}
	cc.stopDrain = cc.unwatch
	_ = c.SetDeadline(cc.accepted.Add(st.l.Timeouts.Handshake))
	cc.src = socketReader{conn: c, fd: -1}
	cc.rsize = readerSize(st)
	// A head that does not fit the first 4 KiB gets a reader of rsize then
	// (growReader): most never need it, and a storm of handshakes holds
	// thousands of readers at once.
	cc.br = getReader(&cc.src, minBuffer)
	cc.bw = getWriter(&cc.sw)
	return cc
}

// end lets go of the conn accepted as c once whoever served it is done:
// its buffers and the drain's watch, and c, closed unless a tunnel or a
// handshake on the engine's loop took it over (toEngine hands that one
// over now). It returns cc.handOff, which gives the conn to the keep-alive
// loop once the caller, too, has let go of it.
func (cc *clientConn) end(c net.Conn) (handOff func()) {
	cc.releaseBuffers(nil)
	cc.stopDrain()
	if !cc.detached {
		c.Close()
	}
	cc.toEngine()
	return cc.handOff
}

// growReader gives cc a reader of rsize, a whole head's, with what the
// smaller one had buffered.
func (cc *clientConn) growReader() {
	buffered, _ := cc.br.Peek(cc.br.Buffered())
	prefix := bytes.Clone(buffered)
	putReader(cc.br)
	cc.br = getReaderAfter(prefix, &cc.src, cc.rsize)
}

// readerSize is the largest client reader's buffer: a whole head must fit, since
// readRequest buffers it before parsing.
func readerSize(st *state) int {
	if st.l.Mode != "" && st.l.HTTP.MaxHeaderBytes > 4096 {
		return int(st.l.HTTP.MaxHeaderBytes)
	}
	return 4096
}

// serveRequests answers requests in order (pipelined ones included: they
// wait in cc.br) until the client or a response ends the conn.
func (w *worker) serveRequests(ctx context.Context, cc *clientConn, resumed bool) {
	defer cc.unwatchBackends()
	st := cc.st
	cc.readDeadline = true // ServeConn's handshake deadline
	n := 0
	if resumed {
		n = 1 // the loop served the conn's first requests
	}
	for ; ; n++ {
		begin := cc.accepted
		if n > 0 {
			if w.toLoop(cc) {
				return
			}
			// Between requests the client may idle for timeouts.keepalive;
			// once its next request starts, timeouts.handshake bounds the head.
			if err := cc.awaitRequest(st.l.Timeouts.Keepalive); err != nil {
				return
			}
			begin = time.Now()
			// A head that arrived whole needs no further read to parse, so
			// no deadline for one.
			if !cc.headBuffered() {
				_ = cc.conn.SetReadDeadline(begin.Add(st.l.Timeouts.Handshake))
			}
		}
		if !w.serveOne(ctx, cc, begin) {
			return
		}
	}
}

// serveOne reads, serves and logs one request that began at begin, and
// reports whether the conn may go on. On the accept loop (ServeInline), a
// request whose serving must wait is left in cc.rest, unlogged.
func (w *worker) serveOne(ctx context.Context, cc *clientConn, begin time.Time) bool {
	st := cc.st
	cc.e = access.Entry{Kind: access.KindRequest, Listener: st.l.Name, Client: cc.peer}
	cc.begin = begin
	req, err := readRequest(cc.br, int(st.l.HTTP.MaxHeaderBytes))
	if errors.Is(err, errHeadGrow) {
		cc.growReader()
		req, err = readRequest(cc.br, int(st.l.HTTP.MaxHeaderBytes))
	}
	if err != nil {
		w.badHead(cc, err)
		if cc.e.Status != 0 {
			// Only heads that got an answer: a line per silent
			// slowloris conn would let it fill the disk as well.
			w.logRequest(cc, begin)
		}
		return false
	}
	cc.e.Method, cc.e.Path, cc.e.Proto = req.Method, req.URL.Path, req.Proto
	more := w.serveRequest(ctx, cc, req)
	if cc.rest != nil {
		return false
	}
	w.logRequest(cc, begin)
	return more
}

// clearReadDeadline removes the client conn's read deadline, if one may be set.
func (cc *clientConn) clearReadDeadline() {
	if cc.readDeadline {
		_ = cc.conn.SetReadDeadline(time.Time{})
		cc.readDeadline = false
	}
}

// headBuffered reports whether br holds a whole request head already.
func (cc *clientConn) headBuffered() bool {
	buf, _ := cc.br.Peek(cc.br.Buffered())
	return headEnd(buf, 0) >= 0
}

// logRequest writes the access line of the request that began at begin.
func (w *worker) logRequest(cc *clientConn, begin time.Time) {
	if w.px.Access == nil || cc.detached {
		return
	}
	e := &cc.e
	e.Duration = time.Since(begin)
	if e.Reason == "" {
		e.Reason = "done"
	}
	w.px.Access.Log(e)
}

// endReason names what ended a request or tunnel that failed: drain or
// removal when ctx was cancelled (they close the conns, so the I/O error
// alone would blame the client), else fallback.
func endReason(ctx context.Context, fallback string) string {
	if ctx.Err() == nil {
		return fallback
	}
	if r, ok := errors.AsType[tunnel.Reasoner](context.Cause(ctx)); ok {
		return r.Reason()
	}
	return fallback
}

// serveRequest answers one request and reports whether the conn may carry
// another.
func (w *worker) serveRequest(ctx context.Context, cc *clientConn, req *http.Request) bool {
	st := cc.st
	h := st.l.HTTP
	if msg := checkRequestOf(req, cc.major()); msg != "" {
		st.errs.BadRequest.Inc()
		return cc.respondError(req, http.StatusBadRequest, msg)
	}
	if req.ContentLength > int64(h.MaxBodyBytes) {
		st.errs.BadRequest.Inc()
		return cc.respondError(req, http.StatusRequestEntityTooLarge, "request body too large")
	}
	if ch := st.http01.Challenge(req); ch != nil {
		return cc.serveChallenge(req, ch)
	}
	if h.RedirectHTTPS {
		return cc.redirect(req, h.RedirectCode, httpsURL(req, h.HTTPSPort))
	}
	res := st.routes.Match(req.URL)
	cc.e.Route = res.Prefix
	switch res.Kind {
	case route.BadPath:
		st.errs.BadRequest.Inc()
		return cc.respondError(req, http.StatusBadRequest, "invalid path")
	case route.NotFound:
		return cc.respondError(req, http.StatusNotFound, "no route for this path")
	case route.Redirect:
		return cc.redirect(req, http.StatusPermanentRedirect, res.Location)
	case route.Static:
		if cc.inline {
			return cc.later(func() bool { return cc.serveStatic(req, st.static[staticKey{res.Dir, res.Fallback}], res) })
		}
		return cc.serveStatic(req, st.static[staticKey{res.Dir, res.Fallback}], res)
	}
	if token, _ := header.UpgradeToken(req.Header, h.UpgradeProtocols); token != "" {
		cc.clearReadDeadline() // the tunnel reads the client conn with its own
		return w.upgrade(ctx, cc, req, res, token)
	}
	if cc.inline {
		return cc.later(func() bool { return w.forward(ctx, cc, req, res) })
	}
	return w.forward(ctx, cc, req, res)
}

// later keeps serve, the rest of a request served on the accept loop
// (cc.inline) that has to wait for the network or the disk, for the
// goroutine the listener starts for the conn (ServeInline). The caller's
// answer is not used.
func (cc *clientConn) later(serve func() bool) bool {
	cc.rest = serve
	return false
}
