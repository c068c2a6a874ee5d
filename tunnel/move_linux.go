//go:build linux

package tunnel

import (
	"fmt"

	"github.com/wslb/wslb/poller"
	"golang.org/x/sys/unix"
)

// cancel ends t with EndCanceled and the given cause, from any goroutine. It
// does nothing once t has ended. It is the stop func Engine.Start returns.
func (t *loopTunnel) cancel(cause error) {
	l := t.l
	l.mu.Lock()
	first := t.cause == nil
	if first {
		t.cause = cause
	}
	l.mu.Unlock()
	if first {
		l.in.Put(note{t: t, cancel: true}) // refused: closing ends t anyway
	}
}

// event records what epoll reported for one socket and moves what can move.
func (t *loopTunnel) event(s side, ev uint32) {
	if t.ended {
		return
	}
	if t.pending != nil {
		t.pendingEvent(s, ev)
		return
	}
	if ev&unix.EPOLLERR != 0 {
		err := unix.ENOTCONN
		if n, gerr := unix.GetsockoptInt(int(t.fd[s]), unix.SOL_SOCKET, unix.SO_ERROR); gerr == nil && n != 0 {
			err = unix.Errno(n)
		}
		t.end(classify(err, s.end(), s.end()), err)
		return
	}
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP) != 0 {
		t.readable[s] = true
	}
	if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP) != 0 {
		t.rdhup[s] = true
	}
	if ev&(unix.EPOLLOUT|unix.EPOLLHUP) != 0 {
		t.writable[s] = true
	}
	t.progress()
}

// progress moves both directions as far as they go now, and ends a
// graceful close that has nothing left to wait for.
func (t *loopTunnel) progress() {
	more := t.move(clientSide)
	if !t.ended {
		more = t.move(backendSide) || more
	}
	if !t.ended && t.closingNow() != nil {
		t.settle()
	}
	if more && !t.ended && !t.queued {
		t.queued = true
		t.l.ready = append(t.l.ready, t)
	}
}

// move moves bytes from socket src to the other one until one of them would
// block, src ends, or the budget is spent; it reports whether src may still
// have bytes (budget spent).
func (t *loopTunnel) move(src side) bool {
	dst := src.peer()
	d := &t.dirs[src]
	if cl := t.closingNow(); cl != nil && cl.past[src] {
		return t.drop(src)
	}
	if d.n > 0 && !t.flush(src) {
		return false
	}
	if d.eof {
		return false
	}
	l := t.l
	for range budget {
		if !t.readable[src] || !t.writable[dst] {
			return false
		}
		// A WebSocket frame's header is read through the buffer, which
		// feeds the tracker; only payload is spliced.
		if !d.bulk || t.ws != nil && !t.ws.spliceable(src) {
			n, err := poller.Read(int(t.fd[src]), l.buf)
			if !t.readDone(src, n, err) {
				return false
			}
			if n < len(l.buf) && !t.rdhup[src] {
				t.readable[src] = false // drained: the next byte is a new edge
			} else {
				d.bulk = true
			}
			p := l.buf[:n]
			if t.ws != nil {
				p = t.ws.track(src, p)
			}
			if !t.send(src, p) {
				return false
			}
			if cl := t.closingNow(); cl != nil && cl.past[src] {
				return t.drop(src)
			}
			continue
		}
		if l.pipe == nil && !l.refill() {
			t.end(EndError, errNoPipe)
			return false
		}
		limit := pipeSize
		if t.ws != nil {
			limit = t.ws.spliceMax(src)
		}
		n, err := poller.Splice(int(t.fd[src]), l.pipe.w, limit)
		if !t.readDone(src, int(n), err) {
			return false
		}
		if t.ws != nil {
			t.ws.skip(src, int(n))
		}
		// A short splice in a stream is common (the reader caught up);
		// only a message-sized one sends the direction back to copying,
		// else a stream would pay two copies for every slack moment.
		d.bulk = n >= messageSize
		// The bytes now sit in the loop's pipe. They are this direction's
		// until written: if the peer cannot take them all, the direction
		// keeps the pipe and the loop takes another.
		d.p, d.n = l.pipe, int32(n)
		l.pipe = nil
		if !t.flush(src) {
			return false
		}
		if cl := t.closingNow(); cl != nil && cl.past[src] {
			return t.drop(src)
		}
	}
	return t.readable[src]
}

// readDone handles what a read from src returned, and reports whether n > 0
// bytes came (else the direction stops for now, or the tunnel ended).
func (t *loopTunnel) readDone(src side, n int, err error) bool {
	switch {
	case err == unix.EAGAIN:
		t.readable[src] = false
	case err != nil:
		t.end(classify(err, src.end(), EndError), err)
	case n == 0:
		t.readable[src] = false
		t.eof(src)
	default:
		return true
	}
	return false
}

// send writes p, read from src, to the other socket. What the peer cannot
// take now waits in a pipe of the direction's, as spliced bytes do; it
// reports whether all of p went.
func (t *loopTunnel) send(src side, p []byte) bool { return t.push(src, p, true) }

