package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wslb/wslb/frontend"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wsraw"
	"github.com/wslb/wslb/pool"
)

// wsPeer is one end of a WebSocket tunnel under test, speaking raw frames
// so that the test sees exactly what wslb sent: the client masks its
// frames, the backend does not, and wslb must do the same toward each.
type wsPeer struct {
	t      *testing.T
	c      net.Conn
	client bool
}

func (p wsPeer) name() string {
	if p.client {
		return "client"
	}
	return "backend"
}

// send writes frames as this peer sends them (masked from the client).
func (p wsPeer) send(frames ...wsraw.Frame) {
	p.t.Helper()
	var b []byte
	for _, f := range frames {
		f.Masked, f.Key = p.client, [4]byte{0x11, 0x22, 0x33, 0x44}
		b = wsraw.Append(b, f)
	}
	p.write(b)
}

func (p wsPeer) write(b []byte) {
	p.t.Helper()
	_ = p.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := p.c.Write(b); err != nil {
		p.t.Fatalf("%s write: %v", p.name(), err)
	}
}

// read returns the next frame this peer receives, checking its mask: wslb
// masks what goes to the backend, never what goes to the client.
func (p wsPeer) read() wsraw.Frame {
	p.t.Helper()
	_ = p.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := wsraw.Read(p.c, 1<<20)
	if err != nil {
		p.t.Fatalf("%s read: %v", p.name(), err)
	}
	if f.Masked == p.client {
		p.t.Fatalf("%s got %v: masked %v, want %v", p.name(), f, f.Masked, !p.client)
	}
	return f
}

// expectClose reads the Close frame wslb sends when it ends the tunnel:
// 1001 with reason.
func (p wsPeer) expectClose(reason string) {
	p.t.Helper()
	f := p.read()
	if code, r := f.Close(); f.Op != wsraw.OpClose || !f.Fin || code != GoingAway || r != reason {
		p.t.Fatalf("%s got %v, want a Close frame 1001 %q", p.name(), f, reason)
	}
}

// replyClose answers a Close frame, as RFC 6455 §5.5.1 asks.
func (p wsPeer) replyClose() {
	p.t.Helper()
	p.send(wsraw.CloseFrame(GoingAway, "", false, [4]byte{}))
}

// expectEOF reads the end of the conn, with no byte before it.
func (p wsPeer) expectEOF() {
	p.t.Helper()
	_ = p.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if rest, err := io.ReadAll(p.c); err != nil && !errors.Is(err, net.ErrClosed) || len(rest) > 0 {
		if !isReset(err) || len(rest) > 0 {
			p.t.Fatalf("%s read %d bytes (%x), %v; want the conn closed", p.name(), len(rest), rest[:min(len(rest), 32)], err)
		}
	}
}

// isReset: a conn closed with bytes unread resets the peer; for a peer
// that gave up on the tunnel (sent more after its Close) that is a close.
func isReset(err error) bool { return err != nil && errors.Is(err, os.ErrDeadlineExceeded) == false }

// wsTunnel is a WebSocket tunnel under test.
type wsTunnel struct {
	client, backend wsPeer
	cancel          context.CancelCauseFunc
	stop            func(error)
	done            <-chan Stats
}

// openWS starts a WebSocket tunnel (r with WebSocket set) on e between two
// raw peers.
func openWS(t *testing.T, e *Engine, r Relay) *wsTunnel {
	ctx, cancel := context.WithCancelCause(t.Context())
	r.WebSocket = true
	c, b, stop, done := relayStop(t, e, ctx, r)
	return &wsTunnel{client: wsPeer{t, c, true}, backend: wsPeer{t, b, false}, cancel: cancel, stop: stop, done: done}
}

