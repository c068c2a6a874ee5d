package l7

import (
	"bufio"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/http2"

	"github.com/wslb/wslb/header"
	"github.com/wslb/wslb/internal/certtest"
	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/wsframe"
)

// h2LB is an l7 TLS listener (h2 offered, the default) in front of
// backends, with extra listener keys, logging access lines to a.
func h2wsLB(t *testing.T, a *accessLines, extra string, backends ...string) (*lb, *x509.CertPool) {
	t.Helper()
	certFile, keyFile, roots := certtest.SelfSigned(t)
	tlsKey := fmt.Sprintf("    tls: {cert: %s, key: %s, redirect_http: false}\n", certFile, keyFile)
	var setup []func(*Proxy)
	if a != nil {
		setup = append(setup, a.setup)
	}
	return startLB(t, simpleYAML(tlsKey+extra, backends...), setup...), roots
}

// tunnelsOpen is the reservations held on the test's pool: one per open
// tunnel (a refused upgrade must hold none).
func (l *lb) tunnelsOpen() int {
	n := 0
	for _, b := range l.pools["p"].Backends() {
		n += int(b.Active())
	}
	return n
}

// TestH2WebSocketEcho: SETTINGS_ENABLE_CONNECT_PROTOCOL is advertised, an
// extended CONNECT is answered 200 and carries WebSocket frames both ways
// to a real echo backend, and the access line says HTTP/2.0.
func TestH2WebSocketEcho(t *testing.T) {
	var a accessLines
	l, roots := h2wsLB(t, &a, "", echo.WS(t, echo.WSOptions{}))
	c := dialRawH2(t, l.addr, roots)
	if v := c.settings[http2.SettingEnableConnectProtocol]; v != 1 {
		t.Fatalf("SETTINGS_ENABLE_CONNECT_PROTOCOL = %d, want 1 (settings %v)", v, c.settings)
	}
	id, s, h := c.connect("/chat", "websocket")
	if got := status(t, h); got != http.StatusOK {
		t.Fatalf(":status %d, want 200", got)
	}
	for i := range 3 {
		c.echo(t, id, s, fmt.Sprintf("hello %d", i))
	}
	c.echo(t, id, s, strings.Repeat("x", 5000)) // more than one read
	// The client's Close ends its side of the stream, as Chromium's does
	// (END_STREAM is TCP's FIN): the backend's reply still comes back.
	c.write(func() error {
		return c.fr.WriteData(id, true, maskedFrame(byte(wsframe.OpClose), []byte{0x03, 0xe8}))
	})
	if m, err := s.readFrame(t); err != nil || m.op != wsframe.OpClose {
		t.Fatalf("close reply: %v %v", m, err)
	}
	if _, err := s.readFrame(t); !errors.Is(err, io.EOF) {
		t.Fatalf("after the Close reply: %v, want the stream's end", err)
	}
	line := a.waitLines(t, 1)[0]
	checkFields(t, line, map[string]any{"msg": "tunnel", "proto": "HTTP/2.0", "status": float64(200),
		"upgrade": true, "method": "CONNECT", "path": "/chat"})
	if rx, _ := line["rx"].(float64); rx < 5000 {
		t.Errorf("rx = %v, want the bytes sent", line["rx"])
	}
	if got := testutil.ToFloat64(l.metrics.Upgrades.WithLabelValues("web", "p")); got != 1 {
		t.Errorf("upgrades = %v, want 1", got)
	}
	wait.For(t, "the tunnel's reservation released", func() bool { return l.tunnelsOpen() == 0 })
}

// h2RawBackend serves one conn at a time: it reads the upgrade request, hands
// it to got, and writes what answer returns.
func h2RawBackend(t *testing.T, got chan<- *http.Request, answer func(*http.Request) string) string {
	return tcptest.Serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if got != nil {
			got <- req
		}
		io.WriteString(c, answer(req))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		io.Copy(io.Discard, br) // until wslb closes
	}).Addr()
}

