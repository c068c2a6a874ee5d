package tunnel

import (
	"context"
	"errors"
	"net"
)

// ErrEngineClosed is the Cause of tunnels ended because their Engine closed.
var ErrEngineClosed = errors.New("tunnel engine closed")

// Start relays client and backend as r says and returns at once. It owns
// both conns from the moment it is called and closes them; done is called
// exactly once, on a goroutine of its own, after both are closed. Cancelling
// ctx ends the tunnel with EndCanceled and Cause context.Cause(ctx); so does
// the returned stop, from any goroutine, with the cause it is given (stop
// after the end does nothing), and so does e's Close, with Cause
// ErrEngineClosed.
//
// Where the bytes move is decided here: two Plain TCP conns go to e's
// event loops, where an idle tunnel costs no goroutine and no buffer; any
// other conn (a *tls.Conn), or a nil e, is relayed by two goroutines.
func (e *Engine) Start(ctx context.Context, r Relay, client, backend net.Conn, done func(Stats)) (stop func(cause error)) {
	if stop, ok := e.take(ctx, &r, client, backend, done); ok {
		return stop
	}
	return startGoroutines(ctx, r, client, backend, done)
}

// startGoroutines is Start's goroutine relay. It is a function of its own so
// that only this path moves r to the heap, not every tunnel the engine takes.
func startGoroutines(ctx context.Context, r Relay, client, backend net.Conn, done func(Stats)) (stop func(cause error)) {
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		s := r.run(ctx, client, backend)
		cancel(nil)
		done(s)
	}()
	return cancel
}
