package frontend

import (
	"context"
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wslb/wslb/internal/tcptest"
)

// TestAcceptedConnsKeepAlive checks that accepted conns have SO_KEEPALIVE
// and TCP_NODELAY, which they inherit from the listening socket rather
// than get from Go, and that they come off the netpoller (rawconn, on
// Linux).
func TestAcceptedConnsKeepAlive(t *testing.T) {
	got := make(chan [2]int, 1)
	l := &Listener{Name: "ka", Workers: 1,
		NewHandler: func() Handler {
			return HandlerFunc(func(_ context.Context, c net.Conn, _ *Hold) {
				defer c.Close()
				checkRaw(t, c)
				rc, err := c.(syscall.Conn).SyscallConn()
				if err != nil {
					t.Error(err)
					got <- [2]int{-1, -1}
					return
				}
				v := [2]int{-1, -1}
				rc.Control(func(fd uintptr) {
					v[0], _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE)
					v[1], _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY)
				})
				got <- v
			})
		}}
	defer start(t, l)()
	tcptest.Dial(t, l.BoundAddr().String())
	v := <-got
	if v[0] != 1 {
		t.Errorf("SO_KEEPALIVE on an accepted conn = %d, want 1", v[0])
	}
	if v[1] == 0 {
		t.Errorf("TCP_NODELAY on an accepted conn = %d, want it set", v[1])
	}
}
