package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/loopback"
	"github.com/wslb/wslb/internal/wait"
)

// fdsLimit is the RLIMIT_NOFILE of the wslb process TestOutOfDescriptors
// starves: the 300, so about a hundred tunnels fill it.
const fdsLimit = 300

// TestOutOfDescriptors runs wslb as a process with RLIMIT_NOFILE 300 in
// front of two real WebSocket backends, with checks every 100 ms that one
// failure takes a backend down and passive ejection at the first failed
// dial, so a local shortage blamed on a backend would show at once:
//
//   - 280 idle conns to the admin listener (the starvation) leave
//     the data plane serving: 64 are served, the rest wait in the queue;
//   - WebSocket tunnels fill the descriptors until new ones are refused
//     with a 503 (l7) or a close (l4), never left hanging;
//   - the admin listener still answers from the reserve: both backends up,
//     errors_total{reason="limit"} counted, no dial error, no failed check;
//   - every tunnel keeps echoing, and once some close a new conn is served
//     at once, through both listeners.
func TestOutOfDescriptors(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	exe := demoBuild(ctx, t)
	web, raw, admin := loopback.FreeAddr(t), loopback.FreeAddr(t), loopback.FreeAddr(t)
	path := filepath.Join(t.TempDir(), "wslb.yaml")
	cfg := fmt.Sprintf(`workers: 1
shutdown: {drain_timeout: 0s, close_spread: 0s}
admin: {listen: %s}
listeners:
  - {name: web, listen: %s, mode: l7, pool: ws}
  - {name: raw, listen: %s, mode: l4, pool: ws}
pools:
  - name: ws
    backends: [{address: %s}, {address: %s}]
    health: {check: tcp, interval: 100ms, timeout: 90ms, rise: 2, fall: 1}
    passive: {max_fails: 1, fail_timeout: 1m}
`, admin, web, raw, echo.WS(t, echo.WSOptions{}), echo.WS(t, echo.WSOptions{}))
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	// sh sets the soft and the hard limit, so the Go runtime's raise of the
	// soft one to the hard one at start leaves 300.
	p := demoStart(ctx, t, "sh", "-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, fdsLimit),
		exe, "-config", path, "-access-log", "off", "-log-level", "debug")
	if !wait.Until(30*time.Second, func() bool { p.running(t); return fdsGet(admin, "/readyz") == http.StatusOK }) {
		t.Fatalf("wslb not ready within 30s; stderr:\n%s", p.stderr.String())
	}
	openAtStart := scrapeMetrics(t, admin).sum("process_open_fds")

	fdsAdminFlood(ctx, t, admin, web)
	// The flood's conns are closed; those still queued are accepted, read
	// EOF and closed. Filling starts from where it started.
	scrapeUntil(t, admin, "the admin conns to close", func(s scrapeResult) bool {
		return s.sum("process_open_fds") <= openAtStart+1
	}, "process_open_fds")

	tunnels := fdsFill(ctx, t, "ws://"+web+"/")
	t.Logf("%d tunnels filled %d descriptors", len(tunnels), fdsLimit)
	fdsRefused(t, web, raw)
	// Hold the shortage over several check intervals, the tunnels echoing
	// all along: each interval is a check that could be blamed on a backend.
	skipped := func() int { return strings.Count(p.stderr.String(), "health check skipped") }
	round := 0
	if !wait.Until(20*time.Second, func() bool {
		round++
		for i, c := range tunnels {
			wsEcho(ctx, t, c, fmt.Sprintf("full %d.%d", round, i))
		}
		return skipped() >= 10
	}) {
		t.Fatalf("%d health checks skipped in 20s, want 10 (every 100ms while out of descriptors)", skipped())
	}

	s := scrapeMetrics(t, admin) // the admin listener answers from the reserve
	for _, name := range []string{"wslb_backend_up", "wslb_errors_total", "wslb_health_checks_total"} {
		t.Logf("%s", s.lines(name))
	}
	if up := s.sum("wslb_backend_up", "pool", "ws"); up != 2 {
		t.Errorf("wslb_backend_up of pool ws sums to %v while out of descriptors, want 2: a local shortage blamed on the backends\n%s", up, s.lines("wslb_backend_up"))
	}
	if n := s.sum("wslb_errors_total", "reason", "limit"); n < 2 {
		t.Errorf("errors_total{reason=\"limit\"} = %v after refusals through both listeners, want at least 2", n)
	}
	if n := s.sum("wslb_errors_total", "reason", "dial"); n != 0 {
		t.Errorf("errors_total{reason=\"dial\"} = %v: dials failed for lack of descriptors and were counted against the backends", n)
	}
	if n := s.sum("wslb_health_checks_total", "result", "fail"); n != 0 {
		t.Errorf("%v failed health checks: checks without a descriptor counted as results", n)
	}

	// Service resumes the moment descriptors are free: no rise interval, no
	// ejection to wait out.
	half := len(tunnels) / 2
	for _, c := range tunnels[half:] {
		c.CloseNow()
	}
	tunnels = tunnels[:half]
	scrapeUntil(t, admin, "the closed tunnels to end", func(s scrapeResult) bool {
		return s.sum("wslb_connections_active", "listener", "web") <= float64(half)
	}, "wslb_connections_active")
	for _, url := range []string{"ws://" + web + "/", "ws://" + raw + "/"} {
		c := dialWS(ctx, t, url, nil)
		wsEcho(ctx, t, c, "after "+url)
		c.CloseNow()
	}
	for i, c := range tunnels {
		wsEcho(ctx, t, c, fmt.Sprintf("after %d", i))
	}
	if n := scrapeMetrics(t, admin).sum("wslb_backend_up", "pool", "ws"); n != 2 {
		t.Errorf("wslb_backend_up of pool ws sums to %v after the shortage, want 2", n)
	}
	p.running(t)
	if strings.Contains(p.stderr.String(), "backend down") {
		t.Errorf("a backend was marked down; stderr:\n%s", p.stderr.String())
	}
}

