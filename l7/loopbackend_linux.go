//go:build linux

package l7

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wslb/wslb/fdbudget"
	"github.com/wslb/wslb/poller"
	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/tunnel"
	"github.com/wslb/wslb/upstream"
)

// loopBackend is a backend conn on the event loop: serving a loopConn's
// request (owner), or idle in the loop's cache (owner nil), where any event
// but writability means the backend closed it or broke the protocol.
type loopBackend struct {
	l     *evLoop
	fd    int // -1 once closed or handed back
	slot  int32
	b     *pool.Backend
	owner *loopConn

	reused, connecting bool
	readable, writable bool
	rdhup              bool
	got                bool      // a byte of the answer arrived
	head               []byte    // request bytes the socket did not take yet
	resp               []byte    // the answer so far, when it came in pieces
	dialed             time.Time // when the connect began
}

func (be *loopBackend) event(ev uint32) {
	if be.fd < 0 {
		return
	}
	if be.owner == nil {
		if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			be.l.dropIdle(be)
		}
		return
	}
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		be.readable = true
	}
	if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP) != 0 {
		be.rdhup = true
	}
	if ev&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		be.writable = true
	}
	lc := be.owner
	switch {
	case be.connecting:
		if be.writable {
			lc.connected(be)
		}
	case len(be.head) > 0:
		if be.writable {
			lc.send(be, be.head)
		}
	case be.readable:
		lc.readAnswer(be)
	}
}

// close closes the conn for good.
func (be *loopBackend) close() {
	if be.fd < 0 {
		return
	}
	be.l.unwatch(be.slot, be.fd, false)
	unix.Close(be.fd)
	be.fd = -1
	be.owner = nil
}

// forward sends the request being served to a backend of its pool.
func (lc *loopConn) forward() {
	cc := lc.cc
	p := cc.st.pools[lc.res.Pool]
	out, client := outgoing(cc, lc.req, lc.res)
	lc.out7 = out
	lc.ureq = cc.upstreamRequest(p)
	lc.ureq.ClientIP = client
	lc.phase = phBackend
	lc.connect()
}

// connect reserves a backend (another than lc.tried after a failed dial)
// and takes an idle conn to it or dials it, as upstream.Dialer.Connect does.
func (lc *loopConn) connect() {
	cc := lc.cc
	st := cc.st
	b, err := st.dial.Reserve(lc.ureq, lc.tried)
	if err != nil {
		lc.connectFailed(err)
		return
	}
	if b.TLS() != nil {
		// A reload gave the pool TLS after this conn came to the loop.
		b.Release()
		lc.connectFailed(&upstream.Error{Reason: upstream.ReasonDial, Err: fmt.Errorf("dial %s: TLS backends are dialed on a goroutine", b)})
		return
	}
	lc.b = b
	if !st.l.HTTP.PreserveHost {
		lc.out7.Host = b.String()
	}
	if be := lc.l.takeIdle(b); be != nil {
		lc.use(be)
		return
	}
	if be := lc.l.adopt(b); be != nil {
		lc.use(be)
		return
	}
	if err := st.dial.Spare(b); err != nil {
		lc.b = nil // Spare released it
		lc.connectFailed(err)
		return
	}
	lc.dial(b)
}

// dial starts a non-blocking connect to b; connected finishes it.
func (lc *loopConn) dial(b *pool.Backend) {
	start := time.Now()
	fd, _, err := lc.cc.st.dial.StartDial(b)
	if err != nil {
		lc.dialFailed(b, start, err)
		return
	}
	be := &loopBackend{l: lc.l, fd: fd, b: b, owner: lc, connecting: true, dialed: start}
	if be.slot, err = lc.l.watch(fd, be); err != nil {
		unix.Close(fd)
		lc.dialFailed(b, start, err)
		return
	}
	lc.be = be
	lc.l.setTimer(lc, lc.cc.st.dial.Timeout)
}

// connected runs when a connect ended (the socket turned writable).
func (lc *loopConn) connected(be *loopBackend) {
	err := upstream.DialDone(be.b, be.fd)
	if err != nil {
		be.close()
		lc.be = nil
		lc.dialFailed(be.b, be.dialed, err)
		return
	}
	lc.observeDial(be.b, be.dialed)
	be.connecting = false
	lc.use(be)
}

