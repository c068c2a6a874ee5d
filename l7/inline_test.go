//go:build linux

package l7

import (
	"bufio"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
	"github.com/wslb/wslb/internal/wsraw"
)

// TestInlineNeverBlocksAccepting checks that what ServeInline leaves to a
// goroutine does not hold up the accept loop, which serves the first
// request of every conn whose head is there: with one worker, a plain
// request whose backend has not answered and a head that is not whole yet
// wait, a bad handshake is answered, and handshakes on conns accepted after
// them are served meanwhile; then the two that waited are answered.
func TestInlineNeverBlocksAccepting(t *testing.T) {
	release := make(chan struct{})
	ws := echo.WSHandler(echo.WSOptions{})
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			<-release
			w.Write([]byte("late"))
		case "/hello":
			w.Write([]byte("hi"))
		default:
			ws.ServeHTTP(w, r)
		}
	}))
	cfg, err := config.Parse([]byte(simpleYAML("", be.Listener.Addr().String())), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The accept loop waits after each accept until the test lets it go
	// on, so that a conn's first bytes are there when it looks (or not, as
	// the test chooses); once gated is closed it no longer waits.
	accepted, gated := make(chan chan struct{}), make(chan struct{})
	l := startLBWorkers(t, cfg, 1, func() {
		next := make(chan struct{})
		select {
		case accepted <- next:
			<-next
		case <-gated:
		}
	})
	released := false
	defer func() {
		close(gated)
		if !released {
			close(release)
		}
	}()
	dial := func(first string) net.Conn {
		c := tcptest.Dial(t, l.addr)
		c.Write([]byte(first))
		select {
		case next := <-accepted:
			// The bytes were written before the accept loop looks:
			// loopback has them in the socket by the time it does.
			close(next)
		case <-time.After(wait.Timeout):
			t.Fatal("the accept loop did not take the next conn: it is still serving an earlier one")
		}
		return c
	}

	slow := dial(get("/slow"))
	partial := dial("GET /hello HTTP/1.1\r\nHost: x\r\n")
	bad := dial("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n") // no key
	badBR := bufio.NewReader(bad)
	if resp, body := readResp(t, badBR, "GET"); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad handshake: %d %q, want 400", resp.StatusCode, body)
	}

	go func() {
		for next := range accepted { // the handshakes' conns go through at once
			close(next)
		}
	}()
	for range 3 {
		c := dialWS(t, "ws://"+l.addr+"/ws", nil)
		echoOnce(t, c, 1, []byte("while others wait"))
	}

	close(release)
	released = true
	if resp, body := readResp(t, bufio.NewReader(slow), "GET"); resp.StatusCode != 200 || body != "late" {
		t.Errorf("slow request: %d %q, want 200 late", resp.StatusCode, body)
	}
	partial.Write([]byte("\r\n"))
	if resp, body := readResp(t, bufio.NewReader(partial), "GET"); resp.StatusCode != 200 || body != "hi" {
		t.Errorf("the head finished later: %d %q, want 200 hi", resp.StatusCode, body)
	}
}

// TestLateFirstHeadOnLoop checks the conns whose first head is not there
// when they are accepted: they wait for it on the worker's event loop, with
// no goroutine, and are then served as any other first request: a
// WebSocket upgrade whose head comes in two pieces opens its tunnel, and a
// plain GET is answered by the loop and the conn stays there.
func TestLateFirstHeadOnLoop(t *testing.T) {
	ws := echo.WSHandler(echo.WSOptions{})
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hello" {
			w.Write([]byte("hi"))
			return
		}
		ws.ServeHTTP(w, r)
	}))
	f := simpleLoopLB(t, "", be.addr())

	c := tcptest.Dial(t, f.addr)
	wait.For(t, "the new conn waiting on the loop", func() bool { return f.proxy.loopConns.Load() == 1 })
	c.Write([]byte("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"))
	c.Write([]byte("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v, want 101", resp, err)
	}
	c.Write(wsraw.Append(nil, wsraw.Frame{Fin: true, Op: wsraw.OpText, Masked: true, Key: [4]byte{1, 2, 3, 4}, Payload: []byte("late")}))
	if fr, err := wsraw.Read(br, 1<<10); err != nil || string(fr.Payload) != "late" {
		t.Fatalf("echo: %v %v", fr, err)
	}
	c.Close()

	g := &loopClient{c: tcptest.Dial(t, f.addr)}
	g.br = bufio.NewReader(g.c)
	wait.For(t, "the new conn waiting on the loop", func() bool { return f.proxy.loopConns.Load() == 1 })
	if resp, body := g.do(t, get("/hello"), "GET"); resp.StatusCode != 200 || body != "hi" {
		t.Fatalf("plain GET: %d %q", resp.StatusCode, body)
	}
	if n := f.proxy.loopConns.Load(); n != 1 {
		t.Errorf("%d conns on the loop after the first answer, want the one", n)
	}
	f.settle(t, g)
}
