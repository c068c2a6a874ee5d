//go:build linux

package l7

import (
	"os"

	"golang.org/x/sys/unix"

	"github.com/wslb/wslb/poller"
)

// How the event loop writes answers: straight to the client's socket while
// it takes them, the rest as it drains, then the next request, or a linger
// and the close.

// answer writes an answer of wslb's own, made by f with the goroutine
// path's code (respond and its callers), and goes on to the next request,
// or lingers and closes when f said the conn ends.
func (lc *loopConn) answer(f func() bool) {
	lc.finishBackend()
	cc := lc.cc
	cc.bw = getWriter(&lc.wr)
	keep := f()
	putWriter(cc.bw)
	cc.bw = nil
	lc.respond(keep)
}

// respond finishes the request once its answer is written (to the socket or
// to lc.out): the access line, then the next request, or the end.
func (lc *loopConn) respond(keep bool) {
	if lc.fd < 0 {
		return
	}
	lc.keep = keep && lc.wr.err == nil
	if lc.wr.err != nil && lc.cc.e.Reason == "" {
		lc.cc.clientWriteFailed(lc.wr.err)
	}
	if len(lc.out) > 0 && lc.wr.err == nil {
		lc.phase = phWrite
		lc.l.setTimer(lc, lc.cc.st.l.Timeouts.Send)
		return
	}
	lc.done()
}

// done logs the request whose answer is out and goes on.
func (lc *loopConn) done() {
	lc.l.w.logRequest(lc.cc, lc.cc.begin)
	switch {
	case lc.lingering && lc.wr.err == nil:
		lc.startLinger()
	case lc.keep:
		lc.idle()
	default:
		lc.end()
	}
}

// flush writes what the client's socket did not take yet.
func (lc *loopConn) flush() {
	if !lc.writable || len(lc.out) == 0 {
		return
	}
	n, err := lc.wr.write(lc.out)
	lc.out = lc.out[n:]
	switch {
	case err != nil:
		lc.cc.clientWriteFailed(err)
		lc.keep, lc.lingering = false, false
		lc.out = nil
		lc.done()
	case len(lc.out) == 0:
		lc.out = nil
		lc.done()
	case n > 0:
		lc.l.setTimer(lc, lc.cc.st.l.Timeouts.Send) // per write, as deadlineWriter arms it
	}
}

// startLinger half-closes and reads what the client still sends, for a
// moment, before closing: see lingerClose.
func (lc *loopConn) startLinger() {
	lc.phase = phLinger
	lc.lingerLeft = lingerMax
	_ = unix.Shutdown(lc.fd, unix.SHUT_WR)
	lc.l.setTimer(lc, lingerTime)
	lc.drainLinger()
}

func (lc *loopConn) drainLinger() {
	for lc.fd >= 0 && lc.readable {
		p, err := lc.read()
		if err != nil || len(p) >= lc.lingerLeft {
			lc.end()
			return
		}
		lc.lingerLeft -= len(p)
	}
}

// loopWriter is what the client's bufio.Writer writes to on the loop:
// straight to the socket while it takes the bytes, then into lc.out, which
// flush writes as the socket drains. Nothing waits: the answer is whole in
// memory, at most maxLoopResponse and a head.
type loopWriter struct {
	lc  *loopConn
	err error // the first write error (the client went away)
}

func (w *loopWriter) Write(p []byte) (int, error) {
	lc := w.lc
	if w.err != nil {
		return 0, w.err
	}
	total := len(p)
	if len(lc.out) == 0 && lc.writable {
		n, err := w.write(p)
		if err != nil {
			return n, err
		}
		p = p[n:]
	}
	lc.out = append(lc.out, p...)
	return total, nil
}

// write writes p to the client's socket once: how much it took, and an
// error only when the client is gone.
func (w *loopWriter) write(p []byte) (int, error) {
	lc := w.lc
	for {
		n, err := poller.Write(lc.fd, p)
		switch {
		case err == unix.EAGAIN:
			lc.writable = false
			return 0, nil
		case err != nil:
			w.err = os.NewSyscallError("write", err)
			return 0, w.err
		}
		if n < len(p) {
			lc.writable = false
		}
		return n, nil
	}
}