// fdsAdminFlood opens 280 idle conns to the admin listener, as the issue's
// starvation did under the same limit, and checks the data plane still
// serves a WebSocket meanwhile; then closes them.
func fdsAdminFlood(ctx context.Context, t *testing.T, admin, web string) {
	t.Helper()
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for range 280 {
		// The kernel completes the handshake whether or not wslb accepts.
		c, err := net.DialTimeout("tcp", admin, 5*time.Second)
		if err != nil {
			t.Fatalf("dial the admin listener: %v", err)
		}
		idle = append(idle, c)
	}
	c := dialWS(ctx, t, "ws://"+web+"/", nil)
	wsEcho(ctx, t, c, "beside 280 idle admin conns")
	c.CloseNow()
}

// fdsFill opens WebSocket tunnels to url until new ones are refused with a
// 503 several times in a row (a health check holding a descriptor for a
// moment may cause one refusal early), and returns them. A dial that neither
// succeeds nor gets a 503 within 5 s fails the test: a conn left waiting
// in the accept queue is what the reserve exists to prevent.
func fdsFill(ctx context.Context, t *testing.T, url string) []*websocket.Conn {
	t.Helper()
	var conns []*websocket.Conn
	refusals := 0
	for i := 0; i < fdsLimit && refusals < 3; i++ {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, resp, err := websocket.Dial(dctx, url, nil)
		cancel()
		switch {
		case err == nil:
			t.Cleanup(func() { c.CloseNow() })
			wsEcho(ctx, t, c, fmt.Sprintf("tunnel %d", len(conns)))
			conns = append(conns, c)
			refusals = 0
		case resp != nil && resp.StatusCode == http.StatusServiceUnavailable:
			refusals++
		default:
			t.Fatalf("WebSocket %d: %v (want a tunnel or a 503 within 5s)", i, err)
		}
	}
	if refusals < 3 {
		t.Fatalf("%d tunnels and never refused: the limit is not %d", len(conns), fdsLimit)
	}
	return conns
}

// fdsRefused checks a new conn is answered at once through each listener:
// a 503 from l7, a close from l4, both within 5 s.
func fdsRefused(t *testing.T, web, raw string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", web, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", web)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("l7 out of descriptors: %v, want a 503 at once", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("l7 out of descriptors: %d %q, want 503", resp.StatusCode, body)
	}

	r, err := net.DialTimeout("tcp", raw, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.SetDeadline(time.Now().Add(5 * time.Second))
	_, err = r.Read(make([]byte, 1))
	if errors.Is(err, os.ErrDeadlineExceeded) || err == nil {
		t.Fatalf("l4 out of descriptors: read %v, want the conn closed at once", err)
	}
}