// echo sends a message each way and checks that it arrives as sent.
func (w *wsTunnel) echo(msg string) {
	w.client.t.Helper()
	for _, p := range []struct{ from, to wsPeer }{{w.client, w.backend}, {w.backend, w.client}} {
		p.from.send(wsraw.Frame{Fin: true, Op: wsraw.OpText, Payload: []byte(msg)})
		if f := p.to.read(); f.Op != wsraw.OpText || string(f.Payload) != msg {
			w.client.t.Fatalf("%s got %v %q, want the text %q", p.to.name(), f, f.Payload, msg)
		}
	}
}

// ageCause is a cause the tunnel's caller gives stop, naming its reason
// as handoff's callers do (max_age, rebalance, maint).
type ageCause struct{}

func (ageCause) Error() string  { return "max connection age" }
func (ageCause) Reason() string { return "max_age" }

// TestGracefulClose: whatever makes wslb end a WebSocket tunnel itself, the
// client gets an unmasked Close 1001 and the backend a masked one, each with
// the reason word; both replies end the tunnel at once (CloseWait is far
// off), its end still what began it, and Stats say a Close 1001 went out.
func TestGracefulClose(t *testing.T) {
	for _, tc := range []struct {
		name, reason string
		idle         time.Duration
		end          End
		fire         func(w *wsTunnel)
	}{
		{name: "drain", reason: "drain", end: EndCanceled, fire: func(w *wsTunnel) { w.cancel(frontend.ErrDrain) }},
		{name: "backend removed", reason: "removed", end: EndCanceled, fire: func(w *wsTunnel) { w.cancel(pool.ErrRemoved) }},
		{name: "stop with a cause", reason: "max_age", end: EndCanceled, fire: func(w *wsTunnel) { w.stop(ageCause{}) }},
		{name: "stop with a cause of no reason", reason: "going away", end: EndCanceled, fire: func(w *wsTunnel) { w.stop(errors.New("x")) }},
		{name: "idle timeout", reason: "idle", idle: 300 * time.Millisecond, end: EndIdle, fire: func(*wsTunnel) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			engines(t, func(t *testing.T, e *Engine) {
				w := openWS(t, e, Relay{Idle: tc.idle, CloseWait: time.Minute})
				w.echo("hello")
				tc.fire(w)
				w.client.expectClose(tc.reason)
				w.backend.expectClose(tc.reason)
				replied := time.Now()
				w.client.replyClose()
				w.backend.replyClose()
				s := waitEnd(t, w.done)
				if d := time.Since(replied); d > 5*time.Second {
					t.Errorf("the tunnel ended %v after both replies, want at once", d)
				}
				wantReason := tc.reason
				if tc.reason == "going away" {
					wantReason = "error" // a cause that names no reason counts as an error
				}
				if s.End != tc.end || s.Reason() != wantReason || s.Closed != GoingAway || s.Rx != 11 || s.Tx != 7 {
					t.Errorf("stats %+v (reason %q), want end %v, reason %q, Closed 1001, 11 and 7 bytes", s, s.Reason(), tc.end, wantReason)
				}
				w.client.expectEOF()
				w.backend.expectEOF()
			})
		})
	}
}

// TestGracefulCloseCutAfterWait: a peer that never answers the Close is cut
// once CloseWait has passed, DefaultCloseWait (5 s, as DESIGN promises) when
// the Relay sets none; the end stays what began the close.
func TestGracefulCloseCutAfterWait(t *testing.T) {
	for _, tc := range []struct {
		silent string
		wait   time.Duration
	}{{"client", 300 * time.Millisecond}, {"backend", 300 * time.Millisecond}, {"both", 300 * time.Millisecond}, {"backend", 0}} {
		want := tc.wait
		if want == 0 {
			if testing.Short() {
				continue
			}
			want = DefaultCloseWait
		}
		t.Run(fmt.Sprintf("%s silent, wait %v", tc.silent, want), func(t *testing.T) {
			engines(t, func(t *testing.T, e *Engine) {
				w := openWS(t, e, Relay{CloseWait: tc.wait})
				w.echo("hi")
				begin := time.Now()
				w.cancel(frontend.ErrDrain)
				w.client.expectClose("drain")
				w.backend.expectClose("drain")
				if tc.silent == "backend" {
					w.client.replyClose()
				}
				if tc.silent == "client" {
					w.backend.replyClose()
				}
				s := waitEnd(t, w.done)
				if d := time.Since(begin); d < want || d > want+3*time.Second {
					t.Errorf("the tunnel ended %v after the cancel, want after the %v wait", d, want)
				}
				if s.Reason() != "drain" || s.Closed != GoingAway {
					t.Errorf("stats %+v, want reason drain and Closed 1001", s)
				}
				w.client.expectEOF()
				w.backend.expectEOF()
			})
		})
	}
}