// TestH2WebSocketBadAccept: a backend whose Sec-WebSocket-Accept does not
// answer wslb's key gets the stream a 502 and no tunnel.
func TestH2WebSocketBadAccept(t *testing.T) {
	var a accessLines
	be := h2RawBackend(t, nil, func(*http.Request) string {
		return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n"
	})
	l, roots := h2wsLB(t, &a, "", be)
	c := dialRawH2(t, l.addr, roots)
	_, _, h := c.connect("/", "websocket")
	if got := status(t, h); got != http.StatusBadGateway {
		t.Fatalf(":status %d, want 502", got)
	}
	if l.errs("bad_upgrade_response") != 1 {
		t.Errorf("errors_total{bad_upgrade_response} = %v", l.errs("bad_upgrade_response"))
	}
	line := a.waitLines(t, 1)[0]
	checkFields(t, line, map[string]any{"msg": "request", "status": float64(502), "reason": "bad_upgrade_response"})
	if got := testutil.ToFloat64(l.metrics.Upgrades.WithLabelValues("web", "p")); got != 0 {
		t.Errorf("upgrades = %v, want 0", got)
	}
	if n := l.tunnelsOpen(); n != 0 {
		t.Errorf("%d reservations held, want 0", n)
	}
}

// TestH2WebSocketRefusalRelayed: a backend that refuses the upgrade has its
// status and body relayed; one that answers 200 without switching is a 502,
// which on h2 would otherwise read as an open WebSocket.
func TestH2WebSocketRefusalRelayed(t *testing.T) {
	for _, tc := range []struct {
		name, answer string
		status       int
		body         string
	}{
		{"403", "HTTP/1.1 403 Forbidden\r\nContent-Length: 3\r\nX-Why: token\r\n\r\nno\n", 403, "no\n"},
		{"200", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 502, "502 Bad Gateway: backend did not switch protocols\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := h2RawBackend(t, nil, func(*http.Request) string { return tc.answer })
			l, roots := h2wsLB(t, nil, "", be)
			c := dialRawH2(t, l.addr, roots)
			_, s, h := c.connect("/", "websocket")
			if got := status(t, h); got != tc.status {
				t.Fatalf(":status %d, want %d", got, tc.status)
			}
			body, err := io.ReadAll(s.body)
			if err != nil || string(body) != tc.body {
				t.Fatalf("body %q (%v), want %q", body, err, tc.body)
			}
			if tc.status == 403 && h.Get("x-why") != "token" {
				t.Errorf("backend's header lost: %v", h)
			}
			wait.For(t, "the reservation released", func() bool { return l.tunnelsOpen() == 0 })
		})
	}
}

// TestH2ConnectRefused: CONNECT without :protocol is refused as on
// HTTP/1.1 (400), a :protocol other than websocket gets 501, and a version
// other than 13 gets 426; none reaches the backend.
func TestH2ConnectRefused(t *testing.T) {
	reached := make(chan *http.Request, 4)
	be := h2RawBackend(t, reached, func(*http.Request) string { return "HTTP/1.1 500 No\r\nContent-Length: 0\r\n\r\n" })
	l, roots := h2wsLB(t, nil, "", be)
	c := dialRawH2(t, l.addr, roots)

	_, s := c.open(":method", "CONNECT", ":authority", "example.com:443")
	if got := status(t, s.awaitHead(t)); got != http.StatusBadRequest {
		t.Errorf("plain CONNECT: :status %d, want 400", got)
	}
	_, _, h := c.connect("/", "webtransport")
	if got := status(t, h); got != http.StatusNotImplemented {
		t.Errorf(":protocol webtransport: :status %d, want 501", got)
	}
	_, s = c.open(":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":path", "/",
		":authority", "localhost", "sec-websocket-version", "8")
	h = s.awaitHead(t)
	if got := status(t, h); got != http.StatusUpgradeRequired || h.Get("sec-websocket-version") != "13" {
		t.Errorf("version 8: :status %d %v, want 426 with sec-websocket-version 13", got, h)
	}
	select {
	case r := <-reached:
		t.Fatalf("the backend got %v", r)
	default:
	}
}

