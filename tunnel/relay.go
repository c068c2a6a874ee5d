package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"
)

// The goroutine relay: Engine.Start runs a tunnel here when the engine cannot
// take it (a TLS conn, a nil Engine, a non-linux build). Each direction
// copies on a goroutine of its own: between two TCP conns through io.CopyN,
// which splices on Linux; when a side is TLS, or the tunnel carries
// WebSocket (its frames are followed, relayws.go), through a pooled buffer
// taken only while bytes flow (pumpPooled).

// chunk bounds one io.CopyN call: after each chunk the byte counters and the
// idle clock advance. It is large so that bulk streams stay in splice.
const chunk = 1 << 20

// A CopyN call returns only when its chunk is full, or when the read
// deadline wakes it, so a trickle (chat messages, pings) would reach the byte
// counters only at those wake-ups. A direction that moved bytes since its
// last wake-up is woken again after liveWake, so dashboards see its bytes
// within about a second; a quiet one backs off, doubling up to maxWake (or a
// quarter of the idle timeout, if shorter), so tens of thousands of idle
// tunnels cost no timer churn.
const (
	liveWake = time.Second
	maxWake  = time.Minute
)

// run copies between client and backend until the tunnel ends, then closes both
// conns: run owns them from the moment it is called. Cancelling ctx closes them
// early (EndCanceled), a WebSocket tunnel gracefully; the caller reads
// context.Cause(ctx) to tell why.
func (r *Relay) run(ctx context.Context, client, backend net.Conn) Stats {
	t := &tunnel{r: r, client: client, backend: backend, start: time.Now()}
	t.touch()
	up := &pass{dst: backend, src: client, count: &t.rx, live: r.Rx, srcEnd: EndClient, dstEnd: EndBackend}
	down := &pass{dst: client, src: backend, count: &t.tx, live: r.Tx, srcEnd: EndBackend, dstEnd: EndClient}
	if r.WebSocket && readiness(client) != nil && readiness(backend) != nil {
		t.ws = true
		up.fr, down.fr = &passFrames{}, &passFrames{}
		// The first frames may be among the bytes read ahead.
		up.fr.tr.Feed(r.ToBackend, false)
		down.fr.tr.Feed(r.ToClient, false)
		t.unknown.Store(up.fr.tr.Lost() || down.fr.tr.Lost())
	}
	stop := context.AfterFunc(ctx, func() {
		if t.ws {
			t.beginClose(EndCanceled, context.Cause(ctx))
			return
		}
		t.canceled.Store(true)
		t.closeBoth()
	})
	defer stop()

	if t.early(backend, r.ToBackend, &t.rx, r.Rx, EndBackend) && t.early(client, r.ToClient, &t.tx, r.Tx, EndClient) {
		done := make(chan struct{})
		go t.copyClientToBackend(up, done)
		t.copyBackendToClient(down)
		<-done
	}
	t.closeBoth()
	if tm := t.afterClose.Load(); tm != nil {
		tm.Stop()
	}

	st := Stats{Rx: t.rx.Load(), Tx: t.tx.Load()}
	first := t.first.Load()
	c := t.closing.Load()
	if c != nil {
		c.timer.Stop()
		if c.unwatch != nil {
			c.unwatch()
		}
	}
	switch {
	case t.lost.Load():
		st.End, st.Err = EndError, errFramesLost
	case c != nil:
		st.End, st.Cause = c.end, c.cause
		if c.sent.Load() {
			st.Closed = GoingAway
		}
	// The caller may close a conn itself when ctx ends (l7 ties its client
	// conn to ctx), and the copies can fail on that close before the
	// AfterFunc above has run: an I/O error once ctx is done is the cancel.
	case t.canceled.Load(), ctx.Err() != nil && (first == nil || first.end == EndError):
		st.End, st.Cause = EndCanceled, context.Cause(ctx)
	case first != nil:
		st.End, st.Err = first.end, first.err
	default:
		st.End = EndError
	}
	return st
}

