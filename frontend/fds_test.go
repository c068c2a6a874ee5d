package frontend

import (
	"io"
	"net"
	"sync/atomic"
	"testing"

	"github.com/wslb/wslb/fdbudget"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
)

// TestAcceptInReserve: a conn accepted with only the descriptor reserve left
// is answered at once by Refuse (l7's 503), or closed when there is none
// (l4), rather than served or left in the queue; the listener's sockets and
// conns are counted while open; once a descriptor is free the next conn is
// served.
func TestAcceptInReserve(t *testing.T) {
	for _, answer := range []bool{true, false} {
		fds := fdbudget.WithLimit(100, 0, nil) // share 88
		h := &holdUntilCanceled{}
		var limited atomic.Int32
		l := &Listener{Name: "t", Workers: 2, FDs: fds, NewHandler: func() Handler { return h },
			OnLimit: func() { limited.Add(1) }}
		want := ""
		if answer {
			want = "no"
			l.Refuse = func(c net.Conn) { c.Write([]byte("no")); c.Close() }
		}
		stop := start(t, l)
		if fds.Used() != 2 {
			t.Fatalf("%d counted for 2 listening sockets", fds.Used())
		}
		fds.Add(86) // 88: full
		addr := l.BoundAddr().String()

		c := tcptest.Dial(t, addr)
		got, err := io.ReadAll(c) // at once, not queued
		if string(got) != want || err != nil {
			t.Fatalf("conn in the reserve: read %q, %v; want %q and a close", got, err, want)
		}
		if limited.Load() != 1 {
			t.Fatalf("OnLimit called %d times, want 1", limited.Load())
		}
		wait.For(t, "the refused conn to be uncounted", func() bool { return fds.Used() == 88 })

		fds.Add(-1)
		dialRead(t, addr) // served: the handler's greeting
		if fds.Used() != 88 {
			t.Fatalf("%d counted with one conn served, want 88", fds.Used())
		}
		stop()
		l.Drain(t.Context(), 0, 0)
		if fds.Used() != 85 {
			t.Fatalf("%d counted after the drain, want 85: the sockets and the conn given back", fds.Used())
		}
	}
}
