// Package loopback finds addresses on 127.0.0.1 for tests: one that refuses
// conns, one that is free to bind; it holds one as another process would,
// and tells whether IPv6 loopback works.
package loopback

import (
	"context"
	"math/rand/v2"
	"net"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// DeadAddr returns a loopback address nothing listens on: dials to it are
// refused at once.
func DeadAddr(t testing.TB) string {
	t.Helper()
	return FreeAddr(t)
}

// FreeAddr returns a loopback address that was free a moment ago, for a
// server whose port must be known before it starts (a port-0 listener's
// port cannot be learnt through the command line). The port is picked
// below Linux's ephemeral range (32768 and up): a port-0 listener's port
// comes from that range, where any outgoing conn of a test running at the
// same time may take it before the server binds it.
func FreeAddr(t testing.TB) string {
	t.Helper()
	for range 50 {
		port := 20000 + rand.IntN(32768-20000)
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			ln.Close()
			return ln.Addr().String()
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Hold listens on addr as another process would, until the test ends: with
// SO_REUSEPORT as a second wslb would (reusePort), or plainly as most servers
// do. network is tcp, tcp4 or tcp6.
func Hold(t testing.TB, network, addr string, reusePort bool) net.Listener {
	t.Helper()
	var lc net.ListenConfig
	if reusePort {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	ln, err := lc.Listen(context.Background(), network, addr)
	if err != nil {
		t.Fatalf("hold %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// IPv6 reports whether [::1] can be bound here. When it cannot (IPv6 is off
// in some sandboxes and containers), it logs why, so that a test skipping its
// IPv6 part says so.
func IPv6(t testing.TB) bool {
	t.Helper()
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Logf("IPv6 unavailable (%v): skipping the [::1] part", err)
		return false
	}
	ln.Close()
	return true
}
