// Package frontend runs one configured listener as N workers: each worker has
// its own SO_REUSEPORT socket and accept loop on each of the listener's
// addresses, so the kernel spreads new conns over them. It enforces
// max_connections and the descriptor reserve (fdbudget), paces accepts
// (max_accept_rate, pace.go), tracks live conns and drains them. bind.go
// binds the sockets, inuse.go makes sure no other process shares them.
//
// A conn goes from here to a Handler (l4.Proxy, l7.Proxy); read those next.
package frontend

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wslb/wslb/clock"
	"github.com/wslb/wslb/fdbudget"
)

// ErrDrain is the context cause of conns closed by Drain.
var ErrDrain error = drainError{}

type drainError struct{}

func (drainError) Error() string { return "draining" }

// Reason names the cause for wslb_tunnels_closed_total.
func (drainError) Reason() string { return "drain" }

// Handler serves one accepted conn. It owns c: it closes c before
// returning, unless it hands c on with hold.Detach, after which the new
// owner closes it and releases the hold. ctx is the conn's: the listener
// cancels it with cause ErrDrain when it drains the conn. hold is never nil.
type Handler interface {
	ServeConn(ctx context.Context, c net.Conn, hold *Hold)
}

// Inline is a Handler that can begin serving a conn on the accept loop's own
// goroutine: a conn whose first bytes are there when it is accepted, and
// whose first steps wait for nothing, then costs no goroutine of its own
// (for l7, a WebSocket upgrade whose backend side goes to an event loop:
// read, parsed, dialled and handed over in one go, as nginx's worker would).
type Inline interface {
	Handler
	// ServeInline serves c on the accept loop as far as it can without
	// waiting for the network or the disk, under ServeConn's contract. It
	// returns nil when it is done with c (closed, or handed on with
	// hold.Detach), or the rest, which the listener runs on a goroutine of
	// its own as it would run ServeConn.
	ServeInline(ctx context.Context, c net.Conn, hold *Hold) (rest func())
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, c net.Conn, hold *Hold)

// ServeConn calls f(ctx, c, hold).
func (f HandlerFunc) ServeConn(ctx context.Context, c net.Conn, hold *Hold) { f(ctx, c, hold) }

// Listener is one configured listener. Set the exported fields, then call
// Listen, then Serve; Drain ends the conns after Serve has returned.
type Listener struct {
	// Name labels logs and metrics.
	Name string
	// Addrs are the host:port addresses to bind, each with sockets of its
	// own; port 0 picks one port per address, shared by its workers. An IPv4
	// or IPv6 address takes conns of its own family only (0.0.0.0 no IPv6,
	// [::] no IPv4, as in nginx); ":port" takes both.
	Addrs []string
	// Workers is the number of accept loops per address; 0 means
	// GOMAXPROCS.
	Workers int
	// MaxConns refuses conns above this many live ones; 0 means unlimited.
	MaxConns int
	// MaxAcceptRate is how many conns a second the listener accepts, all
	// its accept loops together; 0 means unlimited. Conns above it wait in
	// the kernel's accept queue (the listen backlog), never refused.
	MaxAcceptRate float64
	// Clock paces the accepts; nil is the real clock.
	Clock clock.Clock
	// OnAccept, when set, is called for every conn accepted, before any
	// limit may refuse it.
	OnAccept func()
	// NewHandler is called once per worker, so a worker may keep state of its
	// own (l7's idle cache) without sharing it. The i-th worker of every
	// address shares one handler, so a listener has Workers of them however
	// many addresses it binds (nginx's keepalive cache is per worker, too).
	NewHandler func() Handler
	// Refuse, when set, answers a conn refused by MaxConns or by FDs (l7
	// writes a 503). It owns the conn. When nil the conn is closed at once.
	Refuse func(c net.Conn)
	// OnLimit is called for every conn refused by MaxConns or FDs and every
	// accept that failed for lack of descriptors, buffers or memory.
	OnLimit func()
	// FDs counts the listening sockets and every accepted conn until its hold
	// is released; a conn accepted with only the reserve left is refused at
	// once rather than left in the kernel's queue. nil counts nothing.
	FDs *fdbudget.Budget
	// Log receives accept errors and handler panics.
	Log *slog.Logger

	lns      []net.Listener // workers sockets per address, address by address
	inodes   []uint32       // of lns, for Exclusive
	workers  int
	closed   atomic.Bool // the sockets are closed and uncounted
	handlers []Handler
	active   atomic.Int64
	maxConns atomic.Int64 // MaxConns from Listen on; a reload may change it
	pace     *bucket      // MaxAcceptRate from Listen on; a reload may change it

	// stopAccept ends the accept loops' context, so that a loop waiting
	// for a token returns as soon as the sockets close. Set by Serve.
	stopMu     sync.Mutex
	stopAccept context.CancelFunc

	mu    sync.Mutex
	conns map[*Hold]struct{}
	wg    sync.WaitGroup // one per live conn
	idle  chan struct{}  // signalled when active drops to 0, for Drain
}

