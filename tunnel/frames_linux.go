//go:build linux

package tunnel

import (
	"context"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wslb/wslb/poller"
	"github.com/wslb/wslb/wsframe"
)

// The engine's side of a WebSocket tunnel (closing.go says what a graceful
// close does). Copy reads already pass through the loop's buffer, so they
// feed the tracker of their direction; a splice moves at most the rest of
// the current frame's payload (spliceMax), so a direction always knows where
// the next frame starts without reading a payload byte, and a direction at
// a frame header reads it, and what follows, through the buffer.

// frames is what a WebSocket tunnel keeps beyond a plain one: allocated only
// for WebSocket tunnels, so an l4 conn pays one pointer for it. Its closing
// state is allocated only when a graceful close begins.
type frames struct {
	t    [2]wsframe.Tracker // by reading side
	cl   *closing
	wait time.Duration   // Relay.CloseWait
	cut  context.Context // Relay.Cut
}

// closing is a graceful close under way. Its arrays are by reading side:
// [clientSide] is the direction client→backend.
type closing struct {
	end      End           // what the tunnel reports when it ends: what began the close
	deadline time.Duration // loop clock: both conns are closed then, replies or not
	reason   string
	// out is what is left to write of the Close frame the direction sends
	// its peer, after the bytes it still holds; nil once written, or when
	// none is to go.
	out [2][]byte
	// past: the direction reached its close point. What src sends from
	// there on is read and dropped.
	past [2]bool
	// replied: src sent its Close frame (or ended): nothing more is
	// awaited from it.
	replied [2]bool
	sent    bool // a Close frame went out whole
	// cut is set, under the loop's mu, when Relay.Cut ended the wait;
	// unwatch stops watching Cut.
	cut     bool
	unwatch func() bool
}

// closingNow returns t's graceful close under way, or nil.
func (t *loopTunnel) closingNow() *closing {
	if t.ws == nil {
		return nil
	}
	return t.ws.cl
}

// track feeds p, bytes just read from src, to src's tracker and returns the
// part to relay: all of it, unless a graceful close is under way and p
// reaches the end of the frame src was in the middle of; that boundary is
// src's close point, and what follows it is dropped (heard).
func (w *frames) track(src side, p []byte) []byte {
	tr := &w.t[src]
	if w.cl == nil {
		tr.Feed(p, false)
		return p
	}
	// Not past the close point yet, so inside a frame: shut reached every
	// direction that was at a boundary.
	k := tr.Feed(p, true)
	if tr.AtBoundary() {
		w.reach(src)
		w.heard(src, p[k:])
	}
	return p[:k]
}

// spliceable reports whether src's next bytes may be spliced: they are
// payload (a header is read through the buffer), or the boundaries are lost.
func (w *frames) spliceable(src side) bool {
	tr := &w.t[src]
	return tr.Lost() || tr.Remaining() > 0
}

// spliceMax is the most one splice from src may move: the rest of the
// current frame's payload, so that the splice ends at its boundary.
func (w *frames) spliceMax(src side) int {
	tr := &w.t[src]
	if tr.Lost() {
		return pipeSize
	}
	return int(min(tr.Remaining(), pipeSize))
}

// skip accounts for n payload bytes spliced from src; at the frame's end
// during a graceful close, src's direction reaches its close point.
func (w *frames) skip(src side, n int) {
	tr := &w.t[src]
	if tr.Lost() {
		return
	}
	tr.Skip(uint64(n))
	if w.cl != nil && tr.AtBoundary() {
		w.reach(src)
	}
}

// reach marks src's close point: its peer gets a Close frame next, unless
// src already sent one, which is then its reply too.
func (w *frames) reach(src side) {
	cl := w.cl
	cl.past[src] = true
	if w.t[src].Closed() {
		cl.replied[src] = true
		return
	}
	cl.out[src] = closeFrame(src == clientSide, cl.reason)
}

// heard follows p, bytes src sent after its close point, which are dropped,
// until src's Close frame has come whole.
func (w *frames) heard(src side, p []byte) {
	if !w.cl.replied[src] && heardClose(&w.t[src], p) {
		w.cl.replied[src] = true
	}
}

// ended settles src's direction when src's stream ended during a graceful
// close: nothing more will come from it, and its peer gets a Close frame if
// the stream ended at a boundary; inside a frame none can follow.
func (w *frames) ended(src side) {
	cl := w.cl
	if !cl.past[src] && w.t[src].AtBoundary() {
		w.reach(src)
	}
	cl.past[src], cl.replied[src] = true, true
}

