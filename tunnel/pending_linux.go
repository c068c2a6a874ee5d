//go:build linux

package tunnel

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/wslb/wslb/poller"
	"golang.org/x/sys/unix"
)

// A handshake on the loop (Handshake) is a loopTunnel whose pending field is
// set: both sockets are registered once, as a tunnel's are, so the tunnel
// that follows needs no epoll_ctl of its own, and no goroutine wakes between
// the connect and the tunnel. While pending, events only set the sockets'
// readiness; the backend's drive the handshake, the client's wait for the
// tunnel (bytes it sends meanwhile are read once it opens).

// pending is a loopTunnel's handshake while it lasts.
type pending struct {
	h        *Handshake
	phase    phase
	head     []byte        // what is left of h.Head to write
	got      []byte        // the answer so far, once one read did not hold its head
	deadline time.Duration // loop clock: the connect's or the answer's; 0 is none
	answerBy time.Time     // the answer's deadline, for HandBack
	unwatch  func() bool   // stops the watch on the conn's ctx
	// errored: epoll reported EPOLLERR or EPOLLHUP on the backend socket,
	// so the connect's outcome is read (SO_ERROR) rather than assumed.
	errored bool
}

type phase uint8

const (
	connecting phase = iota
	sending          // the head
	answering
)

// Handshake runs h on one of e's loops, for client, a conn of the caller's
// that the engine owns from the call on (as Start's); h.Backend likewise.
// It returns at once. Cancelling ctx ends the handshake (Back, Canceled) or,
// once open, the tunnel, as Start's ctx does. e must not be nil.
func (e *Engine) Handshake(ctx context.Context, client net.Conn, h *Handshake) {
	cfd, err := -1, error(nil)
	canceled := ctx.Err() != nil
	if canceled {
		// Drained while the handshake was being set up.
		client.Close()
		err = context.Cause(ctx)
	} else {
		cfd, err = detach(client)
	}
	if err != nil {
		unix.Close(h.Backend)
		go h.Back(HandBack{Client: -1, Backend: -1, Err: err, Canceled: canceled})
		return
	}
	hs := &pending{h: h, head: h.Head}
	t := &loopTunnel{fd: [2]int32{clientSide: int32(cfd), backendSide: int32(h.Backend)}, slot: -1, hidx: -1, pending: hs}
	t.l = e.pick()
	if !h.ConnectBy.IsZero() {
		hs.deadline = max(h.ConnectBy.Sub(t.l.start), 1)
	}
	unwatch := context.AfterFunc(ctx, func() { t.cancel(context.Cause(ctx)) })
	hs.unwatch = unwatch
	// Only what the end needs: the handshake (h, its callbacks and through
	// them the request l7 served) must not live as long as the tunnel.
	done := h.Done
	t.done = func(s Stats) {
		unwatch()
		done(s)
	}
	t.l.add(t)
}

// pendingEvent records what epoll reported for one socket of a pending
// handshake, and moves the handshake on when it is the backend's.
func (t *loopTunnel) pendingEvent(s side, ev uint32) {
	// An error is read by the next read (the tunnel's, for the client).
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		t.readable[s] = true
	}
	if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP) != 0 {
		t.rdhup[s] = true
	}
	if ev&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		t.writable[s] = true
	}
	if s == backendSide {
		t.pending.errored = t.pending.errored || ev&(unix.EPOLLHUP|unix.EPOLLERR) != 0
		t.handshake()
	}
}

// handshake takes the pending handshake as far as it goes now: the
// connect's outcome, the head, the answer.
func (t *loopTunnel) handshake() {
	hs, fd := t.pending, int(t.fd[backendSide])
	if hs.phase == connecting {
		if !t.writable[backendSide] {
			return
		}
		if err := hs.h.Dialed(fd, hs.errored); err != nil {
			t.giveBack(nil, err)
			return
		}
		hs.phase = sending
		hs.answerBy = time.Time{}
		hs.deadline = 0
		if d := hs.h.AnswerWithin; d > 0 {
			hs.deadline = t.l.now + d
			hs.answerBy = t.l.start.Add(hs.deadline)
		}
		t.rearm(hs.deadline)
	}
	for hs.phase == sending {
		if !t.writable[backendSide] {
			return
		}
		n, err := poller.Write(fd, hs.head)
		switch {
		case err == unix.EAGAIN:
			t.writable[backendSide] = false
			return
		case err != nil:
			t.giveBack(nil, fmt.Errorf("write request head: %w", err))
			return
		}
		if hs.head = hs.head[n:]; len(hs.head) == 0 {
			hs.phase = answering
		}
	}
	t.answer()
}