// Hold is the listener's hold on one live conn: while it lasts, the conn
// counts against max_connections and Drain waits for it, and Drain cancels
// the conn's context in its turn. The listener releases it when the handler
// returns, unless the handler detached the conn.
type Hold struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	// detached is set by Detach: when the handler returns, the conn lives
	// on until release. Atomic: l7's event loop detaches a conn from its
	// handler and may give it back to another goroutine, whose tunnel
	// detaches it again while the handler's goroutine is still returning.
	detached atomic.Bool
	released atomic.Bool
	l        *Listener
}

// Detach hands the hold to the conn's next owner (a tunnel) so that the
// handler can return while the conn lives on. It returns the conn's context
// (the one ServeConn got, still cancelled by Drain with ErrDrain) and release,
// which the new owner calls once, after the conn has ended and been closed.
// Call Detach from ServeConn, or from whoever ServeConn handed the conn to
// (a conn l7's event loop gives back to a goroutine detaches again when it
// becomes a tunnel): every call returns the same ctx and release.
func (h *Hold) Detach() (ctx context.Context, release func()) {
	h.detached.Store(true)
	return h.ctx, h.release
}

// release forgets the conn, once.
func (h *Hold) release() {
	if h.released.Swap(true) {
		return
	}
	l := h.l
	l.mu.Lock()
	delete(l.conns, h)
	l.mu.Unlock()
	h.cancel(nil)
	l.FDs.Add(-1)
	if l.active.Add(-1) == 0 {
		select {
		case l.idle <- struct{}{}:
		default:
		}
	}
	l.wg.Done()
}

// SetMaxConns changes max_connections of a serving listener; conns already
// over a lowered limit keep running.
func (l *Listener) SetMaxConns(n int) { l.maxConns.Store(int64(n)) }

// SetMaxAcceptRate changes max_accept_rate of a serving listener; 0 is
// unlimited. Accept loops waiting for a token look again at once.
func (l *Listener) SetMaxAcceptRate(rate float64) { l.pace.setRate(rate) }

// Active returns the number of live conns.
func (l *Listener) Active() int64 { return l.active.Load() }

// Serve runs the accept loops until ctx is cancelled, then closes the
// listening sockets at once (new conns are refused, not left queued) and
// returns. Live conns keep running; end them with Drain.
func (l *Listener) Serve(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	l.stopMu.Lock()
	l.stopAccept = cancel
	l.stopMu.Unlock()
	if l.closed.Load() {
		cancel()
	}
	var wg sync.WaitGroup
	for range l.workers {
		l.handlers = append(l.handlers, l.NewHandler())
	}
	for i, ln := range l.lns {
		h := l.handlers[i%l.workers]
		wg.Go(func() { l.acceptLoop(ctx, ln, h) })
	}
	<-ctx.Done()
	l.closeListeners()
	wg.Wait()
}