// TestFramesPassUntouched: permessage-deflate frames (RSV1), and frames
// that break RFC 6455 in their header (a reserved opcode, a masked frame
// from the backend, an unmasked one from the client, an oversized or
// fragmented control frame), are relayed byte for byte: policing them is
// the peers' business. The boundaries stay known, so the close that follows
// is still graceful.
func TestFramesPassUntouched(t *testing.T) {
	key := [4]byte{9, 8, 7, 6}
	up := wsraw.Append(nil, wsraw.Frame{Fin: true, RSV: 0x40, Op: wsraw.OpText, Masked: true, Key: key, Payload: []byte("\xf2\x48\xcd\xc9\xc9\x07\x00")})
	up = wsraw.Append(up, wsraw.Frame{Fin: true, Op: 0x3, Masked: true, Key: key, Payload: []byte("reserved")})
	up = wsraw.Append(up, wsraw.Frame{Fin: true, Op: wsraw.OpBinary, Payload: []byte("unmasked from a client")})
	up = wsraw.Append(up, wsraw.Frame{Fin: true, Op: wsraw.OpPing, Masked: true, Key: key, Payload: bytes.Repeat([]byte("p"), 300)})
	down := wsraw.Append(nil, wsraw.Frame{Fin: false, RSV: 0x40, Op: wsraw.OpBinary, Payload: bytes.Repeat([]byte{0xaa}, 70000)})
	down = wsraw.Append(down, wsraw.Frame{Fin: false, Op: wsraw.OpPong, Payload: []byte("a fragmented pong")})
	down = wsraw.Append(down, wsraw.Frame{Fin: true, Op: wsraw.OpContinuation, Masked: true, Key: key, Payload: []byte("masked from a backend")})
	engines(t, func(t *testing.T, e *Engine) {
		w := openWS(t, e, Relay{CloseWait: time.Minute})
		for _, p := range []struct {
			from, to wsPeer
			b        []byte
		}{{w.client, w.backend, up}, {w.backend, w.client, down}} {
			p.from.write(p.b)
			got := make([]byte, len(p.b))
			_ = p.to.c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(p.to.c, got); err != nil || !bytes.Equal(got, p.b) {
				t.Fatalf("%s got %d bytes (%v), equal %v; want the %d bytes sent", p.to.name(), len(got), err, bytes.Equal(got, p.b), len(p.b))
			}
		}
		w.cancel(frontend.ErrDrain)
		w.client.expectClose("drain")
		w.backend.expectClose("drain")
		w.client.replyClose()
		w.backend.replyClose()
		if s := waitEnd(t, w.done); s.Reason() != "drain" || s.Closed != GoingAway {
			t.Errorf("stats %+v, want reason drain and Closed 1001", s)
		}
	})
}

