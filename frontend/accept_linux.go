//go:build linux

package frontend

import (
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/wslb/wslb/poller"
	"github.com/wslb/wslb/rawconn"
)

// rawListener is a listening socket whose Accept hands out *rawconn.Conn:
// accept4 and nothing else, where Go's Accept also registers the new
// socket with the netpoller, asks its local address and sets TCP_NODELAY
// (which the socket inherits from the listening one here, as
// SO_KEEPALIVE). The socket is an *os.File, the one way to wait for a
// listening socket's readiness in Go's netpoller without net's Accept.
type rawListener struct {
	f      *os.File
	rc     syscall.RawConn
	addr   *net.TCPAddr
	local  net.Addr // the accepted conns' local address; nil for a wildcard
	closed atomic.Bool
}

// raw turns ln, just bound, into a rawListener; ln is closed either way.
func raw(ln net.Listener) (net.Listener, error) {
	defer ln.Close()
	addr, _ := ln.Addr().(*net.TCPAddr)
	fd := -1
	err := controlFD(ln, func(s int) (err error) {
		if err = unix.SetsockoptInt(s, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
			return fmt.Errorf("TCP_NODELAY: %w", err)
		}
		// The duplicate shares the open file, so it is non-blocking too,
		// and os.NewFile registers it with the netpoller.
		fd, err = unix.FcntlInt(uintptr(s), unix.F_DUPFD_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("raw listener: %w", err)
	}
	f := os.NewFile(uintptr(fd), "tcp-listener")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("raw listener: %w", err)
	}
	l := &rawListener{f: f, rc: rc, addr: addr}
	if addr != nil && !addr.IP.IsUnspecified() {
		l.local = addr
	}
	return l, nil
}

// Accept waits for a conn and returns it as a *rawconn.Conn. Errors are
// Accept's: net.ErrClosed once closed, and the accept4 errno otherwise
// (ECONNABORTED is retried, as Go does).
func (l *rawListener) Accept() (net.Conn, error) {
	var (
		nfd  int
		peer *net.TCPAddr
		aerr error
	)
	err := l.rc.Read(func(s uintptr) bool {
		for {
			nfd, peer, aerr = poller.Accept(int(s))
			switch aerr {
			case syscall.ECONNABORTED:
				continue
			case syscall.EAGAIN:
				return false
			}
			return true
		}
	})
	if err == nil && aerr != nil {
		err = os.NewSyscallError("accept4", aerr)
	}
	if err != nil {
		if l.closed.Load() {
			err = net.ErrClosed
		}
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.addr, Err: err}
	}
	return rawconn.New(nfd, peer, l.local), nil
}

// Close closes the socket; a waiting Accept returns net.ErrClosed.
func (l *rawListener) Close() error {
	l.closed.Store(true)
	return l.f.Close()
}

// Addr is the bound address.
func (l *rawListener) Addr() net.Addr { return l.addr }

// SyscallConn is for Control (controlFD).
func (l *rawListener) SyscallConn() (syscall.RawConn, error) { return l.rc, nil }
