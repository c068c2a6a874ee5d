//go:build linux

// Package rawconn holds a TCP conn that stays out of Go's netpoller until it
// has to wait.
//
// A net.TCPConn costs system calls before it carries a byte: Go's accept
// registers the socket with the netpoller (epoll_ctl), asks for its local
// address (getsockname) and sets TCP_NODELAY, and a conn that then moves to
// one of wslb's event loops (a tunnel, a handshake, a kept-alive client) is
// taken out again with a dup, an epoll_ctl and a close. Most conns never
// wait on Go's side at all: the request head is there when they are
// accepted, the answers fit the socket's buffer, and the loops take them
// over. A Conn reads and writes its non-blocking socket directly; only when
// a read finds nothing to read, or a write finds the socket full, does it
// hand the socket to the netpoller (os.NewFile: two calls) and wait there,
// with the deadlines set so far. Detach gives the socket to an event loop
// for nothing while it has not waited.
package rawconn

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/wslb/wslb/poller"
	"golang.org/x/sys/unix"
)

// Conn is a connected TCP socket: net.Conn, plus CloseWrite, SyscallConn and
// Detach. Its methods may be called from several goroutines, as a
// net.TCPConn's.
type Conn struct {
	// mu serializes the raw calls with the move to the netpoller and with
	// Close, so that no call uses a descriptor number closed and reused
	// meanwhile. The raw calls never block, so holding it is short.
	mu       sync.Mutex
	fd       int      // the socket while raw; -1 once on the netpoller or closed
	f        *os.File // the socket once it had to wait
	closed   bool
	rdl, wdl time.Time // deadlines set while raw, for the netpoller
	// The addresses: nil until asked for, when New was not told (a
	// listener on a wildcard address, a socket an event loop gave back).
	remote, local net.Addr
	// What New was told, for errors: read without mu.
	given [2]net.Addr
}

// New returns a Conn that owns fd, a connected non-blocking TCP socket.
// remote and local may be nil: they are then asked of the socket the first
// time RemoteAddr or LocalAddr is called.
func New(fd int, remote, local net.Addr) *Conn {
	return &Conn{fd: fd, remote: remote, local: local, given: [2]net.Addr{local, remote}}
}

// Read reads the socket, waiting in the netpoller when nothing is there.
func (c *Conn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.f == nil {
		n, err := c.readLocked(p)
		if err != unix.EAGAIN {
			c.mu.Unlock()
			return n, err
		}
		if err := c.pollLocked(); err != nil {
			c.mu.Unlock()
			return 0, c.opError("read", err)
		}
	}
	f := c.f
	c.mu.Unlock()
	n, err := f.Read(p)
	return n, c.wrap("read", err)
}

// TryRead reads what is there and never waits: it returns unix.EAGAIN when
// nothing is, and the conn stays raw (also once it is on the netpoller,
// where a read would have to wait there). For code that must not block,
// such as an accept loop looking at a new conn's first bytes.
func (c *Conn) TryRead(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f != nil {
		return 0, unix.EAGAIN
	}
	return c.readLocked(p)
}

// readLocked is one read of the raw socket: unix.EAGAIN as it is, other
// errors as net's.
func (c *Conn) readLocked(p []byte) (int, error) {
	if err := c.usableLocked(c.rdl); err != nil {
		return 0, c.opError("read", err)
	}
	n, err := poller.Read(c.fd, p)
	switch {
	case err == unix.EAGAIN:
		return 0, err
	case err != nil:
		return 0, c.opError("read", os.NewSyscallError("read", err))
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of p, waiting in the netpoller when the socket is full.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	n := 0
	if c.f == nil {
		if err := c.usableLocked(c.wdl); err != nil {
			c.mu.Unlock()
			return 0, c.opError("write", err)
		}
		for n < len(p) {
			m, err := poller.Write(c.fd, p[n:])
			if err == unix.EAGAIN {
				break
			}
			if err != nil {
				c.mu.Unlock()
				return n, c.opError("write", os.NewSyscallError("write", err))
			}
			n += m
		}
		if n == len(p) {
			c.mu.Unlock()
			return n, nil
		}
		if err := c.pollLocked(); err != nil {
			c.mu.Unlock()
			return n, c.opError("write", err)
		}
	}
	f := c.f
	c.mu.Unlock()
	m, err := f.Write(p[n:])
	return n + m, c.wrap("write", err)
}

// usableLocked is what a raw call answers before it is made: the conn is
// closed, or its deadline has passed (as the netpoller would answer).
func (c *Conn) usableLocked(deadline time.Time) error {
	if c.closed {
		return net.ErrClosed
	}
	if !deadline.IsZero() && !time.Now().Before(deadline) {
		return os.ErrDeadlineExceeded
	}
	return nil
}

// pollLocked moves the socket to Go's netpoller, with the deadlines set so
// far.
func (c *Conn) pollLocked() error {
	f := os.NewFile(uintptr(c.fd), "tcp")
	if f == nil {
		return os.NewSyscallError("netpoll", unix.EBADF)
	}
	c.f, c.fd = f, -1
	if !c.rdl.IsZero() {
		_ = f.SetReadDeadline(c.rdl)
	}
	if !c.wdl.IsZero() {
		_ = f.SetWriteDeadline(c.wdl)
	}
	return nil
}

// Close closes the socket. A Read or Write waiting in the netpoller returns.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.opError("close", net.ErrClosed)
	}
	c.closed = true
	if c.f != nil {
		return c.wrap("close", c.f.Close())
	}
	err := poller.Close(c.fd)
	c.fd = -1
	if err != nil {
		return c.opError("close", os.NewSyscallError("close", err))
	}
	return nil
}