// TestGracefulCloseBetweenFragments: a message in fragments is cut at a
// frame boundary, never inside a fragment: a fragment under way when the
// close begins arrives whole, then the Close (a control frame may come
// between fragments, RFC 6455 §5.4), and the fragments sent after it are
// dropped.
func TestGracefulCloseBetweenFragments(t *testing.T) {
	engines(t, func(t *testing.T, e *Engine) {
		w := openWS(t, e, Relay{CloseWait: time.Minute})
		w.client.send(wsraw.Frame{Op: wsraw.OpText, Payload: []byte("one, ")})
		if f := w.backend.read(); f.Fin || string(f.Payload) != "one, " {
			t.Fatalf("backend got %v %q, want the first fragment", f, f.Payload)
		}
		// The backend's first fragment: its header and half its payload,
		// read raw by the client so that wslb is known to be inside it.
		frag := wsraw.Append(nil, wsraw.Frame{Op: wsraw.OpText, Payload: []byte("first fragment")})
		w.backend.write(frag[:8])
		got := make([]byte, len(frag))
		_ = w.client.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(w.client.c, got[:8]); err != nil {
			t.Fatal(err)
		}
		w.cancel(frontend.ErrDrain)
		// The client→backend direction is between fragments: its Close goes
		// at once, which also says the close has begun.
		w.backend.expectClose("drain")
		w.backend.write(frag[8:])
		w.backend.send(wsraw.Frame{Fin: true, Op: wsraw.OpContinuation, Payload: []byte("dropped")})
		w.client.send(wsraw.Frame{Fin: true, Op: wsraw.OpContinuation, Payload: []byte("dropped too")})
		if _, err := io.ReadFull(w.client.c, got[8:]); err != nil || !bytes.Equal(got, frag) {
			t.Fatalf("client got %x, %v; want the whole first fragment %x", got, err, frag)
		}
		w.client.expectClose("drain")
		w.client.replyClose()
		w.backend.replyClose()
		if s := waitEnd(t, w.done); s.Reason() != "drain" || s.Closed != GoingAway || s.Rx != 11 || s.Tx != int64(len(frag)) {
			t.Errorf("stats %+v, want reason drain, Closed 1001, 11 and %d bytes (the dropped ones not counted)", s, len(frag))
		}
		w.client.expectEOF()
		w.backend.expectEOF()
	})
}

// TestGracefulCloseAfterPeerClose: a Close that already went one way means
// wslb sends none that way; it answers the peer that began closing, and
// the other side's reply ends the tunnel.
func TestGracefulCloseAfterPeerClose(t *testing.T) {
	engines(t, func(t *testing.T, e *Engine) {
		w := openWS(t, e, Relay{CloseWait: time.Minute})
		w.client.send(wsraw.CloseFrame(1000, "bye", false, [4]byte{}))
		if code, _ := w.backend.read().Close(); code != 1000 {
			t.Fatalf("backend got close code %d, want the client's 1000", code)
		}
		w.cancel(frontend.ErrDrain)
		w.client.expectClose("drain")
		w.backend.replyClose() // to the client's Close: dropped, it ends the wait
		if s := waitEnd(t, w.done); s.Reason() != "drain" || s.Closed != GoingAway {
			t.Errorf("stats %+v, want reason drain and Closed 1001", s)
		}
		w.client.expectEOF()
		w.backend.expectEOF() // no second Close from wslb
	})
}

// TestLostFramesClosePlainly: a length with its top bit set leaves the
// frame boundaries unknown. The bytes are still relayed, but a graceful
// close cannot find a boundary: both conns are closed at once, no Close
// frame is sent, and the tunnel ends as an error.
func TestLostFramesClosePlainly(t *testing.T) {
	engines(t, func(t *testing.T, e *Engine) {
		w := openWS(t, e, Relay{CloseWait: time.Minute})
		bad := []byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4, 'x', 'y'}
		w.client.write(bad)
		got := make([]byte, len(bad))
		_ = w.backend.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(w.backend.c, got); err != nil || !bytes.Equal(got, bad) {
			t.Fatalf("backend got %x, %v; want the bytes relayed", got, err)
		}
		w.cancel(frontend.ErrDrain)
		s := waitEnd(t, w.done)
		if s.End != EndError || !errors.Is(s.Err, errFramesLost) || s.Reason() != "error" || s.Closed != 0 {
			t.Errorf("stats %+v, want EndError for lost frames, no Close sent", s)
		}
		w.client.expectEOF()
		w.backend.expectEOF()
	})
}