// tunnel is the shared state of one run; the two directions touch it only
// through atomics.
type tunnel struct {
	r               *Relay
	client, backend net.Conn
	start           time.Time
	last            atomic.Int64 // nanoseconds since start of the last progress
	rx, tx          atomic.Int64
	canceled        atomic.Bool
	first           atomic.Pointer[ending]
	closed          atomic.Bool
	// ws: the tunnel follows WebSocket frames; closing is its graceful
	// close once begun; unknown says a direction lost its frame boundaries
	// (a close then cannot be graceful), and lost that a close found no
	// boundary.
	ws      bool
	closing atomic.Pointer[shutting]
	unknown atomic.Bool
	lost    atomic.Bool
	// afterClose ends the tunnel CloseWait after the client ended its
	// side after its Close (clientSaidClose).
	afterClose atomic.Pointer[time.Timer]
}

type ending struct {
	end End
	err error
}

// copyClientToBackend is a named function so that goroutine dumps of a
// proxy holding thousands of tunnels say what each goroutine is.
func (t *tunnel) copyClientToBackend(d *pass, done chan<- struct{}) {
	defer close(done)
	t.pump(d)
}

func (t *tunnel) copyBackendToClient(d *pass) { t.pump(d) }

// pass is one direction of a tunnel: src is read, dst written, and srcEnd and
// dstEnd name their sides; fr follows src's WebSocket frames, if any.
type pass struct {
	dst, src       net.Conn
	count          *atomic.Int64
	live           Adder
	srcEnd, dstEnd End
	fr             *passFrames
}

// moved counts n bytes the direction copied and restarts the idle clock.
func (t *tunnel) moved(d *pass, n int64) {
	d.count.Add(n)
	if d.live != nil {
		d.live.Add(float64(n))
	}
	t.touch()
}

// wakes returns a direction's first wake-up and the longest it backs off to.
// Read deadlines are only wake-ups: the tunnel is idle when neither
// direction has moved, which one direction alone cannot see. Waking at least
// four times per idle period makes a close at most 25% late.
func (t *tunnel) wakes() (first, longest time.Duration) {
	longest = maxWake
	if q := t.r.Idle / 4; q > 0 && q < longest {
		longest = q
	}
	return min(liveWake, longest), longest
}

// idledOut reports whether no byte has moved either way for the idle timeout.
func (t *tunnel) idledOut() bool { return t.r.Idle > 0 && t.idleFor() >= t.r.Idle }

// stop ends direction d after err. On EOF it half-closes dst so the peer sees
// EOF but may still answer (unless FullClose); on any other end it closes
// both conns, which also ends the other direction. During a graceful close
// a direction whose side replied or ended leaves the end to the other
// direction, or to CloseWait.
func (t *tunnel) stop(d *pass, err error) {
	if d.fr != nil && t.closing.Load() != nil {
		t.stopClosing(d, err)
		return
	}
	var we writeError
	switch {
	case errors.Is(err, io.EOF):
		t.record(d.srcEnd, nil)
		if !t.r.FullClose && !t.r.WebSocket {
			closeWrite(d.dst)
			return
		}
		if d.srcEnd == EndClient && d.fr != nil && d.fr.tr.Closed() && d.fr.tr.AtBoundary() {
			t.clientSaidClose()
			return
		}
	case errors.Is(err, os.ErrDeadlineExceeded) && !t.closed.Load():
		t.record(EndIdle, nil)
	case errors.As(err, &we):
		// A failed write is dst's doing, whichever error it was.
		t.record(classify(we.err, d.dstEnd, d.dstEnd), we.err)
	default:
		t.record(classify(err, d.srcEnd, d.dstEnd), err)
	}
	t.closeBoth()
}

// clientSaidClose is a WebSocket client that ended its side after its
// Close frame, as an HTTP/2 client ends its stream (RFC 8441 §4: END_STREAM
// is TCP's FIN): the backend's Close reply still has to reach it. The
// backend's end, which follows its reply, ends the tunnel, or CloseWait
// does. (A backend that ends its side after its Close ends the tunnel at
// once: the client waits for that.)
func (t *tunnel) clientSaidClose() {
	t.afterClose.Store(time.AfterFunc(t.r.closeWait(), t.closeBoth))
}

// writeError marks an error of dst's write where the copy can tell it apart.
type writeError struct{ err error }

func (e writeError) Error() string { return e.err.Error() }