// Close closes the listening sockets of a Listener that will not Serve.
func (l *Listener) Close() { l.closeListeners() }

func (l *Listener) closeListeners() {
	l.stopMu.Lock()
	if l.stopAccept != nil {
		l.stopAccept()
	}
	l.stopMu.Unlock()
	for _, ln := range l.lns {
		ln.Close()
	}
	if !l.closed.Swap(true) {
		l.FDs.Add(-len(l.lns))
	}
}

// acceptLoop accepts until its socket is closed. Running out of file
// descriptors must neither spin nor exit: established conns keep being served
// and accepting resumes after a backoff (5 ms doubling to 1 s, as net/http).
// The reserve (FDs) makes that rare: a conn accepted into it is refused at
// once, so the queue keeps moving and its clients learn at once. Each accept
// waits for a token of max_accept_rate first, so the conns above the rate
// stay in the kernel's queue.
func (l *Listener) acceptLoop(ctx context.Context, ln net.Listener, h Handler) {
	var backoff time.Duration
	for {
		if l.pace.wait(ctx) != nil {
			return
		}
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			if !temporary(err) {
				l.Log.Error("accept failed; worker stops", "listener", l.Name, "err", err)
				return
			}
			if fdbudget.Exhausted(err) {
				l.limit()
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.Log.Warn("accept failed; backing off", "listener", l.Name, "err", err, "backoff", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		if l.OnAccept != nil {
			l.OnAccept()
		}
		if !l.FDs.Accept() || l.full() {
			l.limit()
			l.refuse(ctx, c)
			continue
		}
		l.track(ctx, c, h)
	}
}

// full reports whether max_connections conns are live.
func (l *Listener) full() bool {
	m := l.maxConns.Load()
	return m > 0 && l.active.Load() >= m
}

// refuse answers c, refused by max_connections or the descriptor reserve,
// with Refuse, or closes it.
func (l *Listener) refuse(ctx context.Context, c net.Conn) {
	if l.Refuse == nil {
		c.Close()
		l.FDs.Add(-1)
		return
	}
	l.track(ctx, c, HandlerFunc(func(_ context.Context, c net.Conn, _ *Hold) { l.Refuse(c) }))
}

func (l *Listener) limit() {
	if l.OnLimit != nil {
		l.OnLimit()
	}
}

// track runs h on c in a goroutine (an Inline h first on the accept loop's,
// as far as it goes); the listener's WaitGroup counts the conn
// until the handler returns, or, if it detached the conn, until release. The
// conn's context is detached from the accept ctx: stopping accepting must not
// cut established conns; only Drain cancels them.
func (l *Listener) track(ctx context.Context, c net.Conn, h Handler) {
	cctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	hold := &Hold{ctx: cctx, cancel: cancel, l: l}
	l.mu.Lock()
	l.conns[hold] = struct{}{}
	l.mu.Unlock()
	l.active.Add(1)
	l.wg.Add(1)
	var serve func()
	if in, ok := h.(Inline); ok {
		l.protect(c, func() { serve = in.ServeInline(hold.ctx, c, hold) })
		if serve == nil {
			if !hold.detached.Load() {
				hold.release()
			}
			return
		}
	} else {
		serve = func() { h.ServeConn(hold.ctx, c, hold) }
	}
	go func() {
		l.protect(c, serve)
		if !hold.detached.Load() {
			hold.release()
		}
	}()
}

// protect runs serve, which serves c. It is the one place a panic is
// recovered: a bug in one conn must not take down every other conn of the
// process.
func (l *Listener) protect(c net.Conn, serve func()) {
	defer func() {
		if r := recover(); r != nil {
			c.Close()
			l.Log.Error("panic serving conn", "listener", l.Name, "remote", c.RemoteAddr().String(),
				"panic", r, "stack", string(debug.Stack()))
		}
	}()
	serve()
}

// temporary reports accept errors worth retrying: the process or system is
// out of descriptors or memory, or a client gave up before accept returned.
func temporary(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EPROTO, syscall.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