// TestOtherTunnelsClosePlainly: an l4 conn, or a tunnel of another upgrade
// protocol (FullClose), is closed at once on a cancel, with nothing sent
// first, even with WebSocket-looking bytes in flight.
func TestOtherTunnelsClosePlainly(t *testing.T) {
	for _, r := range []Relay{{}, {FullClose: true}} {
		engines(t, func(t *testing.T, e *Engine) {
			ctx, cancel := context.WithCancelCause(t.Context())
			c, b, done := relay(t, e, ctx, r)
			c.Write(wsraw.Append(nil, wsraw.Frame{Fin: true, Op: wsraw.OpText, Masked: true, Payload: []byte("hi")})[:5])
			if _, err := io.ReadFull(b, make([]byte, 5)); err != nil {
				t.Fatal(err)
			}
			cancel(frontend.ErrDrain)
			if s := waitEnd(t, done); s.End != EndCanceled || s.Closed != 0 {
				t.Errorf("stats %+v, want EndCanceled and no Close", s)
			}
			wsPeer{t, c, true}.expectEOF()
			wsPeer{t, b, false}.expectEOF()
		})
	}
}

// TestGracefulCloseInsideLargeFrame: a close that begins while a 4 MiB frame
// is under way each way waits for the frame: both peers get their frame
// whole, byte for byte, then the Close 1001. The frames come slowly, so the
// close falls inside them, on the engine (payloads spliced, each splice
// stopped at the frame's end) and on the goroutine relay, over plain TCP and
// with a TLS client side (wss).
func TestGracefulCloseInsideLargeFrame(t *testing.T) {
	for _, secure := range []bool{false, true} {
		name := "tcp"
		if secure {
			name = "tls"
		}
		t.Run(name, func(t *testing.T) {
			engines(t, func(t *testing.T, e *Engine) {
				w := openLargeFrameWS(t, e, secure)
				up := wsraw.Append(nil, wsraw.Frame{Fin: true, Op: wsraw.OpBinary, Masked: true, Key: [4]byte{1, 2, 3, 4}, Payload: randomBytes(4 << 20)})
				down := wsraw.Append(nil, wsraw.Frame{Fin: true, Op: wsraw.OpBinary, Payload: randomBytes(4 << 20)})
				// The close begins once a quarter of both frames arrived.
				var quarter sync.WaitGroup
				quarter.Add(2)
				go func() { quarter.Wait(); w.cancel(frontend.ErrDrain) }()
				errs := make(chan error, 4)
				for _, p := range []struct {
					from, to wsPeer
					frame    []byte
				}{{w.client, w.backend, up}, {w.backend, w.client, down}} {
					go func() { errs <- writeSlowly(p.from.c, p.frame) }()
					go func() { errs <- readWhole(p.to.c, p.frame, len(p.frame)/4, quarter.Done) }()
				}
				for range 4 {
					if err := <-errs; err != nil {
						t.Fatal(err)
					}
				}
				w.client.expectClose("drain")
				w.backend.expectClose("drain")
				w.client.replyClose()
				w.backend.replyClose()
				if s := waitEnd(t, w.done); s.Reason() != "drain" || s.Closed != GoingAway || s.Rx != int64(len(up)) || s.Tx != int64(len(down)) {
					t.Errorf("stats %+v, want reason drain, Closed 1001, %d and %d bytes", s, len(up), len(down))
				}
			})
		})
	}
}

