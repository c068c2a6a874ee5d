package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wslb/wslb/internal/proctest"
	"github.com/wslb/wslb/internal/syncbuf"
	"github.com/wslb/wslb/internal/wait"
)

// faultIdle is timeouts.idle and timeouts.handshake of the faults tests:
// short, so that a silent backend is given up on at once.
const faultIdle = 500 * time.Millisecond

// faultCloseWait is how long a WebSocket tunnel's graceful close (at the
// idle timeout) waits for a silent backend's Close reply: shorter than the
// default 5 s, so that the end comes within wait.Timeout.
const faultCloseWait = time.Second

// faultConfig is the config of a faults test: an l7 listener (web) and an
// l4 one (tcp) with idle as their idle and handshake timeouts, and their
// pool p of one backend.
func faultConfig(addr string, weight int, idle time.Duration) string {
	return fmt.Sprintf(`
admin: {listen: ""}
shutdown: {drain_timeout: 0s, close_spread: 0s}
listeners:
  - {name: web, listen: 127.0.0.1:0, mode: l7, pool: p, timeouts: {idle: %[3]v, handshake: %[3]v, connect: 1s}}
  - {name: tcp, listen: 127.0.0.1:0, mode: l4, pool: p, timeouts: {idle: %[3]v, handshake: %[3]v, connect: 1s}}
pools:
  - {name: p, health: {check: none}, backends: [{address: %[1]s, weight: %[2]d}]}
`, addr, weight, idle)
}

// faultFixture is one wslb in front of one backend process, on a config
// file that a reload reads again, with its access log kept.
type faultFixture struct {
	t    *testing.T
	be   *proctest.Backend
	f    *reloadFixture
	logs *syncbuf.Buffer
}

func startFaultFixture(t *testing.T, prog *proctest.Program, idle time.Duration) *faultFixture {
	be := prog.Start(t, "x", "")
	f := &reloadFixture{t: t, path: filepath.Join(t.TempDir(), "config.yaml")}
	f.write(faultConfig(be.Addr, 1, idle))
	r, logs := startServeLogFile(t, f.path, faultCloseWait)
	f.r = r
	return &faultFixture{t: t, be: be, f: f, logs: logs}
}

// url is the URL of path through the listener that via goes through.
func (fx *faultFixture) url(via, path string) string {
	scheme, i := "http", 0
	switch via {
	case "ws-l7":
		scheme = "ws"
	case "ws-l4":
		scheme, i = "ws", 1
	}
	return scheme + "://" + fx.f.r.in.addr(i) + path
}

// signal does what fault says to the backend's process, if anything.
func (fx *faultFixture) signal(fault string) {
	switch fault {
	case "kill":
		fx.be.Kill()
	case "stop":
		fx.be.Stop()
	}
}

// request sends a GET of path through via's listener (an upgrade for a
// WebSocket) and returns the answer's status, or closed when the conn ended
// without one.
func (fx *faultFixture) request(ctx context.Context, via, path string) string {
	if via == "ws-l7" || via == "ws-l4" {
		c, resp, err := websocket.Dial(ctx, fx.url(via, path), nil)
		switch {
		case err == nil:
			c.CloseNow()
			return "101"
		case resp != nil:
			return strconv.Itoa(resp.StatusCode)
		}
		return endOf(ctx, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fx.url(via, path), nil)
	if err != nil {
		return err.Error()
	}
	resp, err := faultClient.Do(req)
	if err != nil {
		return endOf(ctx, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return strconv.Itoa(resp.StatusCode)
}

// faultClient makes a new conn for every request, so that a case's request
// is the only one its conn carries.
var faultClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// startBody sends a GET of path and returns its answer's body once its
// first 10 bytes have arrived.
func (fx *faultFixture) startBody(ctx context.Context, via, path string) io.ReadCloser {
	t := fx.t
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fx.url(via, path), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := faultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want the backend's 200", resp.StatusCode)
	}
	first := make([]byte, 10)
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "0123456789" {
		t.Fatalf("first bytes of the body %q, %v", first, err)
	}
	return resp.Body
}

// tunnelEnd reads c until it ends: closed, or message when something
// arrived instead.
func tunnelEnd(ctx context.Context, c *websocket.Conn) string {
	_, msg, err := c.Read(ctx)
	if websocket.CloseStatus(err) == websocket.StatusGoingAway {
		return "going away" // a Close 1001 from wslb: it ended the tunnel itself
	}
	if err != nil {
		return endOf(ctx, err)
	}
	return fmt.Sprintf("message %q", msg)
}

// bodyEnd reads the rest of body: truncated when it ends early, complete
// when it does not.
func bodyEnd(ctx context.Context, body io.Reader) string {
	_, err := io.Copy(io.Discard, body)
	switch {
	case err == nil:
		return "complete"
	case ctx.Err() != nil:
		return endOf(ctx, err)
	}
	return "truncated"
}

// endOf names the end of a client read or dial that failed with err: hung
// when the client's deadline (ctx) ended it, closed when the conn did.
func endOf(ctx context.Context, err error) string {
	if ctx.Err() != nil {
		return "hung: " + err.Error()
	}
	return "closed"
}

// checkEnded checks what wslb made of a case's conn: its access line's
// reason (and status), a tunnel counted as closed for that reason, and the
// active gauge, the backend's reservation, the listener's conn and the
// engine's tunnel all gone.
func (fx *faultFixture) checkEnded(tc faultCase) {
	t, in := fx.t, fx.f.r.in
	t.Helper()
	listener := "web"
	if tc.via == "ws-l4" {
		listener = "tcp"
	}
	var line map[string]any
	wait.For(t, "the access line", func() bool {
		lines := fx.logs.Lines()
		return len(lines) > 0 && json.Unmarshal([]byte(lines[0]), &line) == nil
	})
	if line["reason"] != tc.reason {
		t.Errorf("access line reason %v, want %s: %v", line["reason"], tc.reason, line)
	}
	if code, err := strconv.Atoi(tc.want); err == nil && line["status"] != float64(code) {
		t.Errorf("access line status %v, want %d", line["status"], code)
	}
	if tc.moment == inTunnel {
		closed := in.metrics.TunnelsClosed.WithLabelValues(listener, "p", tc.reason)
		if got := testutil.ToFloat64(closed); got != 1 {
			t.Errorf("tunnels_closed{reason=%q} = %v, want 1", tc.reason, got)
		}
	}
	b := in.gen.Load().pools["p"].Backends()[0]
	active := in.metrics.ConnectionsActive.WithLabelValues(listener, "p", b.String())
	l := in.gen.Load().listeners[0].fl
	if listener == "tcp" {
		l = in.gen.Load().listeners[1].fl
	}
	wait.For(t, "the gauge, the reservation, the client conn and the tunnel gone", func() bool {
		return testutil.ToFloat64(active) == 0 && b.Active() == 0 && l.Active() == 0 && in.engine.Tunnels() == 0
	})
}