func (t *tunnel) touch() { t.last.Store(int64(time.Since(t.start))) }

func (t *tunnel) idleFor() time.Duration {
	return time.Since(t.start) - time.Duration(t.last.Load())
}

// early writes p, bytes read ahead, to dst before the copies start, and
// counts them as the copies count theirs. It reports whether dst took them.
func (t *tunnel) early(dst net.Conn, p []byte, count *atomic.Int64, live Adder, dstEnd End) bool {
	n, err := writeAhead(dst, p, live)
	if n > 0 {
		count.Add(int64(n))
		t.touch()
	}
	if err != nil {
		t.record(classify(err, dstEnd, dstEnd), err)
		return false
	}
	return true
}

// pump copies d.src to d.dst until the direction ends; see stop.
func (t *tunnel) pump(d *pass) {
	if ready := readiness(d.src); ready != nil && (d.fr != nil || !spliceable(d.dst, d.src)) {
		t.pumpPooled(d, ready)
		return
	}
	wake, longest := t.wakes()
	for {
		_ = d.src.SetReadDeadline(time.Now().Add(wake))
		n, err := io.CopyN(d.dst, d.src, chunk)
		if n > 0 {
			t.moved(d, n)
			wake = min(liveWake, longest)
		} else {
			wake = min(2*wake, longest)
		}
		if err == nil || errors.Is(err, os.ErrDeadlineExceeded) && !t.closed.Load() && (n > 0 || !t.idledOut()) {
			continue
		}
		t.stop(d, err)
		return
	}
}

// pumpPooled is pump for conns that cannot splice: it waits for src's socket
// to be readable without holding a buffer, then copies through a pooled one
// until src pauses. A TLS src (any but a bare TCP conn) starts with a burst:
// it may hold whole records it read from the socket along with the last
// bytes before the tunnel (a backend's first frame right behind its 101),
// which the socket's readiness does not show.
func (t *tunnel) pumpPooled(d *pass, ready func() error) {
	wake, longest := t.wakes()
	var err error
	if !Plain(d.src) {
		err = t.burst(d)
	}
	for err == nil {
		_ = d.src.SetReadDeadline(time.Now().Add(wake))
		// After the deadline is set, so that beginClose's wake-up is not
		// lost: it sets closing before it moves the deadline.
		if d.fr != nil {
			if err = t.closeStep(d); err != nil {
				break
			}
		}
		err = ready()
		switch {
		case err == nil:
			wake = min(liveWake, longest)
			err = t.burst(d)
		case errors.Is(err, os.ErrDeadlineExceeded) && !t.closed.Load() && !t.idledOut():
			wake = min(2*wake, longest)
			err = nil
		case errors.Is(err, os.ErrDeadlineExceeded) && !t.closed.Load() && t.ws:
			// Idle: a WebSocket tunnel closes gracefully.
			t.beginClose(EndIdle, nil)
			err = nil
		}
	}
	t.stop(d, err)
}

// burst copies from d.src, which has bytes, through a pooled buffer until
// src pauses (nil) or the direction ends (the error that ended it).
func (t *tunnel) burst(d *pass) error {
	bp := buffers.Get().(*[]byte)
	defer buffers.Put(bp)
	for {
		_ = d.src.SetReadDeadline(time.Now().Add(pause))
		n, err := d.src.Read(*bp)
		if n > 0 && d.fr != nil {
			if ferr := t.relayFrames(d, (*bp)[:n]); ferr != nil {
				return ferr
			}
		} else if n > 0 {
			if _, werr := d.dst.Write((*bp)[:n]); werr != nil {
				return writeError{werr}
			}
			t.moved(d, int64(n))
		}
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded) && !t.closed.Load():
			return nil
		default:
			return err
		}
	}
}

// record keeps the first way the tunnel ended.
func (t *tunnel) record(e End, err error) {
	t.first.CompareAndSwap(nil, &ending{end: e, err: err})
}

func (t *tunnel) closeBoth() {
	if t.closed.Swap(true) {
		return
	}
	t.client.Close()
	t.backend.Close()
}

// closeWrite half-closes c when it can (TCP, TLS), else closes it.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	c.Close()
}