// openLargeFrameWS is openWS with, when secure, a TLS client side.
func openLargeFrameWS(t *testing.T, e *Engine, secure bool) *wsTunnel {
	if !secure {
		return openWS(t, e, Relay{CloseWait: time.Minute})
	}
	c, front := tlsPair(t)
	lbBack, b := tcptest.Pair(t)
	ctx, cancel := context.WithCancelCause(t.Context())
	done := make(chan Stats, 1)
	stop := e.Start(ctx, Relay{WebSocket: true, CloseWait: time.Minute}, front, lbBack, func(s Stats) { done <- s })
	t.Cleanup(func() { c.Close() })
	return &wsTunnel{client: wsPeer{t, c, true}, backend: wsPeer{t, b, false}, cancel: cancel, stop: stop, done: done}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// writeSlowly writes p in 64 KiB pieces, pausing between them on purpose
// so that a close begun meanwhile falls inside the frame.
func writeSlowly(c net.Conn, p []byte) error {
	_ = c.SetWriteDeadline(time.Now().Add(20 * time.Second))
	for len(p) > 0 {
		n := min(len(p), 64<<10)
		if _, err := c.Write(p[:n]); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		p = p[n:]
		time.Sleep(time.Millisecond)
	}
	return nil
}

// readWhole reads len(want) bytes from c, calls at after the first n, and
// checks they are want.
func readWhole(c net.Conn, want []byte, n int, at func()) error {
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got[:n]); err != nil {
		return fmt.Errorf("read the first %d bytes: %w", n, err)
	}
	at()
	if _, err := io.ReadFull(c, got[n:]); err != nil {
		return fmt.Errorf("read the rest of the frame after %d bytes: %w", n, err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("the %d-byte frame arrived changed", len(want))
	}
	return nil
}

// TestGracefulCloseCut: Relay.Cut (a second SIGTERM during a drain) ends a
// graceful close at once, without waiting for the replies; its end stays
// what began the close.
func TestGracefulCloseCut(t *testing.T) {
	engines(t, func(t *testing.T, e *Engine) {
		cut, cutNow := context.WithCancel(t.Context())
		w := openWS(t, e, Relay{CloseWait: time.Minute, Cut: cut})
		w.echo("hi")
		w.cancel(frontend.ErrDrain)
		w.client.expectClose("drain")
		w.backend.expectClose("drain")
		cutNow()
		if s := waitEnd(t, w.done); s.Reason() != "drain" || s.Closed != GoingAway {
			t.Errorf("stats %+v, want reason drain and Closed 1001", s)
		}
		w.client.expectEOF()
		w.backend.expectEOF()
	})
}

// BenchmarkWebSocketEcho: a 128-byte message echoed through an engine
// tunnel, as the side-by-side bench's echo does, with and without frame
// tracking (Relay.WebSocket): the cost of following the frames is the
// difference between the two in one run.
//
//	go test -run '^$' -bench WebSocketEcho -count 5 ./tunnel
func BenchmarkWebSocketEcho(b *testing.B) {
	for _, ws := range []bool{false, true} {
		name := "plain"
		if ws {
			name = "frames"
		}
		b.Run(name, func(b *testing.B) {
			e := newEngine(b, 1)
			c, be, done := relay(b, e, b.Context(), Relay{Idle: time.Minute, WebSocket: ws})
			up := wsraw.Append(nil, wsraw.Frame{Fin: true, Op: wsraw.OpBinary, Masked: true, Key: [4]byte{1, 2, 3, 4}, Payload: make([]byte, 128)})
			down := wsraw.Append(nil, wsraw.Frame{Fin: true, Op: wsraw.OpBinary, Payload: make([]byte, 128)})
			go func() { // the backend: echo each frame
				in := make([]byte, len(up))
				for {
					if _, err := io.ReadFull(be, in); err != nil {
						return
					}
					if _, err := be.Write(down); err != nil {
						return
					}
				}
			}()
			got := make([]byte, len(down))
			var r0, r1 syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
			for b.Loop() {
				if _, err := c.Write(up); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, got); err != nil {
					b.Fatal(err)
				}
			}
			syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
			cpu := time.Duration(r1.Utime.Nano() + r1.Stime.Nano() - r0.Utime.Nano() - r0.Stime.Nano())
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/msg")
			c.Close()
			be.Close()
			<-done
		})
	}
}
