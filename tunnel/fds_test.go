//go:build linux

package tunnel

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/wslb/wslb/fdbudget"
	"github.com/wslb/wslb/internal/wait"
)

// TestEngineCountsDescriptors: a loop's epoll set, eventfd and pipe are
// counted while the engine runs, so is each pipe a tunnel keeps under
// backpressure (the loop's own goes to the first, the second needs a new
// one), and all are given back when the engine closes.
func TestEngineCountsDescriptors(t *testing.T) {
	fds := fdbudget.WithLimit(1000, 0, nil)
	e, err := NewCountedEngine(1, fds)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if fds.Used() != 4 {
		t.Fatalf("%d counted for a loop, want 4 (epoll, eventfd, a pipe's two ends)", fds.Used())
	}
	data := make([]byte, 16<<20)
	var backends []*net.TCPConn
	var dones []<-chan Stats
	for range 2 {
		c, b, done := relay(t, e, t.Context(), Relay{})
		backends, dones = append(backends, b), append(dones, done)
		go func() {
			c.SetWriteDeadline(time.Now().Add(30 * time.Second))
			c.Write(data)
			c.Close()
		}()
	}
	// The backends read nothing yet: the bytes wait in the tunnels' pipes.
	wait.For(t, "a second pipe for the waiting bytes", func() bool { return fds.Used() >= 6 })
	for i, b := range backends {
		b.SetReadDeadline(time.Now().Add(30 * time.Second))
		if n, err := io.Copy(io.Discard, b); n != int64(len(data)) || err != nil {
			t.Fatalf("backend read %d bytes, %v; want %d", n, err, len(data))
		}
		b.Close()
		waitEnd(t, dones[i])
	}
	e.Close()
	if fds.Used() != 0 {
		t.Fatalf("%d counted after the engine closed, want 0", fds.Used())
	}
}
