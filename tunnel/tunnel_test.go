package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
)

// relay wires client ⇄ [Relay] ⇄ backend over real sockets, on engine e or
// (e nil) on goroutines, and returns the outer ends plus a channel with the
// Stats.
func relay(t testing.TB, e *Engine, ctx context.Context, r Relay) (client, backend *net.TCPConn, done <-chan Stats) {
	client, backend, _, done = relayStop(t, e, ctx, r)
	return client, backend, done
}

// relayStop is relay that also returns the stop func Start returned.
func relayStop(t testing.TB, e *Engine, ctx context.Context, r Relay) (client, backend *net.TCPConn, stop func(error), done <-chan Stats) {
	client, lbFront := tcptest.Pair(t)
	lbBack, backend := tcptest.Pair(t)
	ch := make(chan Stats, 1)
	stop = e.Start(ctx, r, lbFront, lbBack, func(s Stats) { ch <- s })
	return client, backend, stop, ch
}

// engines runs f with goroutine relays (a nil Engine), then on an event-loop
// Engine: both must behave the same.
func engines(t *testing.T, f func(t *testing.T, e *Engine)) {
	t.Run("goroutines", func(t *testing.T) { f(t, nil) })
	if runtime.GOOS == "linux" {
		t.Run("epoll", func(t *testing.T) { f(t, newEngine(t, 1)) })
	}
}

func newEngine(t testing.TB, n int) *Engine {
	e, err := NewEngine(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// waitEnd returns the Stats a relay's done reported.
func waitEnd(t *testing.T, done <-chan Stats) Stats {
	t.Helper()
	select {
	case s := <-done:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("relay did not end")
		return Stats{}
	}
}

func TestEndReasons(t *testing.T) {
	engines(t, func(t *testing.T, e *Engine) {
		t.Run("client closes", func(t *testing.T) {
			c, b, done := relay(t, e, t.Context(), Relay{})
			c.Write([]byte("abc"))
			c.Close()
			io.Copy(io.Discard, b)
			b.Close()
			if s := waitEnd(t, done); s.End != EndClient || s.Rx != 3 {
				t.Fatalf("got %+v, want EndClient with Rx 3", s)
			}
		})
		t.Run("backend closes", func(t *testing.T) {
			c, b, done := relay(t, e, t.Context(), Relay{})
			b.Write([]byte("abcd"))
			b.Close()
			io.Copy(io.Discard, c)
			c.Close()
			if s := waitEnd(t, done); s.End != EndBackend || s.Tx != 4 {
				t.Fatalf("got %+v, want EndBackend with Tx 4", s)
			}
		})
		t.Run("backend closes, then idle", func(t *testing.T) {
			// The backend's FIN reaches the client, which neither answers
			// nor closes: the idle timeout ends the tunnel, but the
			// backend ended it first.
			c, b, done := relay(t, e, t.Context(), Relay{Idle: 100 * time.Millisecond})
			b.Close()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
				t.Fatalf("client read %v, want EOF", err)
			}
			if s := waitEnd(t, done); s.End != EndBackend {
				t.Fatalf("got %+v, want EndBackend", s)
			}
		})
		t.Run("canceled", func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(t.Context())
			c, _, done := relay(t, e, ctx, Relay{})
			cause := errors.New("drain")
			cancel(cause)
			if s := waitEnd(t, done); s.End != EndCanceled {
				t.Fatalf("got %+v, want EndCanceled", s)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
				t.Fatalf("client read %v, want EOF", err)
			}
		})
		t.Run("idle", func(t *testing.T) {
			_, _, done := relay(t, e, t.Context(), Relay{Idle: 100 * time.Millisecond})
			start := time.Now()
			s := waitEnd(t, done)
			if s.End != EndIdle {
				t.Fatalf("got %+v, want EndIdle", s)
			}
			if d := time.Since(start); d < 100*time.Millisecond || d > time.Second {
				t.Fatalf("idle close after %v", d)
			}
		})
	})
}

// TestAlternatingTrafficIsNotIdle: each direction is silent for longer than
// the idle timeout, but the tunnel as a whole never is.
func TestAlternatingTrafficIsNotIdle(t *testing.T) {
	engines(t, func(t *testing.T, e *Engine) {
		// Each direction is silent for two gaps (1.2 s) in a row, longer than
		// idle; the tunnel never for more than one (0.6 s), which leaves a
		// busy machine 0.4 s to schedule the next write.
		const idle = time.Second
		const gap = 600 * time.Millisecond
		c, b, done := relay(t, e, t.Context(), Relay{Idle: idle})
		buf := make([]byte, 1)
		for i := range 6 {
			from, to := c, b
			if i%2 == 1 {
				from, to = b, c
			}
			from.Write([]byte{byte(i)})
			to.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(to, buf); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			time.Sleep(gap) // a silent gap on purpose: the other direction's turn
		}
		select {
		case s := <-done:
			t.Fatalf("tunnel ended early: %+v", s)
		default:
		}
	})
}

type adder struct{ n float64 }

func (a *adder) Add(v float64) { a.n += v }

func TestLiveCounters(t *testing.T) {
	engines(t, func(t *testing.T, e *Engine) {
		var rx, tx adder
		c, b, done := relay(t, e, t.Context(), Relay{Rx: &rx, Tx: &tx})
		c.Write(make([]byte, 1000))
		io.ReadFull(b, make([]byte, 1000))
		b.Write(make([]byte, 10))
		io.ReadFull(c, make([]byte, 10))
		c.Close()
		b.Close()
		s := waitEnd(t, done)
		if rx.n != 1000 || tx.n != 10 || s.Rx != 1000 || s.Tx != 10 {
			t.Fatalf("rx=%v tx=%v stats=%+v", rx.n, tx.n, s)
		}
	})
}