// TestH2WebSocketHeaders: the backend gets an HTTP/1.1 upgrade with wslb's
// own key, the client's subprotocols and extensions and the forwarding
// headers; the client gets the backend's choice back.
func TestH2WebSocketHeaders(t *testing.T) {
	got := make(chan *http.Request, 1)
	be := h2RawBackend(t, got, func(r *http.Request) string {
		return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: " + header.AcceptKey(r.Header.Get("Sec-WebSocket-Key")) + "\r\n" +
			"Sec-WebSocket-Protocol: chat.v2\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n"
	})
	l, roots := h2wsLB(t, nil, "", be)
	c := dialRawH2(t, l.addr, roots)
	_, _, h := c.connect("/room?id=7", "websocket", "sec-websocket-protocol", "chat.v1, chat.v2",
		"sec-websocket-extensions", "permessage-deflate; client_max_window_bits", "origin", "https://localhost")
	if st := status(t, h); st != http.StatusOK {
		t.Fatalf(":status %d, want 200", st)
	}
	if h.Get("sec-websocket-protocol") != "chat.v2" || h.Get("sec-websocket-extensions") != "permessage-deflate; server_no_context_takeover" {
		t.Errorf("client got %v, want the backend's protocol and extensions", h)
	}
	if h.Get("sec-websocket-accept") != "" || h.Get("upgrade") != "" {
		t.Errorf("HTTP/1.1 handshake fields reached the h2 client: %v", h)
	}
	r := <-got
	want := map[string]string{
		"Upgrade": "websocket", "Connection": "Upgrade", "Sec-Websocket-Version": "13",
		"Sec-Websocket-Protocol": "chat.v1, chat.v2", "Sec-Websocket-Extensions": "permessage-deflate; client_max_window_bits",
		"Origin": "https://localhost", "X-Forwarded-Proto": "https",
	}
	for k, v := range want {
		if r.Header.Get(k) != v {
			t.Errorf("backend got %s %q, want %q", k, r.Header.Get(k), v)
		}
	}
	if r.Method != http.MethodGet || r.RequestURI != "/room?id=7" || r.Proto != "HTTP/1.1" {
		t.Errorf("backend got %s %s %s", r.Method, r.RequestURI, r.Proto)
	}
	if _, err := header.CheckWebSocketRequest(r.Header); err != nil {
		t.Errorf("backend got no valid key: %v", err)
	}
	if r.Header.Get(":protocol") != "" {
		t.Errorf("a pseudo-header went to the backend: %v", r.Header)
	}
}

// TestH2ManyWebSocketsOneConn: WebSockets on many streams of one conn,
// beside a plain request, each echoing its own messages.
func TestH2ManyWebSocketsOneConn(t *testing.T) {
	l, roots := h2wsLB(t, nil, "", echo.WS(t, echo.WSOptions{}))
	c := dialRawH2(t, l.addr, roots)
	const n = 20
	ids := make([]uint32, n)
	streams := make([]*rawH2Stream, n)
	for i := range n {
		var h http.Header
		ids[i], streams[i], h = c.connect(fmt.Sprintf("/ws/%d", i), "websocket")
		if st := status(t, h); st != http.StatusOK {
			t.Fatalf("stream %d: :status %d", i, st)
		}
	}
	_, s := c.open(":method", "GET", ":scheme", "https", ":path", "/plain", ":authority", "localhost")
	if st := status(t, s.awaitHead(t)); st == 0 {
		t.Fatal("the plain request got no answer")
	}
	for round := range 2 {
		for i := range n {
			c.echo(t, ids[i], streams[i], fmt.Sprintf("stream %d round %d", i, round))
		}
	}
	wait.For(t, "20 tunnels", func() bool { return l.tunnelsOpen() == n })
}

// TestH2WebSocketIdle: an idle h2 WebSocket is closed after timeouts.idle,
// with a Close 1001 to the client, and its reservation released.
func TestH2WebSocketIdle(t *testing.T) {
	var a accessLines
	l, c, id, s := openH2WS(t, &a, "    timeouts: {idle: 300ms}\n")
	c.echo(t, id, s, "one")
	s.awaitGoingAway(t)
	c.send(id, maskedFrame(byte(wsframe.OpClose), []byte{0x03, 0xe9}))
	line := a.waitLines(t, 1)[0]
	checkFields(t, line, map[string]any{"msg": "tunnel", "reason": "idle", "close": float64(1001), "proto": "HTTP/2.0"})
	wait.For(t, "the reservation released", func() bool { return l.tunnelsOpen() == 0 })
}