// answer reads what the backend answered and asks Answer about it, until
// the socket is drained or Answer decided.
func (t *loopTunnel) answer() {
	hs, l, fd := t.pending, t.l, int(t.fd[backendSide])
	for t.readable[backendSide] {
		n, err := poller.Read(fd, l.buf)
		switch {
		case err == unix.EAGAIN:
			t.readable[backendSide] = false
			return
		case err != nil:
			t.giveBack(hs.got, fmt.Errorf("read answer: %w", err))
			return
		case n == 0:
			err := io.EOF
			if len(hs.got) > 0 {
				err = io.ErrUnexpectedEOF
			}
			t.giveBack(hs.got, err)
			return
		}
		if n < len(l.buf) && !t.rdhup[backendSide] {
			t.readable[backendSide] = false // drained: the next byte is a new edge
		}
		p := l.buf[:n]
		if hs.got != nil {
			hs.got = append(hs.got, p...)
			p = hs.got
		}
		v := hs.h.Answer(p)
		switch {
		case v.Switch:
			t.open(v, p)
			return
		case !v.More || len(p) >= hs.h.MaxAnswer:
			t.giveBack(p, nil)
			return
		case hs.got == nil:
			hs.got = bytes.Clone(p) // the loop's buffer is for the next read
		}
	}
}

// open turns the handshake into its tunnel, in place: the answer goes to
// the client, then what followed its head, and the client's early bytes to
// the backend, as Start writes a Relay's bytes read ahead.
func (t *loopTunnel) open(v Verdict, p []byte) {
	hs, l := t.pending, t.l
	r := &hs.h.Relay
	t.pending = nil
	t.idle, t.live, t.fullClose = r.Idle, [2]Adder{clientSide: r.Rx, backendSide: r.Tx}, r.FullClose || r.WebSocket
	rest := p[v.Head:]
	if r.WebSocket {
		t.ws = &frames{wait: r.closeWait(), cut: r.Cut}
		t.ws.t[clientSide].Feed(r.ToBackend, false)
		t.ws.t[backendSide].Feed(rest, false)
	}
	hs.h.Opened(t.cancel)
	t.last = l.now
	t.rearm(t.due())
	// The switch answer is not the tunnel's bytes, as on the goroutine
	// relay; a client socket too full to take it whole (never a fresh
	// one in practice) gets the rest from a pipe, counted when flushed.
	t.push(backendSide, v.ToClient, false)
	if !t.ended {
		t.push(backendSide, rest, true)
	}
	if !t.ended {
		t.push(clientSide, r.ToBackend, true)
	}
	if !t.ended {
		t.progress()
	}
}

// rearm moves t's entry in the loop's heap to deadline, or out of it
// when deadline is 0 (or, open, t has no idle timeout).
func (t *loopTunnel) rearm(deadline time.Duration) {
	h := &t.l.heap
	if deadline == 0 || t.pending == nil && t.idle == 0 {
		if t.hidx >= 0 {
			h.remove(int(t.hidx))
		}
		return
	}
	t.deadline = deadline
	if t.hidx >= 0 {
		h.fix(int(t.hidx))
	} else {
		h.push(t)
	}
}

// pendingTimeout ends a handshake whose connect or answer took too long.
func (t *loopTunnel) pendingTimeout() {
	err := fmt.Errorf("connect: %w", os.ErrDeadlineExceeded)
	if t.pending.phase != connecting {
		err = fmt.Errorf("answer: %w", os.ErrDeadlineExceeded)
	}
	t.giveBack(t.pending.got, err)
}

// giveBack takes the handshake's sockets out of the loop and hands them, with
// read (copied), to Back on a goroutine of its own. A socket whose connect
// failed is closed.
func (t *loopTunnel) giveBack(read []byte, err error) {
	hs, l := t.pending, t.l
	t.ended = true
	hb := HandBack{Client: int(t.fd[clientSide]), Backend: int(t.fd[backendSide]), Connected: hs.phase != connecting,
		Read: bytes.Clone(read), Deadline: hs.answerBy, Err: err}
	// Back wraps them again (net.FileConn), which dups them: a registration
	// lives as long as any descriptor of the open file does.
	l.set.Del(hb.Client)
	if hb.Connected {
		l.set.Del(hb.Backend)
	} else {
		unix.Close(hb.Backend)
		hb.Backend = -1
	}
	t.forget()
	go func() {
		hs.unwatch()
		hs.h.Back(hb)
	}()
}

// pendingEnded reports a handshake ended before it opened (cancelled, the
// engine closing): its sockets are closed already.
func (t *loopTunnel) pendingEnded(e End, err error) {
	hs := t.pending
	hb := HandBack{Client: -1, Backend: -1, Connected: hs.phase != connecting, Err: err}
	if e == EndCanceled {
		hb.Err, hb.Canceled = t.cause, true
	}
	go func() {
		hs.unwatch()
		hs.h.Back(hb)
	}()
}