// BenchmarkRelay pushes bytes one way through a relay between two real TCP
// conns. Run under strace to see splice(2) doing the work:
//
//	go test -c -o /tmp/tunnel.test ./tunnel
//	strace -f -c -e trace=splice,read,write /tmp/tunnel.test -test.run='^$' -test.bench=Relay -test.benchtime=200x
func BenchmarkRelay(b *testing.B) {
	for _, mode := range []string{"goroutines", "epoll"} {
		b.Run(mode, func(b *testing.B) {
			var e *Engine
			if mode == "epoll" {
				e = newEngine(b, 1)
			}
			c, be, done := relay(b, e, b.Context(), Relay{Idle: time.Minute})
			buf := make([]byte, 256<<10)
			go func() { io.Copy(io.Discard, be) }()
			b.SetBytes(int64(len(buf)))
			var r0, r1 syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
			for b.Loop() {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
			// The whole process: writer, reader and relay. Compare modes
			// with it, not with a proxy's own CPU.
			cpu := time.Duration(r1.Utime.Nano() + r1.Stime.Nano() - r0.Utime.Nano() - r0.Stime.Nano())
			b.ReportMetric(cpu.Seconds()*1e3/(float64(b.N)*float64(len(buf))/(1<<30)), "cpu-ms/GiB")
			// Both ends: a half-close alone would leave the tunnel open
			// until its idle timeout.
			c.Close()
			be.Close()
			<-done
		})
	}
}

// TestFullClose: with FullClose, a backend that closes closes the client's
// conn too, though the client never closes or sends.
func TestFullClose(t *testing.T) {
	engines(t, func(t *testing.T, e *Engine) {
		c, b, done := relay(t, e, t.Context(), Relay{FullClose: true})
		b.Write([]byte("bye"))
		b.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "bye" {
			t.Fatalf("client read %q, %v", got, err)
		}
		if s := waitEnd(t, done); s.End != EndBackend {
			t.Fatalf("got %+v, want EndBackend", s)
		}
	})
}

type namedCause struct{}

func (namedCause) Error() string  { return "named" }
func (namedCause) Reason() string { return "drain" }

func TestReasonFromCause(t *testing.T) {
	engines(t, func(t *testing.T, e *Engine) {
		ctx, cancel := context.WithCancelCause(t.Context())
		_, _, done := relay(t, e, ctx, Relay{})
		cancel(namedCause{})
		if s := waitEnd(t, done); s.Reason() != "drain" {
			t.Fatalf("reason %q (stats %+v), want the cause's own word", s.Reason(), s)
		}
		if got := (Stats{End: EndCanceled, Cause: errors.New("other")}).Reason(); got != "error" {
			t.Fatalf("reason %q for an unnamed cause, want error", got)
		}
	})
}

// atomicAdder is an Adder tests can read while the relay writes.
type atomicAdder struct{ n atomic.Int64 }

func (a *atomicAdder) Add(v float64) { a.n.Add(int64(v)) }

// TestTrickleCountedWhileOpen: a few bytes now and then never fill a CopyN
// chunk, yet they must reach the counters while the tunnel is open (the
// status page and wslb_bytes_total), not only when it closes. Idle is an
// hour, as by default, so only the live wake-up can report them.
func TestTrickleCountedWhileOpen(t *testing.T) {
	engines(t, func(t *testing.T, e *Engine) {
		var rx, tx atomicAdder
		c, b, done := relay(t, e, t.Context(), Relay{Idle: time.Hour, Rx: &rx, Tx: &tx})
		c.Write([]byte("ping"))
		if _, err := io.ReadFull(b, make([]byte, 4)); err != nil {
			t.Fatal(err)
		}
		b.Write([]byte("pong!"))
		if _, err := io.ReadFull(c, make([]byte, 5)); err != nil {
			t.Fatal(err)
		}
		wait.For(t, "rx 4 and tx 5 counted while open", func() bool { return rx.n.Load() == 4 && tx.n.Load() == 5 })
		c.Close()
		b.Close()
		if s := waitEnd(t, done); s.Rx != 4 || s.Tx != 5 {
			t.Fatalf("stats rx=%d tx=%d", s.Rx, s.Tx)
		}
		if rx.n.Load() != 4 || tx.n.Load() != 5 {
			t.Fatalf("counted twice: rx=%d tx=%d", rx.n.Load(), tx.n.Load())
		}
	})
}

// TestReadAheadBytesGoFirst: bytes read before the tunnel opened reach their
// side ahead of everything else and count as the tunnel's.
func TestReadAheadBytesGoFirst(t *testing.T) {
	engines(t, func(t *testing.T, e *Engine) {
		c, b, done := relay(t, e, t.Context(), Relay{ToBackend: []byte("ab"), ToClient: []byte("xyz")})
		c.Write([]byte("cd"))
		got := make([]byte, 4)
		if _, err := io.ReadFull(b, got); err != nil || string(got) != "abcd" {
			t.Fatalf("backend read %q %v, want abcd", got, err)
		}
		got = make([]byte, 3)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "xyz" {
			t.Fatalf("client read %q %v, want xyz", got, err)
		}
		c.Close()
		b.Close()
		if s := waitEnd(t, done); s.Rx != 4 || s.Tx != 3 {
			t.Fatalf("stats rx=%d tx=%d, want 4 and 3", s.Rx, s.Tx)
		}
	})
}