func (lc *loopConn) observeDial(b *pool.Backend, start time.Time) {
	st := lc.cc.st
	st.m.BackendConnect.WithLabelValues(lc.ureq.Pool.Name(), b.String()).Observe(time.Since(start).Seconds())
}

// dialFailed handles a connect to b that failed: a replay's ends the
// request (as replay does on a goroutine); a first one is counted and
// reported and another backend is tried, once (Connect).
func (lc *loopConn) dialFailed(b *pool.Backend, start time.Time, err error) {
	lc.observeDial(b, start)
	cc := lc.cc
	st := cc.st
	if lc.counted {
		// A replay: the backend stays reserved, as on a goroutine.
		if fdbudget.Exhausted(err) {
			st.errs.Limit.Inc()
			cc.e.Reason = upstream.ReasonLimit
			lc.answer(func() bool {
				return cc.respondPool(lc.req, lc.res.Pool, http.StatusServiceUnavailable, "too many connections")
			})
			return
		}
		st.errs.Dial.Inc()
		lc.answer(func() bool { return cc.respondPool(lc.req, lc.res.Pool, http.StatusBadGateway, "backend unreachable") })
		return
	}
	lc.b = nil // Failed releases it
	if uerr := st.dial.Failed(lc.ureq, b, err); uerr != nil {
		lc.connectFailed(uerr)
		return
	}
	if lc.tried != nil {
		lc.connectFailed(&upstream.Error{Reason: upstream.ReasonDial, Err: errors.New("dial failed twice")})
		return
	}
	lc.tried = b
	lc.connect()
}

// connectFailed answers a request that got no backend conn.
func (lc *loopConn) connectFailed(err error) {
	cc := lc.cc
	lc.answer(func() bool { return cc.respondConnectError(lc.req, lc.res.Pool, err) })
}

// use sends the request on be, a conn to lc.b.
func (lc *loopConn) use(be *loopBackend) {
	cc := lc.cc
	lc.be, be.owner = be, lc
	// Named once it has a conn, as Connect's caller names it: a failed
	// dial's line names none.
	cc.e.Backend = be.b.String()
	if !lc.counted {
		mc := cc.seriesFor(lc.l.w, lc.ureq.Pool, be.b).conn
		mc.Total.Inc()
		mc.Active.Inc()
		cc.txBytes = mc.Tx
		lc.counted = true
	}
	// timeouts.idle bounds the write and the answer, as roundTrip's deadline.
	lc.l.setTimer(lc, cc.st.l.Timeouts.Idle)
	var head bytes.Buffer
	bw := getWriter(&head)
	err := writeRequestHead(bw, lc.out7)
	if err == nil {
		err = bw.Flush()
	}
	putWriter(bw)
	if err != nil {
		lc.backendFailed(be, err)
		return
	}
	lc.send(be, head.Bytes())
}

// send writes p, the request or what is left of it, to be.
func (lc *loopConn) send(be *loopBackend, p []byte) {
	for len(p) > 0 {
		n, err := poller.Write(be.fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			be.writable = false
			be.head = append(be.head[:0], p...)
			return
		case err != nil:
			lc.backendFailed(be, os.NewSyscallError("write", err))
			return
		}
		p = p[n:]
	}
	be.head = nil
	if be.readable {
		lc.readAnswer(be)
	}
}

// readAnswer reads the backend's answer while there is something to read,
// and relays it once it is whole.
func (lc *loopConn) readAnswer(be *loopBackend) {
	buf := lc.l.rbuf
	for lc.be == be && be.readable {
		n, err := poller.Read(be.fd, buf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			be.readable = false
			return
		case err != nil:
			lc.answerCut(be, os.NewSyscallError("read", err))
			return
		case n == 0:
			lc.answerCut(be, io.EOF)
			return
		}
		if n < len(buf) && !be.rdhup {
			be.readable = false
		}
		be.got = true
		data := buf[:n]
		if len(be.resp) > 0 {
			be.resp = append(be.resp, data...)
			data = be.resp
		}
		if !lc.tryAnswer(be, data) && len(be.resp) == 0 {
			be.resp = append(be.resp, data...) // it was the loop's buffer
		}
	}
}

