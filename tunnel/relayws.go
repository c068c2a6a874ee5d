package tunnel

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"time"

	"github.com/wslb/wslb/wsframe"
)

// The goroutine relay's side of a WebSocket tunnel (closing.go says what a
// graceful close does). Both directions copy through the pooled buffer,
// which TLS needs anyway, and feed their tracker. A graceful close is begun
// from any goroutine (the ctx's AfterFunc, or a direction that found the
// tunnel idle); each direction notices it when it next wakes, and
// beginClose wakes both by moving their read deadlines to now.

// shutting is a graceful close under way on the goroutine relay.
type shutting struct {
	end    End   // what began it: EndCanceled or EndIdle
	cause  error // the ctx's cause, for EndCanceled
	reason string
	timer  *time.Timer // closes both conns after CloseWait
	// unwatch stops watching Relay.Cut, which closes both conns at once.
	unwatch func() bool
	sent    atomic.Bool // a Close frame went out whole
}

// passFrames is one direction's frames; only its goroutine touches it.
type passFrames struct {
	tr wsframe.Tracker
	// past: the direction reached its close point; what src sends from
	// there on is dropped. replied: src's own Close came (or src ended).
	past, replied bool
}

// errReplied ends a direction whose side replied to a graceful close.
var errReplied = errors.New("close replied")

// beginClose begins the graceful close of a WebSocket tunnel, once.
func (t *tunnel) beginClose(e End, cause error) {
	if t.closing.Load() != nil {
		return
	}
	if t.unknown.Load() {
		// A boundary will never be found: no Close can go out whole.
		t.framesLost()
		return
	}
	c := &shutting{end: e, cause: cause, reason: closeReason(e, cause)}
	c.timer = time.AfterFunc(t.r.closeWait(), t.closeBoth)
	if t.r.Cut != nil {
		c.unwatch = context.AfterFunc(t.r.Cut, t.closeBoth)
	}
	if !t.closing.CompareAndSwap(nil, c) {
		c.timer.Stop()
		if c.unwatch != nil {
			c.unwatch()
		}
		return
	}
	// Each direction looks at closing after it set its own deadline
	// (pumpPooled), so either it sees the close or this wakes it.
	now := time.Now()
	_ = t.client.SetReadDeadline(now)
	_ = t.backend.SetReadDeadline(now)
}

// closeStep does what a graceful close under way asks of direction d
// before it waits for src again: reach the close point if d is at a frame
// boundary, and end the direction (errReplied) once src replied.
func (t *tunnel) closeStep(d *pass) error {
	c := t.closing.Load()
	if c == nil {
		return nil
	}
	f := d.fr
	if f.tr.Lost() {
		return t.framesLost()
	}
	if !f.past && f.tr.AtBoundary() {
		if err := t.reach(d, c); err != nil {
			return err
		}
	}
	if f.replied {
		return errReplied
	}
	return nil
}

// relayFrames relays p, bytes just read from d.src, feeding d's tracker:
// all of p, unless a graceful close is under way. Then the rest of the
// frame under way is relayed, d's close point follows it, and what src
// sends after that is dropped until its Close came (errReplied).
func (t *tunnel) relayFrames(d *pass, p []byte) error {
	f := d.fr
	c := t.closing.Load()
	k := len(p)
	switch {
	case c == nil:
		f.tr.Feed(p, false)
		if f.tr.Lost() {
			t.unknown.Store(true)
		}
	case f.past:
		k = 0
	case f.tr.AtBoundary():
		k = 0
	default:
		k = f.tr.Feed(p, true)
	}
	if k > 0 {
		if _, err := d.dst.Write(p[:k]); err != nil {
			return writeError{err}
		}
		t.moved(d, int64(k))
	}
	if c == nil {
		return nil
	}
	if f.tr.Lost() {
		return t.framesLost()
	}
	if !f.past && f.tr.AtBoundary() {
		if err := t.reach(d, c); err != nil {
			return err
		}
	}
	if !f.replied && heardClose(&f.tr, p[k:]) {
		f.replied = true
	}
	if f.replied {
		return errReplied
	}
	return nil
}

// reach marks d's close point: dst gets a Close frame now, unless src
// already sent one, which is then its reply too. A write that blocks holds
// this direction only, as any bytes would (backpressure).
func (t *tunnel) reach(d *pass, c *shutting) error {
	f := d.fr
	f.past = true
	if f.tr.Closed() {
		f.replied = true
		return nil
	}
	if _, err := d.dst.Write(closeFrame(d.dstEnd == EndBackend, c.reason)); err != nil {
		return writeError{err}
	}
	c.sent.Store(true)
	return nil
}

// framesLost ends a graceful close that cannot find a frame boundary: both
// conns close at once, and the tunnel ends with errFramesLost.
func (t *tunnel) framesLost() error {
	t.lost.Store(true)
	t.closeBoth()
	return errFramesLost
}

// stopClosing ends direction d during a graceful close. When src replied,
// or ended (then dst still gets its Close if src ended at a boundary), the
// other direction or CloseWait ends the tunnel; any other error ends it now.
func (t *tunnel) stopClosing(d *pass, err error) {
	f := d.fr
	switch {
	case errors.Is(err, errReplied):
		return
	case errors.Is(err, io.EOF):
		if f.past || !f.tr.AtBoundary() || t.reach(d, t.closing.Load()) == nil {
			return
		}
	}
	t.closeBoth()
}