// fdsGet is the status of GET path on the admin listener, 0 on an error.
func fdsGet(admin, path string) int {
	resp, err := scrapeClient.Get("http://" + admin + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestDescriptorCount: the descriptor count stays exact through what moves
// it: plain requests over kept-alive backend conns (the idle cache), tunnels
// through l7 and l4, a health check, a reload that rebinds a listener and
// adds a backend, and the drain. Once the clients are gone it is back where
// it started but for the idle conns, and after the drain at the baseline.
func TestDescriptorCount(t *testing.T) {
	ctx := t.Context()
	ws := echo.WS(t, echo.WSOptions{})
	web := mHTTPBackend(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "wslb.yaml")
	conf := func(raw, extra string) string {
		return fmt.Sprintf(`workers: 1
admin: {listen: "127.0.0.1:0"}
listeners:
  - name: web
    listen: 127.0.0.1:0
    mode: l7
    pool: ws
    routes: [{path: /api/, pool: web}]
  - {name: raw, listen: %s, mode: l4, pool: ws}
pools:
  - {name: ws, backends: [{address: %s}%s], health: {check: none}}
  - {name: web, idle_per_worker: 4, backends: [{address: %s}], health: {check: http, path: /, interval: 1h, timeout: 1s}}
`, raw, ws, extra, web)
	}
	if err := os.WriteFile(path, []byte(conf(loopback.FreeAddr(t), "")), 0o644); err != nil {
		t.Fatal(err)
	}
	r := startServeFile(t, path)
	in := r.in
	g := in.gen.Load()
	wait.For(t, "the web backend's first check", func() bool { return g.pools["web"].Backends()[0].Up() })
	idle := func() (n int64) {
		for _, p := range in.gen.Load().pools {
			for _, b := range p.Backends() {
				n += b.Idle()
			}
		}
		return n
	}
	start := in.fds.Used()

	hc := &http.Client{Timeout: 5 * time.Second}
	var tunnels []*websocket.Conn
	use := func(webAddr, rawAddr string) {
		for i := range 6 {
			resp, err := hc.Get("http://" + webAddr + "/api/" + fmt.Sprint(i))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		for _, u := range []string{"ws://" + webAddr + "/", "ws://" + rawAddr + "/"} {
			for range 3 {
				c := dialWS(ctx, t, u, nil)
				wsEcho(ctx, t, c, "count me")
				tunnels = append(tunnels, c)
			}
		}
	}
	use(in.addr(0), in.addr(1))
	// A reload that rebinds the l4 listener and adds a backend.
	rewrite := conf(loopback.FreeAddr(t), ", {address: "+echo.WS(t, echo.WSOptions{})+"}")
	before := testutil.ToFloat64(in.metrics.ConfigReloads.WithLabelValues("ok"))
	if err := os.WriteFile(path, []byte(rewrite), 0o644); err != nil {
		t.Fatal(err)
	}
	in.reloadNow <- struct{}{}
	wait.For(t, "the reload", func() bool { return testutil.ToFloat64(in.metrics.ConfigReloads.WithLabelValues("ok")) == before+1 })
	use(in.addr(0), in.addr(1))

	if in.fds.Used() <= start+int64(2*len(tunnels)) {
		t.Fatalf("%d counted with %d tunnels open, from %d", in.fds.Used(), len(tunnels), start)
	}
	for _, c := range tunnels {
		c.CloseNow()
	}
	hc.CloseIdleConnections()
	var got, cached int64
	if !wait.Until(wait.Timeout, func() bool {
		got, cached = in.fds.Used(), idle()
		return got-cached == start && cached > 0
	}) {
		t.Fatalf("%d counted with the clients gone and %d idle backend conns, want %d + %d", got, cached, start, cached)
	}
	r.cancel()
	if code := r.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if in.fds.Used() != in.fds.Baseline() {
		t.Fatalf("%d counted after the drain, want the baseline %d", in.fds.Used(), in.fds.Baseline())
	}
}