// answerCut handles a backend conn that ended before its answer was whole:
// once a head has come, the goroutine path has relayed it and streams the
// body until the cut, so the answer goes there with what came of it; before
// that, it is a backend that failed.
func (lc *loopConn) answerCut(be *loopBackend, err error) {
	if headEnd(be.resp, 0) >= 0 {
		lc.handBackAnswer(be, be.resp)
		return
	}
	lc.backendFailed(be, err)
}

// backendFailed handles a backend conn that failed before its answer was
// whole: a kept-alive conn that died before answering a request that can
// be sent again is replaced by a new one to the same backend (replay);
// anything else is answered as roundTrip's caller answers it.
func (lc *loopConn) backendFailed(be *loopBackend, err error) {
	be.close()
	lc.be = nil
	cc := lc.cc
	if be.reused && !be.got && replayable(lc.out7) && nothingReceived(err) {
		lc.dial(be.b)
		return
	}
	lc.answer(func() bool { return cc.respondBackendError(lc.ctx, lc.req, lc.res.Pool, err, nil) })
}

// backendExpired ends the backend phase whose timeout passed: a connect
// (timeouts.connect) as a failed dial, an answer (timeouts.idle) with 504.
func (lc *loopConn) backendExpired() {
	be := lc.be
	if be != nil && be.connecting {
		be.close()
		lc.be = nil
		lc.dialFailed(be.b, be.dialed, fmt.Errorf("dial %s: %w", be.b, os.ErrDeadlineExceeded))
		return
	}
	if be != nil {
		be.close()
		lc.be = nil
	}
	cc := lc.cc
	lc.answer(func() bool {
		return cc.respondBackendError(lc.ctx, lc.req, lc.res.Pool, os.ErrDeadlineExceeded, nil)
	})
}

// tryAnswer relays the answer in data if it is whole and the loop relays
// it, or hands it to a goroutine. It reports false when more is needed.
func (lc *loopConn) tryAnswer(be *loopBackend, data []byte) bool {
	l := lc.l
	l.src.Reset(data)
	br := getReader(&l.src, minBuffer)
	resp, err := http.ReadResponse(br, lc.out7)
	complete := err == nil
	switch {
	case err != nil && (errors.Is(err, io.ErrUnexpectedEOF) || err == io.EOF):
		// The head is not whole yet.
	case err != nil:
		putReader(br)
		lc.backendFailed(be, err)
		return true
	case resp.StatusCode < http.StatusOK || !bodyAllowed(lc.req, resp):
	case resp.ContentLength >= 0:
		complete = int64(br.Buffered()+l.src.Len()) >= resp.ContentLength
	case len(resp.TransferEncoding) > 0:
		_, err = io.Copy(io.Discard, resp.Body)
		complete = err == nil
		if complete {
			l.src.Reset(data)
			br.Reset(&l.src)
			resp, _ = http.ReadResponse(br, lc.out7)
		} else if !errors.Is(err, io.ErrUnexpectedEOF) {
			putReader(br)
			lc.handBackAnswer(be, data) // the goroutine path answers the bad chunks
			return true
		}
	default:
		// A body that ends when the backend closes: streamed on a goroutine.
		putReader(br)
		lc.handBackAnswer(be, data)
		return true
	}
	if complete && resp.StatusCode < http.StatusOK {
		putReader(br)
		lc.handBackAnswer(be, data) // interim answers, or a 101 to a plain request
		return true
	}
	if !complete {
		putReader(br)
		if len(data) >= maxLoopResponse {
			lc.handBackAnswer(be, data)
			return true
		}
		return false
	}
	lc.relay(be, resp, br)
	return true
}

// relay writes the whole answer resp, read from br, to the client with the
// goroutine path's relayResponse, and puts be back in the cache when it
// may carry another request.
func (lc *loopConn) relay(be *loopBackend, resp *http.Response, rbr *bufio.Reader) {
	cc := lc.cc
	l := lc.l
	bc := backendConn{b: be.b, conn: inMemory{}, br: rbr, reused: be.reused}
	cc.bw = getWriter(&lc.wr)
	keep, reusable, err := cc.relayResponse(lc.req, resp, lc.res.Pool, &bc, cc.st.l.Timeouts.Idle)
	putWriter(cc.bw)
	cc.bw = nil
	// Bytes past the answer are something no request asked for.
	clean := rbr.Buffered() == 0 && l.src.Len() == 0
	putReader(rbr)
	lc.be = nil
	be.resp = nil
	// A backend that closed (or sent more) as the answer ended reported it
	// already: no later edge would drop the conn from the cache.
	clean = clean && !be.rdhup && !be.readable
	if err == nil && reusable && clean {
		l.putIdle(be)
	} else {
		be.close()
	}
	lc.finishBackend()
	lc.respond(keep && err == nil)
}

