//go:build linux

package l7

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wslb/wslb/access"
	"github.com/wslb/wslb/header"
	"github.com/wslb/wslb/poller"
	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/route"
	"github.com/wslb/wslb/upstream"
)

// loopConn is a kept-alive client conn on a worker's event loop. Its fields
// belong to the loop goroutine.
type loopConn struct {
	l  *evLoop
	cc *clientConn
	// ctx is the conn's (a drain cancels it); release lets go of the
	// listener's hold once the conn is closed; stopWatch ends the drain
	// watch.
	ctx       context.Context
	release   func()
	stopWatch func() bool

	fd       int // -1 once ended or handed back
	slot     int32
	onLoop   bool // registered: counted in Proxy.loopConns
	hidx     int
	deadline time.Duration
	phase    phase

	readiness

	in []byte // bytes of the client's next request(s), read and not yet served
	// borrowed: in is the loop's read buffer, good until the next read.
	borrowed bool
	out      []byte // answer bytes the client's socket has not taken yet
	wr       loopWriter

	// The request in flight (phBackend, phWrite).
	req   *http.Request
	out7  *http.Request // what req became for the backend
	res   route.Result
	ureq  upstream.Request
	be    *loopBackend
	b     *pool.Backend // reserved for the request, released once
	tried *pool.Backend // whose dial failed: the one other backend is tried
	// counted: the request's conn series has it in wslb_backend_connections_*.
	counted bool
	keep    bool // the conn may carry another request once the answer is out
	// lingering: wslb's own answer closes the conn (respond's linger);
	// lingerLeft is how much more of what the client sends is read and
	// dropped before the close.
	lingering  bool
	lingerLeft int
	// first: the conn came from ServeInline before its first head was
	// whole (awaitFirst), and that request has not been served yet.
	first bool
}

// phase is what a loopConn waits for; each has its own timeout.
type phase uint8

const (
	phIdle    phase = iota // a request's first byte (timeouts.keepalive)
	phHead                 // the rest of its head (timeouts.handshake)
	phBackend              // the backend: connect, request written, answer (timeouts.connect, timeouts.idle)
	phWrite                // the client taking the answer (timeouts.send per write)
	phLinger               // the client's last bytes, after an answer that closes the conn
)

// lingerTime and lingerMax bound a linger, as lingerClose does.
const (
	lingerTime = 500 * time.Millisecond
	lingerMax  = 256 << 10
)

// maxLoopResponse is the largest answer the loop relays itself; a larger
// one, or one still arriving when this much is buffered, streams on a
// goroutine.
const maxLoopResponse = 64 << 10

// register adds lc's socket to the loop's epoll set; it runs on the loop.
func (lc *loopConn) register() {
	l := lc.l
	slot, err := l.watch(lc.fd, lc)
	if err != nil {
		l.w.px.Log.Warn("event loop: cannot watch a client conn; closing it", "listener", lc.cc.st.l.Name, "err", err)
		lc.slot = -1
		lc.end()
		return
	}
	lc.slot = slot
	// Registered here, on the loop: a drain that already happened queues
	// its cancel behind this.
	lc.stopWatch = context.AfterFunc(lc.ctx, func() { l.cancel(lc) })
	lc.onLoop = true
	l.w.px.loopConns.Add(1)
	if lc.first {
		lc.awaitHead()
		return
	}
	lc.idle()
}

// awaitHead waits for the rest of a new conn's first head: timeouts.handshake
// bounds it from the accept, as on a goroutine.
func (lc *loopConn) awaitHead() {
	cc := lc.cc
	lc.phase = phHead
	cc.begin = cc.accepted
	lc.l.setTimer(lc, max(time.Until(cc.accepted.Add(cc.st.l.Timeouts.Handshake)), time.Nanosecond))
	if len(lc.in) > 0 {
		lc.serve()
	}
	lc.readClient()
}

// idle starts waiting for the next request, serving at once what was read
// ahead of it.
func (lc *loopConn) idle() {
	lc.phase = phIdle
	lc.req, lc.out7, lc.be, lc.tried, lc.counted, lc.lingering = nil, nil, nil, nil, false, false
	lc.l.setTimer(lc, lc.cc.st.l.Timeouts.Keepalive)
	if len(lc.in) > 0 {
		lc.startHead()
		lc.serve()
	}
	lc.readClient()
}

func (lc *loopConn) event(ev uint32) {
	if lc.fd < 0 {
		return
	}
	lc.note(ev)
	switch lc.phase {
	case phIdle, phHead:
		lc.readClient()
	case phWrite:
		lc.flush()
	case phLinger:
		lc.drainLinger()
	}
	// phBackend: what the client sends next waits until the answer is out,
	// as on a goroutine; readable says to read it then.
}

// read reads the client's socket into the loop's buffer: the bytes, or done
// when there is nothing more (EAGAIN), or the error (io.EOF when it closed).
func (lc *loopConn) read() (p []byte, err error) {
	buf := lc.l.rbuf
	for {
		n, err := poller.Read(lc.fd, buf)
		switch {
		case err == unix.EAGAIN:
			lc.readable = false
			return nil, nil
		case err != nil:
			return nil, os.NewSyscallError("read", err)
		case n == 0:
			return nil, io.EOF
		}
		if n < len(buf) && !lc.rdhup {
			// A short read drained the socket; the next bytes bring an edge.
			lc.readable = false
		}
		return buf[:n], nil
	}
}

