package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/wait"
	"github.com/wslb/wslb/pool"
)

// fleetFixture is wslb with one l7 listener on pool ws of two echo
// backends, a and b, least_conn, checks off, started from a file that
// reloads read again.
type fleetFixture struct {
	t    *testing.T
	path string
	r    *running
	a, b string
	// admin is the admin listen line; adminURL what a client dials.
	admin string
}

// fleetSpread is shutdown.close_spread: the window a maint spreads over.
const fleetSpread = 600 * time.Millisecond

func newFleet(t *testing.T, admin string) *fleetFixture {
	f := &fleetFixture{t: t, path: filepath.Join(t.TempDir(), "wslb.yaml"), admin: admin}
	f.a = echo.WS(t, echo.WSOptions{Name: "a"})
	f.b = echo.WS(t, echo.WSOptions{Name: "b"})
	f.write(f.a, f.b)
	f.r, _ = startServeLogFile(t, f.path, 0)
	return f
}

// write writes the config with the pool on backends.
func (f *fleetFixture) write(backends ...string) {
	f.t.Helper()
	var bs []string
	for _, b := range backends {
		bs = append(bs, "{address: "+b+"}")
	}
	text := fmt.Sprintf(`
admin: %s
shutdown: {drain_timeout: 0s, close_spread: %v}
listeners:
  - {name: web, listen: 127.0.0.1:0, mode: l7, pool: ws}
pools:
  - {name: ws, health: {check: none}, backends: [%s]}
`, f.admin, fleetSpread, strings.Join(bs, ", "))
	if err := os.WriteFile(f.path+".tmp", []byte(text), 0o644); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Rename(f.path+".tmp", f.path); err != nil {
		f.t.Fatal(err)
	}
}

// reload rewrites the config with backends and reloads, as SIGHUP does.
func (f *fleetFixture) reload(backends ...string) {
	f.t.Helper()
	in := f.r.in
	before := testutil.ToFloat64(in.metrics.ConfigReloads.WithLabelValues("ok"))
	f.write(backends...)
	in.reloadNow <- struct{}{}
	wait.For(f.t, "a reload", func() bool {
		return testutil.ToFloat64(in.metrics.ConfigReloads.WithLabelValues("ok")) == before+1
	})
}

// dial opens a WebSocket through wslb and returns it with the name of the
// backend that greeted it.
func (f *fleetFixture) dial(ctx context.Context) (*websocket.Conn, string) {
	f.t.Helper()
	c := dialWS(ctx, f.t, "ws://"+f.r.in.addr(0)+"/?hello=1", nil)
	return c, greeting(ctx, f.t, c)
}

// backend is the running *pool.Backend at addr.
func (f *fleetFixture) backend(addr string) *pool.Backend {
	f.t.Helper()
	b, ok := f.r.in.gen.Load().pools["ws"].Backend(addr)
	if !ok {
		f.t.Fatalf("no backend %s in the running pool", addr)
	}
	return b
}

