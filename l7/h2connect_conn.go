package l7

import (
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// streamConn is an HTTP/2 stream carrying a WebSocket (RFC 8441) as a
// net.Conn, so that the tunnel relays it as it relays a TLS conn: the same
// idle timeout, byte counts and graceful close at a frame boundary
// (tunnel.Relay follows the frames of any tunnel.Waiter).
//
// Reads come from the request body and writes go to the response, flushed
// at once. Go's HTTP/2 server ends the stream when its handler returns, so
// the handler's goroutine stays for the stream's life: it runs pull, which
// waits for the client's bytes one at a time without a buffer, so an idle
// stream holds none. The deadlines are the conn's own: the server's
// ResponseController.SetReadDeadline ends the stream when it passes, and the
// relay uses its read deadline to wake up.
type streamConn struct {
	body          io.ReadCloser
	rw            http.ResponseWriter
	rc            *http.ResponseController
	local, remote net.Addr

	mu sync.Mutex
	// has: pull read a byte (n is 1) or an error that Read has not taken
	// yet. An error stays for every later Read.
	has  bool
	n    int
	b    byte
	rerr error

	ready  chan struct{} // pull has something; a hint, has says
	taken  chan struct{} // Read took pull's byte: pull may read again
	closed chan struct{}
	once   sync.Once
	rdl    deadline

	// wmu is held by a write; wdone, under it, says the conn closed, after
	// which the handler may return and a write would panic the server.
	wmu   sync.Mutex
	wdone bool
	// linger, set by Close, closes the body if the client has not ended
	// its side within lingerWait.
	linger *time.Timer
}

func newStreamConn(rw http.ResponseWriter, r *http.Request, c net.Conn) *streamConn {
	return &streamConn{
		body: r.Body, rw: rw, rc: http.NewResponseController(rw),
		local: c.LocalAddr(), remote: c.RemoteAddr(),
		ready: make(chan struct{}, 1), taken: make(chan struct{}, 1), closed: make(chan struct{}),
		rdl: newDeadline(),
	}
}

// pull reads the stream's body for Read, a byte at a time, until the body
// ends or the conn closes, then lingers (linger). It runs on the stream's
// handler goroutine, which must not return before then.
func (c *streamConn) pull() {
	var one [1]byte
	for {
		n, err := c.body.Read(one[:])
		c.mu.Lock()
		c.has, c.n, c.b, c.rerr = n > 0 || err != nil, n, one[0], err
		c.mu.Unlock()
		select {
		case c.ready <- struct{}{}:
		default:
		}
		if err != nil {
			break
		}
		select {
		case <-c.taken:
			continue
		case <-c.closed:
		}
		break
	}
	<-c.closed
	c.drain()
}

// lingerWait bounds how long a closed stream waits for the client to end
// its side. A stream ended while the client's side is open is reset, and a
// browser that gets the reset before it has read the WebSocket's last
// frames (the Close) loses them: its WebSocket then reports 1006, not a
// clean close. It is HTTP/1.1's lingering close (lingerClose), for a
// stream.
const lingerWait = time.Second

// drain reads what the client still sends on the closed stream until it
// ends its side (END_STREAM, or a reset) or Close's linger timer closes the
// body.
func (c *streamConn) drain() {
	c.mu.Lock()
	err := c.rerr
	c.mu.Unlock()
	var buf [512]byte
	for n := 0; err == nil && n < 1<<20; {
		var k int
		k, err = c.body.Read(buf[:])
		n += k
	}
	c.body.Close()
	c.linger.Stop()
}

// WaitReadable waits, within the read deadline, until Read has a byte or an
// error to give (tunnel.Waiter).
func (c *streamConn) WaitReadable() error {
	for {
		c.mu.Lock()
		has := c.has
		c.mu.Unlock()
		if has {
			return nil
		}
		select {
		case <-c.ready:
		case <-c.rdl.wait():
			return os.ErrDeadlineExceeded
		case <-c.closed:
			return net.ErrClosed
		}
	}
}

// Read returns pull's byte and whatever else the stream has buffered behind
// it: with pull waiting for its turn, the body is read here directly, so a
// message goes on in one write rather than a byte and the rest. That read
// waits only when a DATA frame ended right after the byte.
func (c *streamConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := c.WaitReadable(); err != nil {
		return 0, err
	}
	c.mu.Lock()
	n, b, err := c.n, c.b, c.rerr
	c.has = err != nil // an error stays
	c.n = 0
	c.mu.Unlock()
	if n == 0 {
		return 0, err
	}
	p[0] = b
	if err == nil && len(p) > 1 {
		var m int
		m, err = c.body.Read(p[1:])
		n += m
	}
	if err != nil {
		c.mu.Lock()
		c.has, c.rerr = true, err
		c.mu.Unlock()
		return n, err
	}
	c.taken <- struct{}{}
	return n, nil
}

// Write sends p as DATA on the stream, flushed at once: a WebSocket message
// must not wait in a buffer.
func (c *streamConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wdone {
		return 0, net.ErrClosed
	}
	n, err := c.rw.Write(p)
	if err == nil {
		err = c.rc.Flush()
	}
	return n, err
}

// Close ends the conn: pull lingers, then returns, and so the handler,
// which ends the stream. A write blocked on the client's flow control is cut
// by resetting the stream: it must end before the handler returns.
func (c *streamConn) Close() error {
	c.once.Do(func() {
		if !c.wmu.TryLock() {
			_ = c.rc.SetWriteDeadline(time.Unix(1, 0))
			c.wmu.Lock()
		}
		c.wdone = true
		c.wmu.Unlock()
		// The handler returns after these, and no write may be under way
		// then: pull lingers for the client's end, within lingerWait.
		c.linger = time.AfterFunc(lingerWait, func() { c.body.Close() })
		close(c.closed)
	})
	return nil
}

func (c *streamConn) LocalAddr() net.Addr  { return c.local }
func (c *streamConn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets the read deadline only: see SetWriteDeadline.
func (c *streamConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

func (c *streamConn) SetReadDeadline(t time.Time) error {
	c.rdl.set(t)
	return nil
}

// SetWriteDeadline does nothing: the relay writes with no deadline, as it
// does to a TLS conn (a stalled client is the idle timeout's), and the
// server's own write deadline would reset the stream.
func (c *streamConn) SetWriteDeadline(time.Time) error { return nil }

// deadline is a read deadline as a channel that closes when it passes, as
// net.Pipe's are.
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	passed chan struct{}
}

func newDeadline() deadline { return deadline{passed: make(chan struct{})} }

// set moves the deadline to t; the zero t is none.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.passed // the timer fired: wait for its close
	}
	d.timer = nil
	closed := isClosed(d.passed)
	if t.IsZero() {
		if closed {
			d.passed = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.passed = make(chan struct{})
		}
		ch := d.passed
		d.timer = time.AfterFunc(dur, func() { close(ch) })
		return
	}
	if !closed {
		close(d.passed)
	}
}

// wait returns a channel closed once the deadline passed.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.passed
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
