//go:build linux

package l7

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wslb/wslb/fdbudget"
	"github.com/wslb/wslb/poller"
	"github.com/wslb/wslb/pool"
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

	readiness
	reused, connecting bool
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
	be.note(ev)
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
	poller.Close(be.fd)
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
	err := upstream.DialDone(be.b, be.fd, be.errored)
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
	// The head goes out at once; send keeps a copy of what the socket did
	// not take, so the loop's buffer serves every request.
	head := &lc.l.head
	head.Reset()
	if err := sendHead(head, lc.out7); err != nil {
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