// CloseWrite shuts down the sending side, as net.TCPConn's.
func (c *Conn) CloseWrite() error {
	return c.control("shutdown", func(fd int) error { return unix.Shutdown(fd, unix.SHUT_WR) })
}

// control runs f on the socket, wherever it is.
func (c *Conn) control(op string, f func(fd int) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.opError(op, net.ErrClosed)
	}
	if err := c.controlLocked(f); err != nil {
		if errno, ok := err.(syscall.Errno); ok {
			return c.opError(op, os.NewSyscallError(op, errno))
		}
		return c.wrap(op, err)
	}
	return nil
}

// controlLocked runs f on the open socket, raw or on the netpoller (where
// os.File.Fd would make it blocking).
func (c *Conn) controlLocked(f func(fd int) error) error {
	if c.f == nil {
		return f(c.fd)
	}
	rc, err := c.f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// SyscallConn returns the socket's syscall.RawConn. Its Read and Write wait
// in the netpoller, so the socket moves there first.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, c.opError("raw-conn", net.ErrClosed)
	}
	if c.f == nil {
		if err := c.pollLocked(); err != nil {
			return nil, c.opError("raw-conn", err)
		}
	}
	return c.f.SyscallConn()
}

// Detach takes the socket out of c for an event loop, which owns it from
// then on; c is closed. A socket that never waited is handed over as it
// is; one on the netpoller is duplicated and taken off it (dup, epoll_ctl,
// close), as a net.TCPConn's would be.
func (c *Conn) Detach() (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return -1, c.opError("detach", net.ErrClosed)
	}
	c.closed = true
	if c.f == nil {
		fd := c.fd
		c.fd = -1
		return fd, nil
	}
	defer c.f.Close()
	fd := -1
	err := c.controlLocked(func(s int) (err error) {
		fd, err = unix.FcntlInt(uintptr(s), unix.F_DUPFD_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return -1, c.opError("detach", os.NewSyscallError("dup", err))
	}
	return fd, nil
}

// LocalAddr returns the local address.
func (c *Conn) LocalAddr() net.Addr { return c.addr(&c.local, poller.Sockname) }

// RemoteAddr returns the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.addr(&c.remote, poller.Peername) }

// addr returns *a, asking the socket with get the first time.
func (c *Conn) addr(a *net.Addr, get func(fd int) (*net.TCPAddr, error)) net.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	if *a == nil && !c.closed {
		_ = c.controlLocked(func(fd int) error {
			t, err := get(fd)
			if err == nil {
				*a = t
			}
			return err
		})
	}
	return *a
}

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	return c.setDeadline(t, true, true)
}

// SetReadDeadline sets the deadline of Read, as net.Conn's: a Read that
// does not wait is not bound by it, unless it has already passed.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.setDeadline(t, true, false) }

// SetWriteDeadline sets the deadline of Write.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.setDeadline(t, false, true) }

func (c *Conn) setDeadline(t time.Time, read, write bool) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.opError("set", net.ErrClosed)
	}
	f := c.f
	if f == nil {
		if read {
			c.rdl = t
		}
		if write {
			c.wdl = t
		}
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	var err error
	switch {
	case read && write:
		err = f.SetDeadline(t)
	case read:
		err = f.SetReadDeadline(t)
	default:
		err = f.SetWriteDeadline(t)
	}
	return c.wrap("set", err)
}

// opError wraps err as net's own conns do, so that callers checking for
// net.ErrClosed, timeouts (net.Error) or syscall errors find them.
func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.given[0], Addr: c.given[1], Err: err}
}

// wrap turns an *os.File's error into net's: os.ErrClosed becomes
// net.ErrClosed, and the *PathError an *OpError. io.EOF stays itself.
func (c *Conn) wrap(op string, err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	if errors.Is(err, os.ErrClosed) {
		return c.opError(op, net.ErrClosed)
	}
	if pe, ok := errors.AsType[*os.PathError](err); ok {
		err = pe.Err
		if errno, ok := err.(syscall.Errno); ok {
			err = os.NewSyscallError(op, errno)
		}
	}
	return c.opError(op, err)
}
