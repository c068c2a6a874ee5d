package frontend

import (
	"context"
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wslb/wslb/internal/tcptest"
)

// TestAcceptedConnsKeepAlive checks that accepted conns have SO_KEEPALIVE,
// which they inherit from the listening socket rather than get from Go.
func TestAcceptedConnsKeepAlive(t *testing.T) {
	got := make(chan int, 1)
	l := &Listener{Name: "ka", Workers: 1,
		NewHandler: func() Handler {
			return HandlerFunc(func(_ context.Context, c net.Conn, _ *Hold) {
				defer c.Close()
				rc, err := c.(syscall.Conn).SyscallConn()
				if err != nil {
					t.Error(err)
					got <- -1
					return
				}
				v := -1
				rc.Control(func(fd uintptr) { v, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE) })
				got <- v
			})
		}}
	defer start(t, l)()
	tcptest.Dial(t, l.BoundAddr().String())
	if v := <-got; v != 1 {
		t.Errorf("SO_KEEPALIVE on an accepted conn = %d, want 1", v)
	}
}
