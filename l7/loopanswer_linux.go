//go:build linux

package l7

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"

	"golang.org/x/sys/unix"

	"github.com/wslb/wslb/poller"
)

// The answer to a request on the event loop: read on readiness, relayed
// whole once it is, or handed to a goroutine when the loop does not relay
// it, and when the backend pauses with its body not yet whole (a stream
// must reach the client as it comes).

// readAnswer reads the backend's answer while there is something to read,
// and relays it once it is whole.
func (lc *loopConn) readAnswer(be *loopBackend) {
	buf := lc.l.rbuf
	for lc.be == be && be.readable {
		n, err := poller.Read(be.fd, buf)
		switch {
		case err == unix.EAGAIN:
			be.readable = false
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
	if lc.be == be && headEnd(be.resp, 0) >= 0 {
		// The backend paused with a head out and its body short of its
		// end: a stream (Server-Sent Events, a long poll's chunks) or a
		// slow backend, which the goroutine path relays as it comes.
		lc.handBackAnswer(be, be.resp)
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
	bc := backendConn{b: be.b, br: rbr, reused: be.reused, whole: true}
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