// shut ends t on wslb's own account (e is EndCanceled or EndIdle): a plain
// tunnel at once; a WebSocket tunnel gracefully, each direction reaching its
// close point at once when it is at a frame boundary.
func (t *loopTunnel) shut(e End) {
	w := t.ws
	if t.ended || w != nil && w.cl != nil {
		return
	}
	if w == nil {
		t.end(e, nil)
		return
	}
	if w.t[clientSide].Lost() || w.t[backendSide].Lost() {
		t.end(EndError, errFramesLost)
		return
	}
	l := t.l
	l.mu.Lock()
	cause := t.cause
	l.mu.Unlock()
	w.cl = &closing{end: e, deadline: l.now + w.wait, reason: closeReason(e, cause)}
	if w.cut != nil {
		w.cl.unwatch = context.AfterFunc(w.cut, t.cutClose)
	}
	t.deadline = w.cl.deadline
	if t.hidx >= 0 {
		l.heap.fix(int(t.hidx))
	} else {
		l.heap.push(t)
	}
	for s := range t.dirs {
		if w.t[s].AtBoundary() {
			w.reach(side(s))
		}
	}
	t.progress()
}

// cutClose asks t's loop to end its graceful close at once; it runs on
// the goroutine that ended Relay.Cut.
func (t *loopTunnel) cutClose() {
	l := t.l
	l.mu.Lock()
	t.ws.cl.cut = true
	l.mu.Unlock()
	l.in.Put(note{t: t, cancel: true}) // refused: closing ends t anyway
}

// canceled handles a cancel the loop took from its inbox: a stop or a
// cancel shuts t, and a cut ends its graceful close at once.
func (t *loopTunnel) canceled() {
	cl := t.closingNow()
	if cl == nil {
		t.shut(EndCanceled)
		return
	}
	l := t.l
	l.mu.Lock()
	cut := cl.cut
	l.mu.Unlock()
	if cut {
		t.end(cl.end, nil)
	}
}

// drop serves a direction past its close point: the bytes it still holds
// go to the peer, then its Close frame, while what src sends is read and
// dropped until src's own Close came. It reports whether src may still
// have bytes (budget spent).
func (t *loopTunnel) drop(src side) bool {
	d, w := &t.dirs[src], t.ws
	if d.n == 0 || t.flush(src) {
		t.sendClose(src)
	}
	l := t.l
	for range budget {
		if t.ended || w.cl.replied[src] || d.eof || !t.readable[src] {
			return false
		}
		n, err := poller.Read(int(t.fd[src]), l.buf)
		if !t.readDone(src, n, err) {
			return false
		}
		if n < len(l.buf) && !t.rdhup[src] {
			t.readable[src] = false
		}
		w.heard(src, l.buf[:n])
	}
	return t.readable[src] && !w.cl.replied[src]
}

// sendClose writes what is left of the Close frame src's direction sends
// its peer, as far as the peer takes it now.
func (t *loopTunnel) sendClose(src side) {
	if t.ended {
		return
	}
	cl, dst := t.ws.cl, src.peer()
	for len(cl.out[src]) > 0 {
		if !t.writable[dst] {
			return
		}
		n, err := poller.Write(int(t.fd[dst]), cl.out[src])
		switch {
		case err == unix.EAGAIN:
			t.writable[dst] = false
			return
		case err != nil:
			t.end(classify(err, dst.end(), dst.end()), err)
			return
		}
		cl.out[src] = cl.out[src][n:]
	}
	if cl.out[src] != nil {
		cl.out[src], cl.sent = nil, true
	}
}

// settle ends a graceful close once both directions are past their close
// points with everything written, and both sides replied; or at once, with
// EndError, when a direction's boundaries are lost.
func (t *loopTunnel) settle() {
	w := t.ws
	if w.t[clientSide].Lost() || w.t[backendSide].Lost() {
		t.end(EndError, errFramesLost)
		return
	}
	for s := range t.dirs {
		if !w.cl.past[s] || w.cl.out[s] != nil || t.dirs[s].n > 0 || !w.cl.replied[s] {
			return
		}
	}
	t.end(w.cl.end, nil)
}

// due is when t's entry in the idle heap falls due: the end of its idle
// timeout, or of its graceful close's wait.
func (t *loopTunnel) due() time.Duration {
	if t.pending != nil {
		return t.pending.deadline
	}
	if cl := t.closingNow(); cl != nil {
		return cl.deadline
	}
	return t.last + t.idle
}

// timeout handles t's due time: an idle tunnel is shut, a graceful close
// that waited long enough closes both conns.
func (t *loopTunnel) timeout() {
	if t.pending != nil {
		t.pendingTimeout()
		return
	}
	if cl := t.closingNow(); cl != nil {
		t.end(cl.end, nil)
		return
	}
	t.shut(EndIdle)
}
