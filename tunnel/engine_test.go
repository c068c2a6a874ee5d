//go:build linux

package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/wslb/wslb/internal/tcptest"
)

// TestHalfClose: a client that sends its request and half-closes still gets
// the whole answer; the first side to end names the reason.
func TestHalfClose(t *testing.T) {
	engines(t, func(t *testing.T, e *Engine) {
		c, b, done := relay(t, e, t.Context(), Relay{})
		c.Write([]byte("request"))
		c.CloseWrite()
		b.SetDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(b)
		if err != nil || string(got) != "request" {
			t.Fatalf("backend read %q, %v; want the request then EOF", got, err)
		}
		b.Write([]byte("answer"))
		b.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		got, err = io.ReadAll(c)
		if err != nil || string(got) != "answer" {
			t.Fatalf("client read %q, %v; want the answer then EOF", got, err)
		}
		if s := waitEnd(t, done); s.End != EndClient || s.Rx != 7 || s.Tx != 6 {
			t.Fatalf("got %+v, want EndClient, 7 and 6 bytes", s)
		}
	})
}

// TestBackpressure: a backend that reads slowly gets every byte, in order,
// and the counts match: partial writes and paused reads lose nothing.
func TestBackpressure(t *testing.T) {
	engines(t, func(t *testing.T, e *Engine) {
		var rx atomicAdder
		c, b, done := relay(t, e, t.Context(), Relay{Rx: &rx})
		data := make([]byte, 24<<20)
		rand.Read(data)
		want := sha256.Sum256(data)
		go func() {
			c.SetWriteDeadline(time.Now().Add(30 * time.Second))
			c.Write(data)
			c.CloseWrite()
		}()
		b.SetReadDeadline(time.Now().Add(30 * time.Second))
		h := sha256.New()
		buf := make([]byte, 64<<10)
		n := 0
		for i := 0; ; i++ {
			k, err := b.Read(buf)
			h.Write(buf[:k])
			n += k
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Fatalf("backend read after %d bytes: %v", n, err)
				}
				break
			}
			if i%32 == 0 {
				time.Sleep(time.Millisecond) // slow enough to fill every buffer
			}
		}
		if n != len(data) || !bytes.Equal(h.Sum(nil), want[:]) {
			t.Fatalf("backend got %d bytes (want %d), checksum match %v", n, len(data), bytes.Equal(h.Sum(nil), want[:]))
		}
		b.Close()
		if s := waitEnd(t, done); s.Rx != int64(len(data)) || rx.n.Load() != int64(len(data)) {
			t.Fatalf("stats %+v, live rx %d; want %d", s, rx.n.Load(), len(data))
		}
	})
}

// TestReset: a client that resets its conn ends the tunnel as the client's
// doing, and the backend sees its conn close.
func TestReset(t *testing.T) {
	engines(t, func(t *testing.T, e *Engine) {
		c, b, done := relay(t, e, t.Context(), Relay{})
		c.Write([]byte("x"))
		b.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.ReadFull(b, make([]byte, 1))
		c.SetLinger(0)
		c.Close()
		if s := waitEnd(t, done); s.End != EndClient {
			t.Fatalf("got %+v, want EndClient", s)
		}
		if _, err := b.Read(make([]byte, 1)); err == nil {
			t.Fatal("backend conn still open")
		}
	})
}

// TestCanceledBeforeStart: a ctx that is already done ends the tunnel at
// once with its cause.
func TestCanceledBeforeStart(t *testing.T) {
	engines(t, func(t *testing.T, e *Engine) {
		ctx, cancel := context.WithCancelCause(t.Context())
		cancel(namedCause{})
		_, _, done := relay(t, e, ctx, Relay{})
		if s := waitEnd(t, done); s.End != EndCanceled || s.Reason() != "drain" {
			t.Fatalf("got %+v, want EndCanceled with the cause's reason", s)
		}
	})
}

// TestStop: the stop func Start returns ends the tunnel with its cause.
func TestStop(t *testing.T) {
	engines(t, func(t *testing.T, e *Engine) {
		client, lbFront := tcptest.Pair(t)
		lbBack, _ := tcptest.Pair(t)
		ch := make(chan Stats, 1)
		stop := e.Start(t.Context(), Relay{}, lbFront, lbBack, func(s Stats) { ch <- s })
		stop(namedCause{})
		if s := waitEnd(t, ch); s.End != EndCanceled || s.Reason() != "drain" {
			t.Fatalf("got %+v, want EndCanceled with the cause's reason", s)
		}
		client.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := client.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("client read %v, want EOF", err)
		}
	})
}

// TestIdleTunnelsHoldNoGoroutines is the point of the engine: hundreds of
// open tunnels add no goroutine, and each still echoes.
func TestIdleTunnelsHoldNoGoroutines(t *testing.T) {
	e := newEngine(t, 2)
	const n = 200
	before := runtime.NumGoroutine()
	type end struct{ c, b *net.TCPConn }
	ends := make([]end, n)
	dones := make([]<-chan Stats, n)
	for i := range ends {
		ends[i].c, ends[i].b, dones[i] = relay(t, e, t.Context(), Relay{Idle: time.Hour})
	}
	if got := e.Tunnels(); got != n {
		t.Fatalf("engine holds %d tunnels, want %d", got, n)
	}
	if g := runtime.NumGoroutine(); g > before+10 {
		t.Fatalf("%d goroutines for %d open tunnels (%d before)", g, n, before)
	}
	for i, p := range ends {
		msg := []byte{byte(i)}
		p.c.Write(msg)
		p.b.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, 1)
		if _, err := io.ReadFull(p.b, got); err != nil || got[0] != msg[0] {
			t.Fatalf("tunnel %d: got %v %v", i, got, err)
		}
	}
	for i, p := range ends {
		p.c.Close()
		p.b.Close()
		waitEnd(t, dones[i])
	}
	if got := e.Tunnels(); got != 0 {
		t.Fatalf("engine holds %d tunnels after all ended", got)
	}
}

// TestEngineClose ends the tunnels still open, with ErrEngineClosed, and a
// tunnel started afterwards ends at once.
func TestEngineClose(t *testing.T) {
	e, err := NewEngine(1)
	if err != nil {
		t.Fatal(err)
	}
	c, b, done := relay(t, e, t.Context(), Relay{})
	// Make sure the loop registered it before closing: only a registered
	// tunnel moves the byte to the backend.
	c.Write([]byte("x"))
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.ReadFull(b, make([]byte, 1))
	e.Close()
	if s := waitEnd(t, done); s.End != EndCanceled || !errors.Is(s.Cause, ErrEngineClosed) {
		t.Fatalf("got %+v, want EndCanceled by ErrEngineClosed", s)
	}
	c, _, done = relay(t, e, t.Context(), Relay{})
	if s := waitEnd(t, done); s.End != EndCanceled || !errors.Is(s.Cause, ErrEngineClosed) {
		t.Fatalf("after Close: got %+v, want EndCanceled by ErrEngineClosed", s)
	}
	// A tunnel the closed engine never registered still closes its conns.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after Close: the client read %v, want EOF", err)
	}
}