// ctl runs `wslb ctl -admin ADMIN args...` and returns its exit code and
// output.
func (f *fleetFixture) ctl(ctx context.Context, adminAddr string, args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := run(ctx, append([]string{"ctl", "-admin", adminAddr}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

// stateGauge is wslb_backend_state of addr for state, as a scrape sees it.
func (f *fleetFixture) stateGauge(addr, state string) float64 {
	f.r.in.refreshGauges()
	return testutil.ToFloat64(f.r.in.metrics.BackendState.WithLabelValues("ws", addr, state))
}

// apiDo sends one request with body to url and returns the status and the
// body of the answer.
func apiDo(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

// TestFleetDrainMaintReady: through wslb ctl and the API over TCP, drain
// sends new conns to the other backend while the drained one's tunnels
// keep echoing; bad requests change nothing; maint closes its tunnels with
// a Close 1001 "maint", spread over close_spread; ready brings it back;
// the state outlives a reload and is forgotten when a reload removes the
// backend.
func TestFleetDrainMaintReady(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f := newFleet(t, "{listen: 127.0.0.1:0}")
	admin := f.r.in.adminLn.Addr().String()
	base := "http://" + admin

	on := map[string][]*websocket.Conn{}
	for range 4 {
		c, name := f.dial(ctx)
		on[name] = append(on[name], c)
	}
	if len(on["a"]) != 2 || len(on["b"]) != 2 {
		t.Fatalf("least_conn spread %d/%d, want 2/2", len(on["a"]), len(on["b"]))
	}
	echoAll := func(what string) {
		t.Helper()
		for name, cs := range on {
			for i, c := range cs {
				wsEcho(ctx, t, c, fmt.Sprintf("%s: %s %d", what, name, i))
			}
		}
	}

	code, out, errOut := f.ctl(ctx, admin, "drain", "ws", f.a)
	if code != 0 || out != fmt.Sprintf("ws %s: drain (health up, 2 active)\n", f.a) {
		t.Fatalf("ctl drain: exit %d, %q, %q", code, out, errOut)
	}
	for i := range 3 {
		if c, name := f.dial(ctx); name != "b" {
			t.Fatalf("new conn %d after drain went to %s", i, name)
		} else {
			c.Close(websocket.StatusNormalClosure, "")
		}
	}
	echoAll("drained")
	if f.stateGauge(f.a, "drain") != 1 || f.stateGauge(f.a, "ready") != 0 || f.stateGauge(f.b, "ready") != 1 {
		t.Fatalf("wslb_backend_state: a drain %v, a ready %v, b ready %v", f.stateGauge(f.a, "drain"), f.stateGauge(f.a, "ready"), f.stateGauge(f.b, "ready"))
	}
	code, out, _ = f.ctl(ctx, admin, "pools")
	if code != 0 || !strings.Contains(out, "POOL  BACKEND") || !strings.Contains(out, f.a+"  up      drain") {
		t.Fatalf("ctl pools: exit %d\n%s", code, out)
	}

	// Bad input: each refused with its message; no state, conn or tunnel moves.
	for _, tc := range []struct {
		method, path, body string
		code               int
		msg                string
	}{
		{"PUT", "/api/v1/pools/nope/backends/" + f.a + "/state", `{"state":"maint"}`, 404, `no pool named \"nope\" (pools: ws)`},
		{"PUT", "/api/v1/pools/ws/backends/127.0.0.1:1/state", `{"state":"maint"}`, 404, `pool ws has no backend \"127.0.0.1:1\"`},
		{"PUT", "/api/v1/pools/ws/backends/" + f.a + "/state", `{"state":"gone"}`, 400, `unknown backend state \"gone\": use ready, drain or maint`},
		{"PUT", "/api/v1/pools/ws/backends/" + f.a + "/state", `{"state":`, 400, `bad JSON body`},
		{"PUT", "/api/v1/pools/ws/backends/" + f.a + "/state", `{"state":"maint","now":1}`, 400, `unknown field \"now\"`},
		{"POST", "/api/v1/pools/nope/rebalance", ``, 404, `no pool named`},
	} {
		if code, body := apiDo(t, tc.method, base+tc.path, tc.body); code != tc.code || !strings.Contains(body, tc.msg) {
			t.Errorf("%s %s %s: %d %s, want %d with %s", tc.method, tc.path, tc.body, code, body, tc.code, tc.msg)
		}
	}
	if code, _, errOut := f.ctl(ctx, admin, "maint", "ws", "127.0.0.1:1"); code != 1 || !strings.Contains(errOut, `pool ws has no backend "127.0.0.1:1"`) {
		t.Errorf("ctl maint of an unknown backend: exit %d, %q", code, errOut)
	}
	if code, _, _ := f.ctl(ctx, admin, "maint", "ws"); code != 2 {
		t.Errorf("ctl maint with one argument: exit %d, want 2", code)
	}
	if f.backend(f.a).Admin() != pool.AdminDrain || f.backend(f.b).Admin() != pool.AdminReady {
		t.Fatalf("states after bad input: %v, %v", f.backend(f.a).Admin(), f.backend(f.b).Admin())
	}
	echoAll("after bad input")
	if n := testutil.ToFloat64(f.r.in.metrics.TunnelsClosed.WithLabelValues("web", "ws", "maint")); n != 0 {
		t.Fatalf("tunnels closed for maint after bad input: %v", n)
	}

	// Both out: /readyz says why.
	apiDo(t, "PUT", base+"/api/v1/pools/ws/backends/"+f.b+"/state", `{"state":"drain"}`)
	if code, body := apiDo(t, "GET", base+"/readyz", ""); code != 503 || !strings.Contains(body, "pool ws has no backend up (2 in drain or maint)") {
		t.Fatalf("readyz with both drained: %d %s", code, body)
	}
	apiDo(t, "PUT", base+"/api/v1/pools/ws/backends/"+f.b+"/state", `{"state":"ready"}`)

	// maint: a's clients get a Close 1001 "maint", the second half a spread later.
	start := time.Now()
	if code, body := apiDo(t, "PUT", base+"/api/v1/pools/ws/backends/"+f.a+"/state", `{"state":"maint"}`); code != 200 || !strings.Contains(body, `"admin_state":"maint"`) {
		t.Fatalf("PUT maint: %d %s", code, body)
	}
	var last time.Duration
	for i, c := range on["a"] {
		_, _, err := c.Read(ctx)
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.StatusGoingAway || ce.Reason != "maint" {
			t.Fatalf("a's conn %d ended with %v, want Close 1001 maint", i, err)
		}
		last = time.Since(start)
	}
	// The second of two is closed at spread/2: a lower bound, which no
	// load can make early.
	if last < fleetSpread/2 {
		t.Errorf("the last maint close came %v after the PUT, want at least %v (spread)", last, fleetSpread/2)
	}
	delete(on, "a")
	wait.For(t, "two tunnels closed for maint", func() bool {
		return testutil.ToFloat64(f.r.in.metrics.TunnelsClosed.WithLabelValues("web", "ws", "maint")) == 2
	})
	echoAll("b after a's maint")

	// ready: a is the least loaded again and takes the next conn.
	if code, out, _ := f.ctl(ctx, admin, "ready", "ws", f.a); code != 0 || !strings.HasPrefix(out, "ws "+f.a+": ready") {
		t.Fatalf("ctl ready: %d %q", code, out)
	}
	if _, name := f.dial(ctx); name != "a" {
		t.Fatalf("after ready the next conn went to %s", name)
	}

	// Kept across a reload that keeps the backend; forgotten by one that
	// removes it, so re-added it starts ready.
	f.backend(f.a).SetAdmin(pool.AdminDrain)
	f.reload(f.a, f.b)
	if f.backend(f.a).Admin() != pool.AdminDrain {
		t.Fatalf("after a reload: %v, want drain kept", f.backend(f.a).Admin())
	}
	f.reload(f.b)
	if f.r.in.metrics.BackendState.DeleteLabelValues("ws", f.a, "drain") {
		t.Errorf("wslb_backend_state of a removed backend is still there")
	}
	f.reload(f.a, f.b)
	if got := f.backend(f.a).Admin(); got != pool.AdminReady || f.stateGauge(f.a, "ready") != 1 {
		t.Fatalf("re-added backend: %v, want ready", got)
	}
	echoAll("end")
}

// TestFleetCtlUnixToken: the admin listener on a unix socket with a token:
// wslb ctl with -token-file lists and changes; without the token, or with
// a wrong one, it fails with the server's message and changes nothing.
func TestFleetCtlUnixToken(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")
	token, wrong := filepath.Join(dir, "token"), filepath.Join(dir, "wrong")
	os.WriteFile(token, []byte("  t0ken\n"), 0o600)
	os.WriteFile(wrong, []byte("nope"), 0o600)
	f := newFleet(t, fmt.Sprintf("{listen: unix:%s, token_file: %s}", sock, token))
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("admin socket: %v, %v", fi, err)
	}
	c, _ := f.dial(ctx)

	admin := "unix:" + sock
	if code, _, errOut := f.ctl(ctx, admin, "drain", "ws", f.a); code != 1 || !strings.Contains(errOut, "missing token: send Authorization: Bearer TOKEN") {
		t.Fatalf("ctl without the token: %d %q", code, errOut)
	}
	if code, _, errOut := f.ctl(ctx, admin, "-token-file", wrong, "pools"); code != 1 || !strings.Contains(errOut, "wrong token: send the one in admin.token_file (HTTP 401)") {
		t.Fatalf("ctl with a wrong token: %d %q", code, errOut)
	}
	if code, _, _ := f.ctl(ctx, admin, "-token-file", filepath.Join(dir, "missing"), "pools"); code != 2 {
		t.Fatalf("ctl with a missing token file: %d, want 2", code)
	}
	if f.backend(f.a).Admin() != pool.AdminReady {
		t.Fatal("a refused request changed the state")
	}
	code, out, errOut := run2(ctx, "ctl", "-admin", admin, "-token-file", token, "pools")
	if code != 0 || !strings.Contains(out, "HEALTH  ADMIN  WEIGHT  ACTIVE") || !strings.Contains(out, f.b) {
		t.Fatalf("ctl pools: %d %q %q", code, out, errOut)
	}
	code, out, _ = f.ctl(ctx, admin, "-token-file", token, "drain", "ws", f.b)
	if code != 0 || f.backend(f.b).Admin() != pool.AdminDrain {
		t.Fatalf("ctl drain: %d %q", code, out)
	}
	if code, out, _ = f.ctl(ctx, admin, "-token-file", token, "rebalance", "ws"); code != 0 || out != "ws: rebalancing, 0 tunnel(s) will move\n" {
		t.Fatalf("ctl rebalance: %d %q", code, out)
	}
	wsEcho(ctx, t, c, "still here")

	// A reload re-reads the token file.
	os.WriteFile(token, []byte("n3w"), 0o600)
	f.reload(f.a, f.b)
	if code, _, errOut := f.ctl(ctx, admin, "-token-file", wrong, "pools"); code != 1 || !strings.Contains(errOut, "wrong token") {
		t.Fatalf("old token after the reload: %d %q", code, errOut)
	}
	if code, _, errOut := f.ctl(ctx, admin, "-token-file", token, "ready", "ws", f.b); code != 0 {
		t.Fatalf("new token after the reload: %d %q", code, errOut)
	}
}

// run2 is run with its output captured.
func run2(ctx context.Context, args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := run(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}
