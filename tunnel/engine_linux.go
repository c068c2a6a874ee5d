//go:build linux

package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/wslb/wslb/fdbudget"
	"github.com/wslb/wslb/rawconn"
)

// The engine is where tunnels leave Go's netpoller. On the goroutine relay
// (relay.go) an idle tunnel costs two goroutines, their stacks and two
// netpoll registrations: 50 KB and more. Here it costs one loopTunnel struct:
// take detaches its two sockets from Go's runtime, and a loop registers them,
// edge-triggered, with its own epoll set (loop_linux.go). When bytes move, a
// loop copies a message through its small buffer (one recv, one send) or
// splices a stream through its one pipe, so bulk bytes never enter user
// space. Bytes the peer cannot take yet wait in a pipe the tunnel keeps (the
// loop takes a spare), and while they wait the tunnel reads no more from that
// side: backpressure (move_linux.go).

// Engine relays plain-TCP tunnels on a fixed set of event loops, each owned
// by one goroutine. Create it with NewEngine and stop it with Close. A nil
// *Engine is usable: its Start relays every tunnel on goroutines.
type Engine struct {
	loops []*loop
	wg    sync.WaitGroup
}

// NewEngine starts n loops (n ≤ 0 means GOMAXPROCS). Each holds an epoll set,
// an eventfd and a pipe.
func NewEngine(n int) (*Engine, error) { return NewCountedEngine(n, nil) }

// NewCountedEngine is NewEngine with the loops' descriptors (epoll set,
// eventfd, pipes, spare ones and those tunnels keep under backpressure)
// counted in fds for as long as they are open.
func NewCountedEngine(n int, fds *fdbudget.Budget) (*Engine, error) {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	e := &Engine{}
	for range n {
		l, err := newLoop(fds)
		if err != nil {
			e.Close()
			return nil, err
		}
		e.loops = append(e.loops, l)
		e.wg.Go(l.run)
	}
	return e, nil
}

// Close ends every tunnel still open (EndCanceled, Cause ErrEngineClosed),
// waits for the loops to stop and frees their descriptors. A nil Engine's
// Close does nothing.
func (e *Engine) Close() {
	if e == nil {
		return
	}
	for _, l := range e.loops {
		l.close()
	}
	e.wg.Wait()
}

// Tunnels returns the number of tunnels the engine holds.
func (e *Engine) Tunnels() int {
	if e == nil {
		return 0
	}
	n := 0
	for _, l := range e.loops {
		n += int(l.live.Load())
	}
	return n
}

// pick returns the loop with the fewest tunnels.
func (e *Engine) pick() *loop {
	l := e.loops[0]
	for _, o := range e.loops[1:] {
		if o.live.Load() < l.live.Load() {
			l = o
		}
	}
	return l
}

// take starts the tunnel on the engine when both conns are plain TCP; see
// Engine.Start. It reports false, having done nothing, for a nil e or any
// other conn.
func (e *Engine) take(ctx context.Context, r *Relay, c, b net.Conn, done func(Stats)) (stop func(cause error), ok bool) {
	if e == nil || !Plain(c) || !Plain(b) {
		return nil, false
	}
	if ctx.Err() != nil {
		// Drained while the tunnel was being set up; its client conn may
		// already be closed, which detach would report as an error.
		c.Close()
		b.Close()
		go done(Stats{End: EndCanceled, Cause: context.Cause(ctx)})
		return func(error) {}, true
	}
	t := &loopTunnel{idle: r.Idle, live: [2]Adder{clientSide: r.Rx, backendSide: r.Tx}, fullClose: r.FullClose || r.WebSocket, slot: -1, hidx: -1}
	if r.WebSocket {
		t.ws = &frames{wait: r.closeWait(), cut: r.Cut}
		// The first frames may be among the bytes read ahead.
		t.ws.t[clientSide].Feed(r.ToBackend, false)
		t.ws.t[backendSide].Feed(r.ToClient, false)
	}
	// Bytes read ahead go out while the conns are still Go's: a write
	// that blocks holds the caller's goroutine, not a loop.
	n, err := writeAhead(b, r.ToBackend, r.Rx)
	t.count[clientSide] = int64(n)
	if err == nil {
		n, err = writeAhead(c, r.ToClient, r.Tx)
		t.count[backendSide] = int64(n)
		if err != nil {
			err = fmt.Errorf("write to client: %w", err)
		}
	} else {
		err = fmt.Errorf("write to backend: %w", err)
	}
	if err == nil {
		var cfd, bfd int
		if cfd, err = detach(c); err != nil {
			b.Close()
		} else if bfd, err = detach(b); err != nil {
			unix.Close(cfd)
		}
		t.fd = [2]int32{clientSide: int32(cfd), backendSide: int32(bfd)}
	}
	if err != nil {
		c.Close()
		b.Close()
		end := EndError
		if errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET) {
			// The side being written to went away.
			end = EndBackend
			if t.count[clientSide] == int64(len(r.ToBackend)) {
				end = EndClient
			}
		}
		s := Stats{Rx: t.count[clientSide], Tx: t.count[backendSide], End: end, Err: err}
		go done(s)
		return func(error) {}, true
	}
	t.l = e.pick()
	// A cancel that beats the add is kept in t.cause and honoured when
	// the loop registers t.
	stopCtx := context.AfterFunc(ctx, func() { t.cancel(context.Cause(ctx)) })
	t.done = func(s Stats) {
		stopCtx()
		done(s)
	}
	t.l.add(t)
	return t.cancel, true
}

// detach takes c's socket, Plain, out of Go's runtime and closes c. A
// rawconn.Conn that never waited gives its socket as it is. Otherwise the
// descriptor is duplicated and c closed, which removes the original from
// Go's netpoller; the duplicate shares the open file, so it stays
// non-blocking.
func detach(c net.Conn) (int, error) {
	if rc, ok := c.(*rawconn.Conn); ok {
		return rc.Detach()
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return -1, fmt.Errorf("detach %T: not a TCP conn", c)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		c.Close()
		return -1, err
	}
	fd := -1
	cerr := rc.Control(func(s uintptr) {
		fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	})
	c.Close()
	if cerr != nil {
		return -1, cerr
	}
	if err != nil {
		return -1, fmt.Errorf("dup socket: %w", err)
	}
	return fd, nil
}
