package l7

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wslb/wslb/header"
	"github.com/wslb/wslb/internal/certtest"
	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
)

func dialWS(t *testing.T, url string, opts *websocket.DialOptions) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", resp.StatusCode)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func echoOnce(t *testing.T, c *websocket.Conn, typ websocket.MessageType, msg []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := c.Write(ctx, typ, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	gt, got, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if gt != typ || !bytes.Equal(got, msg) {
		t.Fatalf("echo differs: type %v len %d, want type %v len %d", gt, len(got), typ, len(msg))
	}
}

func TestWebSocketEchoAndHeaders(t *testing.T) {
	var seen headerRecorder
	be := newBackend(t, echo.WSHandler(echo.WSOptions{OnRequest: seen.add}))
	l := simpleLB(t, "    routes:\n      - {path: /websocket/, pool: p, strip_prefix: true}\n", be.addr())

	c := dialWS(t, "ws://"+l.addr+"/websocket/chat?room=1", nil)
	echoOnce(t, c, websocket.MessageText, []byte("hello"))
	big := make([]byte, 16<<20)
	rand.Read(big)
	c.SetReadLimit(32 << 20)
	echoOnce(t, c, websocket.MessageBinary, big)

	r := seen.last(t)
	_, port, _ := net.SplitHostPort(l.addr)
	for name, want := range map[string]string{
		"Upgrade":           "websocket",
		"X-Real-Ip":         "127.0.0.1",
		"X-Forwarded-For":   "127.0.0.1",
		"X-Forwarded-Host":  l.addr,
		"X-Forwarded-Proto": "http",
		"X-Forwarded-Port":  port,
	} {
		if got := r.Header.Get(name); got != want {
			t.Errorf("backend saw %s %q, want %q", name, got, want)
		}
	}
	if !strings.EqualFold(r.Header.Get("Connection"), "upgrade") {
		t.Errorf("backend saw Connection %q", r.Header.Get("Connection"))
	}
	if r.Host != l.addr {
		t.Errorf("backend saw Host %q, want the client's %q", r.Host, l.addr)
	}
	if r.URL.Path != "/chat" || r.URL.RawQuery != "room=1" {
		t.Errorf("backend saw %s?%s, want /chat?room=1 (prefix stripped)", r.URL.Path, r.URL.RawQuery)
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatalf("close handshake: %v", err)
	}
	b := l.pools["p"].Backends()[0]
	wait.For(t, "tunnel released", func() bool { return b.Active() == 0 })
	if got := testutil.ToFloat64(l.metrics.Upgrades.WithLabelValues("web", "p")); got != 1 {
		t.Errorf("upgrades_total = %v", got)
	}
	if got := testutil.ToFloat64(l.metrics.HTTPRequests.WithLabelValues("web", "p", "101")); got != 1 {
		t.Errorf("http_requests_total{code=101} = %v", got)
	}
	if rx := testutil.ToFloat64(l.metrics.Bytes.WithLabelValues("web", "p", be.addr(), "rx")); rx < 16<<20 {
		t.Errorf("bytes rx = %v, want at least 16 MiB", rx)
	}
}