// push is send, for bytes that are the tunnel's (counted) or not (an
// upgrade's answer, which precedes them). Behind bytes the direction already
// holds, p joins them in its pipe.
func (t *loopTunnel) push(src side, p []byte, counted bool) bool {
	dst, d := src.peer(), &t.dirs[src]
	if len(p) == 0 {
		return true
	}
	n := 0
	if d.n == 0 {
		var err error
		n, err = poller.Write(int(t.fd[dst]), p)
		switch {
		case err == unix.EAGAIN:
			n = 0
		case err != nil:
			t.end(classify(err, dst.end(), dst.end()), err)
			return false
		}
		if counted {
			t.sent(src, n)
		}
		if n == len(p) {
			return true
		}
		t.writable[dst] = false
	}
	pp, err := d.p, error(nil)
	if pp == nil {
		pp, err = t.l.getPipe()
	}
	if err == nil {
		// At most copySize bytes (an upgrade's answer: MaxAnswer) into a
		// pipe of pipeSize: it takes them all.
		_, err = poller.Write(pp.w, p[n:])
	}
	if err != nil {
		if pp != nil && d.p == nil {
			pp.close()
		}
		t.end(EndError, err)
		return false
	}
	d.p, d.n = pp, d.n+int32(len(p)-n)
	return false
}

// sent counts n bytes that src's direction wrote.
func (t *loopTunnel) sent(src side, n int) {
	if n <= 0 {
		return
	}
	t.count[src] += int64(n)
	if a := t.live[src]; a != nil {
		a.Add(float64(n))
	}
	t.last = t.l.now
}

// flush writes the bytes direction src holds in its pipe to the other
// socket, and reports whether all went. A drained pipe goes back to the loop.
func (t *loopTunnel) flush(src side) bool {
	dst := src.peer()
	d := &t.dirs[src]
	for d.n > 0 {
		if !t.writable[dst] {
			return false
		}
		n, err := poller.Splice(d.p.r, int(t.fd[dst]), int(d.n))
		switch {
		case err == unix.EAGAIN:
			t.writable[dst] = false
			return false
		case err != nil:
			// A write fails because the peer is gone, whichever way.
			t.end(classify(err, dst.end(), dst.end()), err)
			return false
		}
		d.n -= int32(n)
		t.sent(src, int(n))
	}
	t.l.putPipe(d.p)
	d.p = nil
	return true
}

// eof handles the end of socket src's stream: the first side to end decides
// the reason; during a graceful close it only settles src's direction; with
// FullClose, or when the other side had already ended, the tunnel ends;
// otherwise the peer gets a half-close and may still answer.
func (t *loopTunnel) eof(src side) {
	dst := src.peer()
	t.dirs[src].eof = true
	if !t.firstSet {
		t.first, t.firstSet = src, true
	}
	if t.closingNow() != nil {
		t.ws.ended(src)
		return
	}
	if t.fullClose || t.dirs[dst].eof {
		t.end(t.first.end(), nil)
		return
	}
	if err := unix.Shutdown(int(t.fd[dst]), unix.SHUT_WR); err != nil && err != unix.ENOTCONN {
		t.end(EndError, fmt.Errorf("shutdown: %w", err))
	}
}

// end closes t's sockets and pipes and reports it, once. A graceful close
// under way reports what began it, unless it found no frame boundary; a
// pending cancel wins over e (unless e is EndIdle), and after a half-close
// an EndError or an EndIdle is reported as the side whose stream ended
// first, as the goroutine relay reports it: the first event wins.
func (t *loopTunnel) end(e End, err error) {
	if t.ended {
		return
	}
	t.ended = true
	l := t.l
	for _, fd := range t.fd {
		// Closing the only descriptor also removes it from the epoll set.
		poller.Close(int(fd))
	}
	for i := range t.dirs {
		if p := t.dirs[i].p; p != nil {
			p.close()
			t.dirs[i].p = nil
		}
	}
	t.forget()
	l.mu.Lock()
	canceled := t.cause != nil
	l.mu.Unlock()
	cl := t.closingNow()
	switch {
	case err == errFramesLost:
	case cl != nil:
		e, err = cl.end, nil
	case canceled && e != EndIdle:
		e, err = EndCanceled, nil
	case t.firstSet && (e == EndError || e == EndIdle):
		e = t.first.end()
	}
	t.finish(e, err)
}

// forget takes the ended t out of its loop's heap, slots and count.
func (t *loopTunnel) forget() {
	l := t.l
	if t.hidx >= 0 {
		l.heap.remove(int(t.hidx))
	}
	if t.slot >= 0 && int(t.slot) < len(l.slots) && l.slots[t.slot] == t {
		l.slots[t.slot] = nil
		l.free = append(l.free, t.slot)
	}
	l.live.Add(-1)
}

// finish reports the ended tunnel on a goroutine of its own: done may log
// or take locks, and the loop must not wait for it.
func (t *loopTunnel) finish(e End, err error) {
	if t.pending != nil {
		t.pendingEnded(e, err)
		return
	}
	s := Stats{Rx: t.count[clientSide], Tx: t.count[backendSide], End: e, Err: err}
	if e == EndCanceled {
		s.Cause = t.cause
	}
	if cl := t.closingNow(); cl != nil {
		if cl.sent {
			s.Closed = GoingAway
		}
		if cl.unwatch != nil {
			cl.unwatch()
		}
	}
	go t.done(s)
}
