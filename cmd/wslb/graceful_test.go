package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wslb/wslb/internal/certtest"
	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/syncbuf"
	"github.com/wslb/wslb/internal/wait"
)

// gracefulFixture is wslb with three listeners on one pool: web (l7), wss
// (l7 over TLS, so its tunnels run on the goroutine relay) and tcp (l4),
// over a backend that records the close code of every conn it sees end.
type gracefulFixture struct {
	t       *testing.T
	path    string
	r       *running
	logs    *syncbuf.Buffer
	closes  chan websocket.StatusCode // what the backends heard, one per conn
	tlsConf *tls.Config               // a client config trusting wss's certificate
	a, b    string                    // two backends: the pool starts on a
}

func newGracefulFixture(t *testing.T, idle time.Duration) *gracefulFixture {
	f := &gracefulFixture{t: t, path: filepath.Join(t.TempDir(), "wslb.yaml"), closes: make(chan websocket.StatusCode, 16)}
	ca := certtest.NewCA(t)
	certFile, keyFile := certtest.Write(t, ca.Issue(t, certtest.Leaf{Names: []string{"127.0.0.1"}}))
	f.tlsConf = &tls.Config{RootCAs: ca.Pool()}
	onClose := func(code websocket.StatusCode) { f.closes <- code }
	f.a = echo.WS(t, echo.WSOptions{Name: "a", OnClose: onClose})
	f.b = echo.WS(t, echo.WSOptions{Name: "b", OnClose: onClose})
	f.write(fmt.Sprintf(`
admin: {listen: ""}
shutdown: {drain_timeout: 100ms, close_spread: 100ms}
listeners:
  - {name: web, listen: 127.0.0.1:0, mode: l7, pool: ws, timeouts: {idle: %[1]v}}
  - {name: wss, listen: 127.0.0.1:0, mode: l7, pool: ws, timeouts: {idle: %[1]v}, tls: {cert: %[2]s, key: %[3]s}}
  - {name: tcp, listen: 127.0.0.1:0, mode: l4, pool: ws, timeouts: {idle: %[1]v}}
pools:
  - {name: ws, health: {check: none}, backends: [{address: %%s}]}
`, idle, certFile, keyFile))
	f.r, f.logs = startServeLogFile(t, f.path, 0)
	return f
}

// write writes the config with the pool on backend addr; the first call
// keeps the text as the template of the others.
func (f *gracefulFixture) write(template string) {
	f.t.Helper()
	if err := os.WriteFile(f.path+".template", []byte(template), 0o644); err != nil {
		f.t.Fatal(err)
	}
	f.use(f.a)
}

// use rewrites the config with the pool on backend addr.
func (f *gracefulFixture) use(addr string) {
	f.t.Helper()
	template, err := os.ReadFile(f.path + ".template")
	if err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(f.path, fmt.Appendf(nil, string(template), addr), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// dialAll opens one WebSocket through each listener and checks it echoes.
func (f *gracefulFixture) dialAll(ctx context.Context) map[string]*websocket.Conn {
	f.t.Helper()
	in := f.r.in
	tlsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: f.tlsConf}}
	conns := map[string]*websocket.Conn{
		"web": dialWS(ctx, f.t, "ws://"+in.addr(0)+"/", nil),
		"wss": dialWS(ctx, f.t, "wss://"+in.addr(1)+"/", &websocket.DialOptions{HTTPClient: tlsClient}),
		"tcp": dialWS(ctx, f.t, "ws://"+in.addr(2)+"/", nil),
	}
	for name, c := range conns {
		wsEcho(ctx, f.t, c, "before the close, via "+name)
	}
	return conns
}

// expectCloses reads each conn until it ends and checks what the client
// saw: a Close 1001 with reason through l7, a plain cut (no Close frame,
// -1) through l4; the backend heard the same of each conn.
func (f *gracefulFixture) expectCloses(ctx context.Context, conns map[string]*websocket.Conn, reason string) {
	f.t.Helper()
	for name, c := range conns {
		_, _, err := c.Read(ctx)
		want := websocket.StatusGoingAway
		if name == "tcp" {
			want = -1
		}
		if got := websocket.CloseStatus(err); got != want {
			f.t.Errorf("%s: the client's read ended with %v (status %d), want status %d", name, err, got, want)
		}
		var ce websocket.CloseError
		if want == websocket.StatusGoingAway && (!errors.As(err, &ce) || ce.Reason != reason) {
			f.t.Errorf("%s: close reason %q, want %q", name, ce.Reason, reason)
		}
	}
	heard := map[websocket.StatusCode]int{}
	for range conns {
		select {
		case code := <-f.closes:
			heard[code]++
		case <-ctx.Done():
			f.t.Fatalf("the backends heard %v, want the end of %d conns", heard, len(conns))
		}
	}
	if heard[websocket.StatusGoingAway] != 2 || heard[-1] != 1 {
		f.t.Errorf("the backends heard close codes %v, want 1001 from the two l7 tunnels and none (-1) from l4", heard)
	}
}

// expectAccess checks the access log holds a line for each l7 tunnel that
// says it ended for reason with a Close 1001, and none for the l4 conn.
func (f *gracefulFixture) expectAccess(reason string) {
	f.t.Helper()
	want := fmt.Sprintf(`"reason":%q,"close":1001`, reason)
	wait.For(f.t, "two access lines with "+want, func() bool { return strings.Count(f.logs.String(), want) == 2 })
	for line := range strings.Lines(f.logs.String()) {
		if strings.Contains(line, `"close"`) && !strings.Contains(line, want) {
			f.t.Errorf("access line %s: a close code on a line other than the two tunnels'", line)
		}
	}
}

// closedFor is wslb_tunnels_closed_total for listener and reason.
func (f *gracefulFixture) closedFor(listener, reason string) float64 {
	return testutil.ToFloat64(f.r.in.metrics.TunnelsClosed.WithLabelValues(listener, "ws", reason))
}

// TestGracefulCloseEndToEnd: every close wslb begins on a WebSocket tunnel
// (drain, the backend removed by a reload, the idle timeout) reaches the
// client as a Close 1001 with the reason word, through plain l7 (the epoll
// engine) and wss (the TLS relay), and the backend as a masked Close 1001
// (coder/websocket refuses an unmasked frame from a client, so its 1001 is
// the proof); an l4 conn carrying the same WebSocket is cut plainly. The
// access line of each tunnel says close 1001; the metric counts the reason.
func TestGracefulCloseEndToEnd(t *testing.T) {
	for _, tc := range []struct {
		reason string
		idle   time.Duration
		fire   func(f *gracefulFixture)
	}{
		{reason: "drain", idle: time.Hour, fire: func(f *gracefulFixture) { f.r.cancel() }},
		{reason: "removed", idle: time.Hour, fire: func(f *gracefulFixture) {
			f.use(f.b)
			f.r.in.reloadNow <- struct{}{}
		}},
		{reason: "idle", idle: 500 * time.Millisecond, fire: func(*gracefulFixture) {}},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			f := newGracefulFixture(t, tc.idle)
			conns := f.dialAll(ctx)
			tc.fire(f)
			f.expectCloses(ctx, conns, tc.reason)
			f.expectAccess(tc.reason)
			for _, l := range []string{"web", "wss"} {
				if n := f.closedFor(l, tc.reason); n != 1 {
					t.Errorf("wslb_tunnels_closed_total{listener=%q, reason=%q} = %v, want 1", l, tc.reason, n)
				}
			}
		})
	}
}
