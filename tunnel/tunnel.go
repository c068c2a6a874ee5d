// Package tunnel relays bytes both ways between a client and a backend conn
// (l4 passthrough, l7 WebSocket tunnels) until a side ends or nothing moves
// for the idle timeout. Engine.Start (engine.go) picks the path: two Plain
// TCP conns go to the epoll/splice event loops (engine_linux.go), anything
// else (TLS), or a nil Engine, to the goroutine relay (relay.go).
package tunnel

import (
	"context"
	"errors"
	"net"
	"syscall"
	"time"
)

// End says which event ended a tunnel.
type End int

// The ways a tunnel ends. The first event wins: a client that half-closes and a
// backend that then finishes its answer is EndClient.
const (
	EndClient   End = iota // the client closed (EOF or reset)
	EndBackend             // the backend closed
	EndIdle                // no byte either way for the idle timeout
	EndCanceled            // the context was cancelled (drain, backend removed)
	EndError               // any other I/O error
)

// String returns the metric reason word for e, except EndCanceled, whose word
// depends on the context's cause and is chosen by the caller.
func (e End) String() string {
	switch e {
	case EndClient:
		return "client"
	case EndBackend:
		return "backend"
	case EndIdle:
		return "idle"
	case EndCanceled:
		return "canceled"
	default:
		return "error"
	}
}

// Adder receives byte counts as they move; prometheus.Counter satisfies it.
type Adder interface{ Add(float64) }

// Stats describes a finished tunnel.
type Stats struct {
	Rx  int64 // bytes from the client to the backend
	Tx  int64 // bytes from the backend to the client
	End End
	// Err is the I/O error behind EndError (or the first error seen), if any.
	Err error
	// Cause is what cancelled the tunnel (EndCanceled): context.Cause of
	// Start's ctx, the cause given to its stop, or ErrEngineClosed.
	Cause error
	// Closed is the close code of the Close frames wslb sent to end a
	// WebSocket tunnel itself (GoingAway), when at least one went out
	// whole; 0 when it sent none.
	Closed int
}

// Reasoner is implemented by context causes that name their own
// wslb_tunnels_closed_total reason (frontend.ErrDrain, pool.ErrRemoved), so
// this package needs to import neither.
type Reasoner interface {
	error
	Reason() string
}

// Reason is the wslb_tunnels_closed_total reason word for s.
func (s Stats) Reason() string {
	if s.End != EndCanceled {
		return s.End.String()
	}
	if r, ok := errors.AsType[Reasoner](s.Cause); ok {
		return r.Reason()
	}
	return "error"
}

// Relay is one tunnel's settings, given to Engine.Start. The zero value
// copies with no idle timeout.
type Relay struct {
	// Idle closes the tunnel when no byte has moved in either direction for
	// this long; 0 disables it.
	Idle time.Duration
	// Rx and Tx, when set, are told every chunk copied client→backend and
	// backend→client, so metrics move while a long tunnel is still open.
	Rx, Tx Adder
	// ToBackend and ToClient are bytes read ahead before the tunnel opened
	// (client bytes behind a PROXY header or a request head; backend bytes
	// behind its 101): they are written first and counted as the tunnel's.
	ToBackend, ToClient []byte
	// FullClose closes both conns as soon as either side ends, instead of
	// passing the half-close on. For protocols with no half-close, such as
	// WebSocket: a peer that neither closes nor sends would otherwise hold
	// the tunnel, and its backend's reservation, until the idle timeout.
	FullClose bool
	// WebSocket says the tunnel carries WebSocket frames (RFC 6455), the
	// client's masked: it implies FullClose, and the tunnel follows the
	// frame headers both ways (wsframe) so that when it ends the tunnel
	// itself (cancel, stop, idle) it closes gracefully: at the next frame
	// boundary each way, a Close frame with GoingAway to both sides, then
	// both conns closed once both answered or CloseWait passed
	// (closing.go).
	WebSocket bool
	// CloseWait is how long a graceful close waits for the two Close
	// replies; 0 means DefaultCloseWait.
	CloseWait time.Duration
	// Cut, when set and done, ends a graceful close under way at once,
	// both conns closed without waiting for the replies (a second SIGTERM
	// during a drain): it is watched only while a close is under way.
	Cut context.Context
}

// writeAhead writes p, bytes read ahead before a tunnel opened, to dst and
// tells live how many went.
func writeAhead(dst net.Conn, p []byte, live Adder) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, err := dst.Write(p)
	if n > 0 && live != nil {
		live.Add(float64(n))
	}
	return n, err
}

// classify maps a copy error to the side that caused it. A reset is almost
// always seen while reading, so it names src; a broken pipe is seen while
// writing, so it names dst.
func classify(err error, srcEnd, dstEnd End) End {
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		return srcEnd
	case errors.Is(err, syscall.EPIPE):
		return dstEnd
	default:
		return EndError
	}
}
