package tunnel

// What the goroutine relay waits on: a socket's readiness, without a buffer
// (socketOf, waitReadable), or a Waiter's, which is no socket (an HTTP/2
// stream).

import (
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// spliceable reports whether io.Copy between dst and src splices (two TCP
// conns), so that no buffer is involved.
func spliceable(dst, src net.Conn) bool {
	_, ok1 := dst.(*net.TCPConn)
	_, ok2 := src.(*net.TCPConn)
	return ok1 && ok2
}

// socketOf returns the socket under c (a Plain conn, or the one under a TLS
// conn and the wrappers that name theirs with NetConn, as l7's conn that
// hands the TLS handshake bytes it peeked), or nil. A wrapper may still hold
// bytes it read ahead, which the socket's readiness does not show: that is
// why a TLS src starts with a burst (pumpPooled), which reads through every
// wrapper until none has a byte left.
func socketOf(c net.Conn) syscall.RawConn {
	for range 4 { // a few wrappers at most; a cycle must not hang the relay
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok || !Plain(c) {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// buffers holds the copy buffers of relays that cannot splice (TLS). A
// buffer is taken once src has bytes to give and goes back as soon as it has
// none, so an idle TLS tunnel holds no buffer: io.Copy would hold 32 KiB per
// direction for the tunnel's whole life.
var buffers = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// pause is how long a relay that cannot splice keeps its buffer after src
// last gave bytes. A TLS conn may hold whole records it read from the socket
// ahead, which the socket's readiness does not show: they are taken in this
// window, and only after it does the relay wait on the socket again.
const pause = 5 * time.Millisecond

// Waiter is a conn that is no socket but can wait for bytes without reading
// them (an HTTP/2 stream): the goroutine relay then holds no buffer while it
// waits, and follows a WebSocket tunnel's frames on it as on a socket.
type Waiter interface {
	// WaitReadable waits, within the read deadline, until the next Read
	// has bytes, an EOF or an error to give.
	WaitReadable() error
}

// readiness returns what waits for c to have bytes to read: its Waiter, or
// its socket's readiness; nil when c has neither.
func readiness(c net.Conn) func() error {
	if w, ok := c.(Waiter); ok {
		return w.WaitReadable
	}
	if raw := socketOf(c); raw != nil {
		return func() error { return waitReadable(raw) }
	}
	return nil
}

// waitReadable waits, within the read deadline, until the socket has bytes
// (or an EOF or error) for the next read, without reading them.
func waitReadable(raw syscall.RawConn) error {
	return raw.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return err != unix.EAGAIN
	})
}
