package echo

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wslb/wslb/internal/certtest"
	"github.com/wslb/wslb/internal/tcptest"
)

func TestTCP(t *testing.T) {
	be := TCP(t)
	c := tcptest.Dial(t, be.Addr())
	c.Write([]byte("ping"))
	c.CloseWrite()
	if got, err := io.ReadAll(c); err != nil || string(got) != "ping" {
		t.Fatalf("echo %q, %v; want ping and the conn closed", got, err)
	}
	if be.Accepted() != 1 {
		t.Fatalf("Accepted() = %d, want 1", be.Accepted())
	}
}

func dial(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func read(t *testing.T, c *websocket.Conn) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, msg, err := c.Read(ctx)
	return string(msg), err
}

func exchange(t *testing.T, c *websocket.Conn, msg string) (string, error) {
	t.Helper()
	if err := c.Write(t.Context(), websocket.MessageText, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	return read(t, c)
}

func TestWSHooks(t *testing.T) {
	paths := make(chan string, 2)
	closes := make(chan websocket.StatusCode, 1)
	addr := WS(t, WSOptions{
		Name:      "a",
		OnRequest: func(r *http.Request) { paths <- r.URL.Path },
		Reply:     func(r *http.Request, msg []byte) []byte { return []byte(strings.ToUpper(string(msg))) },
		Drop:      "bye",
		OnClose:   func(s websocket.StatusCode) { closes <- s },
	})

	c := dial(t, "ws://"+addr+"/x?hello=1")
	if got, err := read(t, c); err != nil || got != "connected to a" {
		t.Fatalf("greeting %q, %v", got, err)
	}
	if got, err := exchange(t, c, "hi"); err != nil || got != "HI" {
		t.Fatalf("reply %q, %v", got, err)
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-closes:
		if s != websocket.StatusNormalClosure {
			t.Fatalf("OnClose got %v, want 1000", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnClose not called")
	}

	d := dial(t, "ws://"+addr+"/y")
	if _, err := exchange(t, d, "bye"); websocket.CloseStatus(err) != -1 || err == nil {
		t.Fatalf("after Drop: %v, want the conn gone without a close frame", err)
	}
	if a, b := <-paths, <-paths; a != "/x" || b != "/y" {
		t.Fatalf("OnRequest saw %s and %s, want /x and /y", a, b)
	}
}

// TestWSClosesAtTestEnd: a WebSocket left open is closed by WS's cleanup,
// though the server's Close leaves hijacked conns alone.
func TestWSClosesAtTestEnd(t *testing.T) {
	var c *websocket.Conn
	t.Run("server", func(st *testing.T) {
		c = dial(t, "ws://"+WS(st, WSOptions{})+"/") // the client is the outer test's
	})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, _, err := c.Read(ctx)
	if err == nil || ctx.Err() != nil {
		t.Fatalf("read after the server's test ended: %v; want the conn closed", err)
	}
}

// TestWSTLS: with TLS set, WS serves wss.
func TestWSTLS(t *testing.T) {
	ca := certtest.NewCA(t)
	addr := WS(t, WSOptions{Name: "s", TLS: &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, certtest.Leaf{Names: []string{"127.0.0.1"}})}}})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	c, _, err := websocket.Dial(ctx, "wss://"+addr+"/?hello=1", &websocket.DialOptions{HTTPClient: client})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if got, err := read(t, c); err != nil || got != "connected to s" {
		t.Fatalf("greeting %q, %v", got, err)
	}
}
