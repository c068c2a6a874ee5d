package l7

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wslb/wslb/frontend"
	"github.com/wslb/wslb/header"
	"github.com/wslb/wslb/internal/loopback"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
	"github.com/wslb/wslb/internal/wsraw"
	"github.com/wslb/wslb/pool"
)

// The handshake's backend side on the engine's loop (upgrade_linux.go) and
// what it gives back to a goroutine (handback.go). Most of its behaviour is
// checked by the older tests, which now go through it: these add what is
// new to it.

// silentBackend reads one request and then says nothing until the test
// ends or the proxy closes; requested is closed once it has the head.
func silentBackend(t *testing.T) (addr string, requested <-chan struct{}, closed <-chan struct{}) {
	req, gone := make(chan struct{}), make(chan struct{})
	addr = tcptest.Serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		close(req)
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		io.Copy(io.Discard, br)
		close(gone)
	}).Addr()
	return addr, req, gone
}

// wsAnswer is a valid 101 to upgradeHead.
func wsAnswer() string {
	return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + header.AcceptKey(wsKey) + "\r\n\r\n"
}

// closedWithin fails the test, saying what, unless ch is closed within 5 s.
func closedWithin(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal(what)
	}
}

func noReservations(t *testing.T, l *lb) {
	t.Helper()
	for _, b := range l.pools["p"].Backends() {
		wait.For(t, "the reservation of "+b.String()+" released", func() bool { return b.Active() == 0 })
	}
	wait.For(t, "no tunnel or handshake on the engine", func() bool { return l.proxy.Engine.Tunnels() == 0 })
}

// TestLoopHandshakeTimeout: a backend that accepts and never answers gets
// timeouts.handshake on the loop, then the client a 504, as on the
// goroutine path, and the backend conn is closed.
func TestLoopHandshakeTimeout(t *testing.T) {
	addr, requested, closed := silentBackend(t)
	l := simpleLB(t, "    timeouts:\n      handshake: 300ms\n", addr)
	c := tcptest.Dial(t, l.addr)
	io.WriteString(c, upgradeHead("/"))
	<-requested
	resp, _ := readResp(t, bufio.NewReader(c), "GET")
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504", resp.StatusCode)
	}
	if got := l.errs("timeout"); got != 1 {
		t.Errorf("errors_total{timeout} = %v, want 1", got)
	}
	closedWithin(t, closed, "the backend conn is still open")
	noReservations(t, l)
}

// TestLoopRefusedConnectRetried: a backend that refuses the connect is
// reported to the passive checks and the other backend is tried, so every
// handshake switches.
func TestLoopRefusedConnectRetried(t *testing.T) {
	live := tcptest.Serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, wsAnswer())
		io.Copy(io.Discard, br)
	}).Addr()
	dead := loopback.DeadAddr(t)
	var told atomic.Int32
	l := startLB(t, simpleYAML("", dead, live), func(px *Proxy) {
		px.OnDialError = func(b *pool.Backend, err error) {
			if b.String() == dead {
				told.Add(1)
			}
		}
	})
	// Least connections rotates its ties: one of two handshakes in a row
	// picks the dead backend first.
	for i := range 2 {
		c := tcptest.Dial(t, l.addr)
		io.WriteString(c, upgradeHead("/"))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("handshake %d: %v %v", i, resp, err)
		}
		c.Close()
	}
	if told.Load() == 0 {
		t.Fatal("the passive checks were never told of the refused connect")
	}
	if got := l.errs("dial"); got != float64(told.Load()) {
		t.Errorf("errors_total{dial} = %v, want %d", got, told.Load())
	}
	noReservations(t, l)
}

// TestLoopDrainWhilePending: a drain while the loop waits for the answer
// ends the handshake at once: both conns closed, the reservation and the
// listener's hold released (Drain returns).
func TestLoopDrainWhilePending(t *testing.T) {
	addr, requested, closed := silentBackend(t)
	l := simpleLB(t, "", addr)
	// A listener of our own over the same proxy, to drain it mid-handshake.
	fl := &frontend.Listener{Name: "web", Addrs: l.cfg.Listen, Workers: 1, NewHandler: l.proxy.NewWorker, Log: l.proxy.Log}
	if err := fl.Listen(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan struct{})
	go func() { fl.Serve(ctx); close(served) }()
	c := tcptest.Dial(t, fl.BoundAddr().String())
	io.WriteString(c, upgradeHead("/"))
	<-requested
	cancel()
	<-served
	drained := make(chan struct{})
	go func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer dcancel()
		fl.Drain(dctx, 0, 0)
		close(drained)
	}()
	closedWithin(t, drained, "the drain still waits for the pending handshake")
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("the client read %d bytes, want its conn closed", n)
	}
	closedWithin(t, closed, "the backend conn is still open")
	noReservations(t, l)
}

