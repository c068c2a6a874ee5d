package frontend

import (
	"context"
	"io"
	"time"
)

// Drain lets live conns run for up to timeout, then cancels those left, spread
// evenly over spread so their clients reconnect in a trickle rather than a
// storm, and returns once every conn's handler has returned. Then it closes
// each worker's Handler that is an io.Closer (l7's idle backend conns). Call
// it after Serve has returned. A cancelled ctx skips the waiting and closes
// the rest at once.
func (l *Listener) Drain(ctx context.Context, timeout, spread time.Duration) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	l.WaitIdle(wctx)
	cancel()
	if ctx.Err() != nil {
		spread = 0
	}
	l.closeSpread(ctx, spread)
	l.wg.Wait()
	for _, h := range l.handlers {
		if c, ok := h.(io.Closer); ok {
			c.Close()
		}
	}
}

// WaitIdle waits until no conn is left, or ctx ends, and reports whether no
// conn is left. Call it after Serve has returned; Drain still has to be
// called to release the workers.
func (l *Listener) WaitIdle(ctx context.Context) bool {
	for l.active.Load() > 0 {
		select {
		case <-l.idle:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// closeSpread cancels the live conns one by one, the i-th of n at i*spread/n.
func (l *Listener) closeSpread(ctx context.Context, spread time.Duration) {
	l.mu.Lock()
	live := make([]*Hold, 0, len(l.conns))
	for h := range l.conns {
		live = append(live, h)
	}
	l.mu.Unlock()
	start := time.Now()
	for i, h := range live {
		if spread > 0 && ctx.Err() == nil {
			at := start.Add(spread * time.Duration(i) / time.Duration(len(live)))
			if d := time.Until(at); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
				}
			}
		}
		h.cancel(ErrDrain)
	}
}
