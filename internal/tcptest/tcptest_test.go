package tcptest

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/wslb/wslb/internal/loopback"
	"github.com/wslb/wslb/internal/wait"
)

// TestServeClosesAtTestEnd: the server counts what it accepts, and a conn
// left open is closed when the server's test ends.
func TestServeClosesAtTestEnd(t *testing.T) {
	var c *net.TCPConn
	t.Run("server", func(st *testing.T) {
		s := Serve(st, func(c net.Conn) { io.Copy(io.Discard, c) })
		c = Dial(t, s.Addr()) // the client is the outer test's
		Dial(t, s.Addr())
		wait.For(t, "two conns accepted", func() bool { return s.Accepted() == 2 })
	})
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes after the server's test ended; want the conn closed", n)
	}
}

func TestPair(t *testing.T) {
	c, s := Pair(t)
	c.Write([]byte("x"))
	c.CloseWrite()
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := io.ReadAll(s); err != nil || string(got) != "x" {
		t.Fatalf("server end read %q, %v", got, err)
	}
}

// TestRedial: dials are retried until the listener is there; check runs
// before each.
func TestRedial(t *testing.T) {
	addr := loopback.FreeAddr(t)
	tries := 0
	c, err := Redial(t, addr, func() {
		if tries++; tries == 3 { // two refused dials, then a listener
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
		}
	})
	if err != nil || c == nil || tries != 3 {
		t.Fatalf("Redial = %v, %v after %d tries; want a conn on the third", c, err, tries)
	}
}

// TestTrickle: the pieces arrive whole and in order, whatever the size.
func TestTrickle(t *testing.T) {
	for _, size := range []int{1, 3, 100} {
		c, s := Pair(t)
		Trickle(t, c, []byte("PROXY TCP4"), Cut{Size: size, Pause: time.Millisecond})
		c.CloseWrite()
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		if got, err := io.ReadAll(s); err != nil || string(got) != "PROXY TCP4" {
			t.Fatalf("size %d: read %q, %v", size, got, err)
		}
	}
}
