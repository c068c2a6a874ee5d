//go:build unix && !dragonfly

// dragonfly is left out only because package syscall lacks MSG_DONTWAIT there.

package pool

import (
	"crypto/tls"
	"errors"
	"syscall"
)

// alive reports, without blocking, whether an idle backend conn can carry
// another request.
//
// A Read with a deadline already in the past cannot tell: internal/poll
// returns the timeout before it ever calls read(2). So, once nothing is
// waiting above the socket (quiet), it peeks at the socket itself with
// MSG_PEEK|MSG_DONTWAIT: EAGAIN means nothing is pending (alive); 0 bytes
// means the backend sent FIN; any byte is something an idle HTTP server
// should never send (typically a 408 before it closes, or, over TLS, the
// close_notify alert that comes before the FIN); any other error (RST) means
// the conn is dead. A TLS conn is probed on the TCP socket under it. Conns
// that expose no socket are assumed alive and the retry-on-failure path
// covers them.
func alive(e idleConn) bool {
	if !quiet(e) {
		return false
	}
	c := e.conn
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var (
		buf  [1]byte
		rerr error
	)
	err = raw.Read(func(fd uintptr) bool {
		// n is not needed: n == 0 with no error is the backend's FIN and n > 0
		// is unsolicited bytes, and both mean stale.
		_, _, rerr = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true // never wait for readability: this is a probe
	})
	return err == nil && (errors.Is(rerr, syscall.EAGAIN) || errors.Is(rerr, syscall.EWOULDBLOCK))
}