func TestBarePrefixRedirects(t *testing.T) {
	be := newBackend(t, echo.WSHandler(echo.WSOptions{}))
	l := simpleLB(t, "    routes:\n      - {path: /websocket/, pool: p, strip_prefix: true}\n", be.addr())
	resp, _ := exchange(t, l.addr, "GET /websocket?x=1 HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != "/websocket/?x=1" {
		t.Fatalf("got %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestWSS(t *testing.T) {
	certFile, keyFile, roots := certtest.SelfSigned(t)
	var seen headerRecorder
	be := newBackend(t, echo.WSHandler(echo.WSOptions{OnRequest: seen.add}))
	l := simpleLB(t, fmt.Sprintf("    tls: {cert: %s, key: %s}\n", certFile, keyFile), be.addr())
	c := dialWS(t, "wss://"+l.addr+"/ws", &websocket.DialOptions{HTTPClient: tlsClient(roots)})
	echoOnce(t, c, websocket.MessageText, []byte("over tls"))
	if got := seen.last(t).Header.Get("X-Forwarded-Proto"); got != "https" {
		t.Fatalf("X-Forwarded-Proto %q on a TLS listener", got)
	}

	t.Run("plain HTTP to the TLS port is redirected", func(t *testing.T) {
		resp, _ := exchange(t, l.addr, "GET /a/b?c=d HTTP/1.1\r\nHost: example.test:8443\r\n\r\n")
		_, port, _ := net.SplitHostPort(l.addr)
		want := "https://example.test:" + port + "/a/b?c=d"
		if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
			t.Fatalf("got %d Location %q, want 308 %q", resp.StatusCode, resp.Header.Get("Location"), want)
		}
	})
}

// TestFirstFramesTravelWithHeads: the client's first frame shares a write with
// its head and the backend's first frame shares a write with its 101. Both
// must arrive, though each was read into a buffer before the tunnel opened.
func TestFirstFramesTravelWithHeads(t *testing.T) {
	fromClient := make(chan []byte, 1)
	addr := tcptest.Serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		accept := header.AcceptKey(req.Header.Get("Sec-WebSocket-Key"))
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Accept: "+accept+"\r\n\r\nBACKEND-FIRST")
		buf := make([]byte, len("CLIENT-FIRST"))
		io.ReadFull(br, buf)
		fromClient <- buf
		io.Copy(io.Discard, br)
	}).Addr()
	l := simpleLB(t, "", addr)
	c := tcptest.Dial(t, l.addr)
	io.WriteString(c, upgradeHead("/")+"CLIENT-FIRST")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("got %v %v", resp, err)
	}
	buf := make([]byte, len("BACKEND-FIRST"))
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "BACKEND-FIRST" {
		t.Fatalf("client got %q %v", buf, err)
	}
	select {
	case got := <-fromClient:
		if string(got) != "CLIENT-FIRST" {
			t.Fatalf("backend got %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("backend never got the client's first frame")
	}
}

func TestBackendRefusalRelayed(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Why", "not you")
		http.Error(w, "forbidden", http.StatusForbidden)
	}))
	l := simpleLB(t, "", be.addr())
	resp, body := exchange(t, l.addr, upgradeHead("/"))
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Why") != "not you" || body != "forbidden\n" {
		t.Fatalf("got %d %q %q", resp.StatusCode, resp.Header.Get("X-Why"), body)
	}
}

// TestBad101Refused: a backend answering 101 without the right
// Sec-WebSocket-Accept gets no tunnel: the client sees a 502, and nothing it
// sends afterwards reaches the backend.
func TestBad101Refused(t *testing.T) {
	for _, tc := range []struct{ name, resp string }{
		{"wrong accept", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n"},
		{"no accept", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"},
		{"wrong token", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan string, 1)
			addr := tcptest.Serve(t, func(c net.Conn) {
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, tc.resp)
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				rest, _ := io.ReadAll(br)
				got <- string(rest)
			}).Addr()
			l := simpleLB(t, "", addr)
			c := tcptest.Dial(t, l.addr)
			io.WriteString(c, upgradeHead("/"))
			resp, _ := readResp(t, bufio.NewReader(c), "GET")
			if resp.StatusCode != http.StatusBadGateway {
				t.Fatalf("status %d, want 502", resp.StatusCode)
			}
			io.WriteString(c, "GET /smuggled HTTP/1.1\r\nHost: internal\r\n\r\n")
			if rest := <-got; rest != "" {
				t.Fatalf("backend received %q after a refused 101", rest)
			}
			if l.errs("bad_upgrade_response") != 1 {
				t.Fatalf("errors_total{bad_upgrade_response} = %v", l.errs("bad_upgrade_response"))
			}
		})
	}
}