// TestH2WebSocketGracefulClose: a backend that leaves the pool (a reload
// that removes it) ends its h2 WebSockets with Close 1001 at a frame
// boundary: a frame under way when the close begins arrives whole first.
func TestH2WebSocketGracefulClose(t *testing.T) {
	var a accessLines
	l, c, id, s := openH2WS(t, &a, "")
	c.echo(t, id, s, "before")
	// Half a frame from the client: the backend's Close must wait for the rest.
	frame := maskedFrame(byte(wsframe.OpText), []byte("split message"))
	c.send(id, frame[:5])
	wait.For(t, "the half frame relayed", func() bool { return tunnelRx(t, l) >= int64(len(frameBytes("before"))+5) })
	for _, b := range l.pools["p"].Backends() {
		b.CloseAll(t.Context(), 0, pool.ErrRemoved)
	}
	s.awaitGoingAway(t)
	c.send(id, frame[5:])
	c.send(id, maskedFrame(byte(wsframe.OpClose), []byte{0x03, 0xe9}))
	line := a.waitLines(t, 1)[0]
	checkFields(t, line, map[string]any{"msg": "tunnel", "reason": "removed", "close": float64(1001)})
	if rx := line["rx"].(float64); int(rx) < len(frameBytes("before"))+len(frame) {
		t.Errorf("rx %v: the split frame did not reach the backend whole", rx)
	}
}

// openH2WS is an h2 listener with extra keys in front of an echo backend,
// logging to a, and one WebSocket opened through it on a conn of its own.
func openH2WS(t *testing.T, a *accessLines, extra string) (*lb, *rawH2Client, uint32, *rawH2Stream) {
	t.Helper()
	l, roots := h2wsLB(t, a, extra, echo.WS(t, echo.WSOptions{}))
	c := dialRawH2(t, l.addr, roots)
	id, s, h := c.connect("/", "websocket")
	if st := status(t, h); st != http.StatusOK {
		t.Fatalf(":status %d, want 200", st)
	}
	return l, c, id, s
}

// awaitGoingAway reads the stream's next frame, which must be Close 1001.
func (s *rawH2Stream) awaitGoingAway(t *testing.T) {
	t.Helper()
	m, err := s.readFrame(t)
	if err != nil || m.op != wsframe.OpClose || len(m.payload) < 2 || m.payload[0] != 0x03 || m.payload[1] != 0xe9 {
		t.Fatalf("got %v (%v), want Close 1001", m, err)
	}
}

// frameBytes is the size of a masked text frame of msg.
func frameBytes(msg string) []byte { return maskedFrame(byte(wsframe.OpText), []byte(msg)) }

// tunnelRx is the bytes the test's tunnels took from clients so far.
func tunnelRx(t *testing.T, l *lb) int64 {
	t.Helper()
	var n float64
	for _, b := range l.pools["p"].Backends() {
		n += testutil.ToFloat64(l.metrics.Bytes.WithLabelValues("web", "p", b.String(), "rx"))
	}
	return int64(n)
}

// TestH2WebSocketDrain: a drain tells an h2 WebSocket Close 1001, as it tells
// one over HTTP/1.1, and the conn stays open for the client's Close reply.
func TestH2WebSocketDrain(t *testing.T) {
	var a accessLines
	l, c, id, s := openH2WS(t, &a, "")
	c.echo(t, id, s, "before")
	l.fl.Close() // stop accepting, as a shutdown does first
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		l.fl.Drain(ctx, 0, 0)
	}()
	s.awaitGoingAway(t)
	c.send(id, maskedFrame(byte(wsframe.OpClose), []byte{0x03, 0xe9}))
	line := a.waitLines(t, 1)[0]
	checkFields(t, line, map[string]any{"msg": "tunnel", "proto": "HTTP/2.0", "reason": "drain", "close": float64(1001)})
	select {
	case <-drained:
	case <-time.After(10 * time.Second):
		t.Fatal("Drain still running after the conn's only stream ended")
	}
}