// readClient reads while the client has bytes and serves each head that is
// complete.
func (lc *loopConn) readClient() {
	for lc.fd >= 0 && lc.readable && (lc.phase == phIdle || lc.phase == phHead) {
		p, err := lc.read()
		if err != nil {
			// Between requests the client closed; within a head there is
			// nobody left to answer. Either way the conn ends quietly, as
			// badHead ends it.
			lc.end()
			return
		}
		if len(p) == 0 {
			return
		}
		if lc.phase == phIdle {
			lc.startHead()
		}
		if len(lc.in) == 0 {
			// Parsed where it was read; serve keeps what it must.
			lc.in, lc.borrowed = p, true
		} else {
			lc.in = append(lc.in, p...)
		}
		lc.serve()
	}
}

// startHead notes that a request began: timeouts.handshake bounds its head.
func (lc *loopConn) startHead() {
	lc.phase = phHead
	lc.cc.begin = time.Now()
	lc.l.setTimer(lc, lc.cc.st.l.Timeouts.Handshake)
}

// serve starts the request whose head lc.in holds, if it is whole: on the
// loop when it can be served here, else on a goroutine.
func (lc *loopConn) serve() {
	cc := lc.cc
	st := cc.st
	maxHead := int(st.l.HTTP.MaxHeaderBytes)
	end := headEnd(lc.in, 0)
	if end < 0 {
		if len(lc.in) >= maxHead {
			lc.handBack() // the goroutine answers 431
			return
		}
		lc.own()
		return
	}
	if end > maxHead {
		lc.handBack()
		return
	}
	l := lc.l
	l.src.Reset(lc.in)
	br := getReader(&l.src, end) // the whole head fits
	req, err := readRequest(br, maxHead)
	used := len(lc.in) - l.src.Len() - br.Buffered()
	putReader(br)
	if err != nil {
		lc.handBack() // the goroutine answers the bad head, or closes
		return
	}
	res, ok := lc.servable(req)
	if !ok {
		lc.handBack()
		return
	}
	// What follows the head is the next request's (pipelining).
	n := copy(lc.in, lc.in[used:])
	lc.in = lc.in[:n]
	if n == 0 {
		lc.in, lc.borrowed = nil, false // an idle conn holds no buffer
	}
	lc.own()
	lc.first = false
	cc.e = access.Entry{Kind: access.KindRequest, Listener: st.l.Name, Client: cc.peer,
		Method: req.Method, Path: req.URL.Path, Proto: req.Proto, Route: res.Prefix}
	lc.req, lc.res = req, res
	lc.forward()
}

// own copies lc.in out of the loop's read buffer, which the next read
// reuses.
func (lc *loopConn) own() {
	if lc.borrowed {
		lc.in, lc.borrowed = bytes.Clone(lc.in), false
	}
}

// servable reports whether req is one the loop serves, and its route: a
// well-formed request without a body, not an upgrade, for a pool. Answers
// wslb makes itself (errors, redirects, static files, ACME challenges) and
// requests with a body are the goroutine's.
func (lc *loopConn) servable(req *http.Request) (route.Result, bool) {
	st := lc.cc.st
	h := st.l.HTTP
	if req.ContentLength != 0 || len(req.TransferEncoding) > 0 || h.RedirectHTTPS || checkRequest(req) != "" ||
		st.http01.Challenge(req) != nil {
		return route.Result{}, false
	}
	if token, _ := header.UpgradeToken(req.Header, h.UpgradeProtocols); token != "" {
		return route.Result{}, false
	}
	res := st.routes.Match(req.URL)
	return res, res.Kind == route.Pool && st.pools[res.Pool] != nil
}

// expired ends the phase whose deadline passed, as the goroutine path's
// deadline would.
func (lc *loopConn) expired() {
	cc := lc.cc
	switch lc.phase {
	case phIdle, phLinger:
		lc.end()
	case phHead:
		cc.st.errs.Timeout.Inc() // a slow head: closed without an answer (badHead)
		lc.end()
	case phBackend:
		lc.backendExpired()
	case phWrite:
		cc.clientWriteFailed(os.ErrDeadlineExceeded)
		lc.keep, lc.lingering = false, false
		lc.done()
	}
}

// canceled ends lc for a drain: at once when it waits for a request, as a
// drain closes a goroutine's conn; a request in flight ends as the closed
// conns would end it there, its access line naming the drain.
func (lc *loopConn) canceled() {
	if lc.fd < 0 {
		return
	}
	switch lc.phase {
	case phBackend, phWrite:
		cc := lc.cc
		cc.e.Status = statusClientClosed
		cc.e.Reason = endReason(lc.ctx, "client")
		lc.finishBackend()
		lc.l.w.logRequest(cc, cc.begin)
	}
	lc.end()
}

// end closes the client conn and lets go of everything lc holds.
func (lc *loopConn) end() {
	if lc.fd < 0 {
		return
	}
	l := lc.l
	lc.finishBackend()
	l.stopTimer(lc)
	if lc.slot >= 0 {
		l.unwatch(lc.slot, lc.fd, false)
	}
	poller.Close(lc.fd)
	lc.fd = -1
	lc.in, lc.out = nil, nil
	lc.leave()
	lc.release()
}

// leave ends lc's time on the loop: the drain watch and the count. The
// hold stays with the conn.
func (lc *loopConn) leave() {
	if lc.stopWatch != nil {
		lc.stopWatch()
	}
	if lc.onLoop {
		lc.onLoop = false
		lc.l.w.px.loopConns.Add(-1)
	}
}