// TestLoopNon101KeepsConn: an answer other than 101, with a body, goes
// back to a goroutine, which relays it and keeps the client conn for its
// next request.
func TestLoopNon101KeepsConn(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			w.Header().Set("X-Why", "not you")
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		io.WriteString(w, "plain "+r.URL.Path)
	}))
	l := simpleLB(t, "", be.addr())
	c := tcptest.Dial(t, l.addr)
	br := bufio.NewReader(c)
	io.WriteString(c, upgradeHead("/ws"))
	resp, body := readResp(t, br, "GET")
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Why") != "not you" || body != "forbidden\n" {
		t.Fatalf("upgrade: got %d %q %q", resp.StatusCode, resp.Header.Get("X-Why"), body)
	}
	io.WriteString(c, "GET /next HTTP/1.1\r\nHost: example.test\r\n\r\n")
	resp, body = readResp(t, br, "GET")
	if resp.StatusCode != http.StatusOK || body != "plain /next" {
		t.Fatalf("next request on the same conn: got %d %q", resp.StatusCode, body)
	}
	c.Close()
	noReservations(t, l)
}

// TestLoopAnswerInPieces: a 101 whose head comes in pieces is read on
// until whole; one that is invalid is a 502, as on the goroutine path.
func TestLoopAnswerInPieces(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer string
		status int
	}{
		{"valid", wsAnswer(), http.StatusSwitchingProtocols},
		{"invalid", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n", http.StatusBadGateway},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := tcptest.Serve(t, func(c net.Conn) {
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				cut := len(tc.answer) / 2
				tcptest.Trickle(t, c, []byte(tc.answer), tcptest.Cut{Size: cut + 1, Pause: 50 * time.Millisecond})
				c.SetReadDeadline(time.Now().Add(20 * time.Second))
				io.Copy(io.Discard, br)
			}).Addr()
			l := simpleLB(t, "", addr)
			c := tcptest.Dial(t, l.addr)
			io.WriteString(c, upgradeHead("/"))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || resp.StatusCode != tc.status {
				t.Fatalf("got %v %v, want %d", resp, err, tc.status)
			}
			c.Close()
			noReservations(t, l)
		})
	}
}

// TestLoopFramesBehindHeads: a frame in the same packet as the backend's
// 101, and one right behind the client's head, each reach the other side
// whole, and the tunnel follows the frames that come after.
func TestLoopFramesBehindHeads(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	fromClient := make(chan wsraw.Frame, 2)
	addr := tcptest.Serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		first := wsraw.Append([]byte(wsAnswer()), wsraw.Frame{Fin: true, Op: wsraw.OpText, Payload: []byte("backend first")})
		c.Write(first) // one write: the 101 and the frame share a packet
		for range 2 {
			f, err := wsraw.Read(br, 1<<10)
			if err != nil {
				return
			}
			fromClient <- f
		}
		c.Write(wsraw.Append(nil, wsraw.Frame{Fin: true, Op: wsraw.OpText, Payload: []byte("backend second")}))
		io.Copy(io.Discard, br)
	}).Addr()
	l := simpleLB(t, "", addr)
	c := tcptest.Dial(t, l.addr)
	head := wsraw.Append([]byte(upgradeHead("/")), wsraw.Frame{Fin: true, Op: wsraw.OpText, Masked: true, Key: key, Payload: []byte("client first")})
	c.Write(head) // one write: the head and the frame share a packet
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("got %v %v", resp, err)
	}
	for _, want := range []string{"backend first", "backend second"} {
		if want == "backend second" {
			c.Write(wsraw.Append(nil, wsraw.Frame{Fin: true, Op: wsraw.OpText, Masked: true, Key: key, Payload: []byte("client second")}))
		}
		f, err := wsraw.Read(br, 1<<10)
		if err != nil || !bytes.Equal(f.Payload, []byte(want)) {
			t.Fatalf("client got %v %q %v, want %q", f, f.Payload, err, want)
		}
	}
	for _, want := range []string{"client first", "client second"} {
		select {
		case f := <-fromClient:
			if string(f.Payload) != want {
				t.Fatalf("backend got %q, want %q", f.Payload, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("backend never got %q", want)
		}
	}
	c.Close()
	noReservations(t, l)
}
