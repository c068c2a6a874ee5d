//go:build linux

package poller

import (
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wslb/wslb/internal/wait"
)

// TestCalls connects with Socket, SetsockoptInt and Connect to a listener,
// takes the conn with Accept, and checks the addresses each side sees, on
// IPv4 and, where the machine has it, IPv6.
func TestCalls(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		addr := "127.0.0.1:0"
		family := unix.AF_INET
		if network == "tcp6" {
			addr, family = "[::1]:0", unix.AF_INET6
		}
		ln, err := net.Listen(network, addr)
		if err != nil {
			t.Logf("%s: %v (skipped)", network, err)
			continue
		}
		defer ln.Close()
		la := ln.Addr().(*net.TCPAddr)

		fd, err := Socket(family)
		if err != nil {
			t.Fatal(err)
		}
		defer Close(fd)
		if err := SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
			t.Fatal(err)
		}
		if v, _ := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY); v == 0 {
			t.Errorf("%s: TCP_NODELAY not set", network)
		}
		if err := Connect(fd, la.IP, la.Port, 0); err != nil && err != unix.EINPROGRESS {
			t.Fatalf("%s: connect: %v", network, err)
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			t.Fatal(err)
		}

		rc, _ := ln.(syscall.Conn).SyscallConn()
		var (
			nfd  int
			peer *net.TCPAddr
		)
		wait.For(t, "the conn to accept", func() bool {
			rc.Control(func(s uintptr) { nfd, peer, err = Accept(int(s)) })
			return err != unix.EAGAIN
		})
		if err != nil {
			t.Fatalf("%s: accept: %v", network, err)
		}
		var want net.TCPAddr
		switch sa := sa.(type) {
		case *unix.SockaddrInet4:
			want = net.TCPAddr{IP: sa.Addr[:], Port: sa.Port}
		case *unix.SockaddrInet6:
			want = net.TCPAddr{IP: sa.Addr[:], Port: sa.Port}
		}
		if peer.String() != want.String() {
			t.Errorf("%s: Accept's peer %v, want the dialing socket's %v", network, peer, &want)
		}
		if fl, _ := unix.FcntlInt(uintptr(nfd), unix.F_GETFL, 0); fl&unix.O_NONBLOCK == 0 {
			t.Errorf("%s: accepted socket is blocking", network)
		}
		if err := Close(nfd); err != nil {
			t.Errorf("close: %v", err)
		}
		if err := Close(nfd); err != unix.EBADF {
			t.Errorf("second close: %v, want EBADF", err)
		}
	}
}