// finishBackend lets go of the request's backend: its conn (closed), its
// active gauge and its reservation.
func (lc *loopConn) finishBackend() {
	if lc.be != nil {
		lc.be.close()
		lc.be = nil
	}
	if lc.counted {
		lc.cc.series.conn.Active.Dec()
		lc.counted = false
	}
	if lc.b != nil {
		lc.b.Release()
		lc.b = nil
	}
}

// inMemory is the backend conn of an answer the loop read whole: the body
// reader arms a read deadline before a read that could block, which
// here never reaches a conn.
type inMemory struct{ net.Conn }

func (inMemory) SetReadDeadline(time.Time) error { return nil }

// takeIdle returns the newest idle conn to b in the loop's cache, or nil.
// Any conn the backend closed while it idled is gone already (dropIdle).
func (l *evLoop) takeIdle(b *pool.Backend) *loopBackend {
	list := l.idle[b]
	n := len(list)
	if n == 0 {
		return nil
	}
	be := list[n-1]
	list[n-1] = nil
	l.idle[b] = list[:n-1]
	b.AddIdle(-1)
	be.reused, be.got, be.resp, be.head = true, false, nil, nil
	be.readable, be.rdhup = false, false
	return be
}

// adopt takes an idle conn to b from the worker's goroutine cache, where
// the first request of every client conn leaves its backend conn, into the
// loop: cheaper than a new dial, for wslb and for the backend.
func (l *evLoop) adopt(b *pool.Backend) *loopBackend {
	c, br, ok := l.w.cache.Get(b)
	if !ok {
		return nil
	}
	if br != nil {
		putReader(br) // empty: Get hands out no conn with bytes waiting
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return nil
	}
	fd, err := tunnel.Detach(tc)
	if err != nil {
		return nil
	}
	be := &loopBackend{l: l, fd: fd, b: b, reused: true}
	if be.slot, err = l.watch(fd, be); err != nil {
		unix.Close(fd)
		return nil
	}
	return be
}

// putIdle keeps be for another request, at most b.IdleMax() per backend,
// evicting the oldest, as pool.IdleCache does.
func (l *evLoop) putIdle(be *loopBackend) {
	b := be.b
	limit := b.IdleMax()
	if limit <= 0 || b.Context().Err() != nil || b.TLS() != nil {
		be.close()
		return
	}
	be.owner = nil
	list := l.idle[b]
	if list == nil {
		// Nobody picks a removed backend: its conns go when it does.
		stop := context.AfterFunc(b.Context(), func() { l.purge(b) })
		l.idleStop[b] = stop
	}
	list = append(list, be)
	b.AddIdle(1)
	for len(list) > limit {
		list[0].close()
		list = list[1:]
		b.AddIdle(-1)
	}
	l.idle[b] = list
}

// dropIdle closes be, idle in the cache: the backend closed it or sent
// something while it idled.
func (l *evLoop) dropIdle(be *loopBackend) {
	list := l.idle[be.b]
	for i, o := range list {
		if o == be {
			l.idle[be.b] = append(list[:i], list[i+1:]...)
			be.b.AddIdle(-1)
			break
		}
	}
	be.close()
}

// purge asks the loop to close the idle conns of b, a removed backend.
func (l *evLoop) purge(b *pool.Backend) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.purges = append(l.purges, b)
	l.wakeLocked()
}

// closeIdle closes every idle conn to b.
func (l *evLoop) closeIdle(b *pool.Backend) {
	for _, be := range l.idle[b] {
		be.close()
		b.AddIdle(-1)
	}
	delete(l.idle, b)
	if stop := l.idleStop[b]; stop != nil {
		stop()
		delete(l.idleStop, b)
	}
}
