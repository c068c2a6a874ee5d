package admin

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/metrics"
	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/status"
)

// apiFixture is an admin handler over one real pool "ws" of two backends
// (10.0.0.1:80, 10.0.0.2:80; nothing is dialled), served on loopback.
type apiFixture struct {
	srv        *httptest.Server
	pool       *pool.Pool
	rebalanced []string
}

// newAPI serves the handler with token (may be "") and addr as the bound
// address the rules are judged by: a crafted non-loopback one tests the
// 403 rule without binding anything but loopback.
func newAPI(t *testing.T, token string, addr net.Addr) *apiFixture {
	t.Helper()
	pc := config.Pool{Name: "ws", Balance: config.BalanceLeastConn}
	for _, a := range []string{"10.0.0.1:80", "10.0.0.2:80"} {
		ap := netip.MustParseAddrPort(a)
		pc.Backends = append(pc.Backends, config.Backend{Address: a, Weight: 1, Addr: ap})
	}
	f := &apiFixture{pool: pool.New(pc)}
	pools := map[string]*pool.Pool{"ws": f.pool}
	cfg := &config.Config{Pools: []config.Pool{pc}}
	m := metrics.New(prometheus.NewRegistry())
	board := status.NewBoard(time.Second)
	f.srv = httptest.NewServer(routes(Options{
		Gatherer: prometheus.NewRegistry(),
		Ready:    func() (bool, string) { return true, "ready" },
		Status: func() status.Snapshot {
			return board.Snapshot(status.Sources{Version: "test", Config: cfg, Pools: pools, Metrics: m,
				Ready: func() (bool, string) { return true, "ready" }}, time.Now())
		},
		Addr:  addr,
		Pools: func() map[string]*pool.Pool { return pools },
		Rebalance: func(name string) (int, error) {
			f.rebalanced = append(f.rebalanced, name)
			return 3, nil
		},
		Token: func() string { return token },
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// do sends one request and returns the status, the body and its "error".
func (f *apiFixture) do(t *testing.T, method, path, auth, body string, header ...string) (int, http.Header, string, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	cl := &http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var e struct {
		Error string `json:"error"`
	}
	json.Unmarshal(raw, &e)
	return resp.StatusCode, resp.Header, string(raw), e.Error
}

// states are the admin states of the fixture's backends, in order.
func (f *apiFixture) states() string {
	var out []string
	for _, b := range f.pool.Backends() {
		out = append(out, b.Admin().String())
	}
	return strings.Join(out, ",")
}

const statePath = "/api/v1/pools/ws/backends/10.0.0.2:80/state"

// TestAPIState: a PUT sets the state and answers the backend's JSON as
// /status.json has it; GET /api/v1/pools lists the pools; rebalance
// answers 202 with how many will move.
func TestAPIState(t *testing.T) {
	f := newAPI(t, "", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9090})
	code, _, body, _ := f.do(t, "PUT", statePath, "", `{"state": "drain"}`)
	var b status.Backend
	if err := json.Unmarshal([]byte(body), &b); code != 200 || err != nil || b.Address != "10.0.0.2:80" || b.AdminState != "drain" || b.Up {
		t.Fatalf("PUT drain: %d %s", code, body)
	}
	if f.states() != "ready,drain" {
		t.Fatalf("states %s", f.states())
	}
	code, _, body, _ = f.do(t, "GET", "/api/v1/pools", "", "")
	var pools struct{ Pools []status.Pool }
	if err := json.Unmarshal([]byte(body), &pools); code != 200 || err != nil || len(pools.Pools) != 1 ||
		len(pools.Pools[0].Backends) != 2 || pools.Pools[0].Backends[1].AdminState != "drain" {
		t.Fatalf("GET pools: %d %s", code, body)
	}
	code, _, body, _ = f.do(t, "POST", "/api/v1/pools/ws/rebalance", "", "")
	if code != 202 || strings.TrimSpace(body) != `{"moving":3}` || len(f.rebalanced) != 1 {
		t.Fatalf("rebalance: %d %s", code, body)
	}
	// IPv6 and mapped spellings are not needed here; a second PUT back.
	if code, _, body, _ = f.do(t, "PUT", statePath, "", `{"state":"ready"}`); code != 200 || f.states() != "ready,ready" {
		t.Fatalf("PUT ready: %d %s", code, body)
	}
}

// TestAPIBadInput: every bad request gets its status and an error that
// says what to fix, and changes no backend's state.
func TestAPIBadInput(t *testing.T) {
	f := newAPI(t, "", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9090})
	f.pool.Backends()[1].SetAdmin(pool.AdminDrain)
	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		err                      string
		header                   []string
	}{
		{"unknown pool", "PUT", "/api/v1/pools/nope/backends/10.0.0.2:80/state", `{"state":"maint"}`, 404, `no pool named "nope" (pools: ws)`, nil},
		{"unknown backend", "PUT", "/api/v1/pools/ws/backends/10.0.0.9:80/state", `{"state":"maint"}`, 404, `pool ws has no backend "10.0.0.9:80" (its backends: 10.0.0.1:80, 10.0.0.2:80)`, nil},
		{"unknown state", "PUT", statePath, `{"state":"down"}`, 400, `unknown backend state "down": use ready, drain or maint`, nil},
		{"malformed body", "PUT", statePath, `{"state":`, 400, `bad JSON body: unexpected EOF: send {"state": "drain"} (ready, drain or maint)`, nil},
		{"empty body", "PUT", statePath, ``, 400, `empty body: send {"state": "drain"}`, nil},
		{"unknown field", "PUT", statePath, `{"state":"maint","force":true}`, 400, `bad JSON body: json: unknown field "force"`, nil},
		{"no state", "PUT", statePath, `{}`, 400, `the body has no "state"`, nil},
		{"two values", "PUT", statePath, `{"state":"maint"} {"state":"ready"}`, 400, `more than one value`, nil},
		{"wrong type", "PUT", statePath, `{"state":2}`, 400, `bad JSON body: json: cannot unmarshal number`, nil},
		{"unknown pool rebalance", "POST", "/api/v1/pools/nope/rebalance", ``, 404, `no pool named "nope"`, nil},
		{"unknown route", "GET", "/api/v2/pools", ``, 404, `no API route GET /api/v2/pools: the routes are`, nil},
		{"wrong method", "POST", statePath, `{"state":"maint"}`, 404, `no API route POST`, nil},
		{"cross-origin", "PUT", statePath, `{"state":"maint"}`, 403, `cross-origin request refused`, []string{"Sec-Fetch-Site", "cross-site"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, h, _, msg := f.do(t, tc.method, tc.path, "", tc.body, tc.header...)
			if code != tc.code || !strings.Contains(msg, tc.err) || h.Get("Content-Type") != "application/json" {
				t.Errorf("%d %q (%s), want %d with %q", code, msg, h.Get("Content-Type"), tc.code, tc.err)
			}
			if f.states() != "ready,drain" || len(f.rebalanced) != 0 {
				t.Errorf("states %s, rebalanced %v: a refused request changed something", f.states(), f.rebalanced)
			}
		})
	}
}

// TestAPIToken: with a token every /api/ request needs it, reads too: 401
// with WWW-Authenticate without it or with a wrong one; the right one
// (white space around it in the header ignored) passes. /status.json stays
// open and says writes need the token.
func TestAPIToken(t *testing.T) {
	f := newAPI(t, "s3cret", &net.TCPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 9090})
	for _, tc := range []struct{ name, method, path, auth, body, err string }{
		{"missing", "PUT", statePath, "", `{"state":"maint"}`, "missing token: send Authorization: Bearer TOKEN"},
		{"wrong", "PUT", statePath, "Bearer s3cre", `{"state":"maint"}`, "wrong token"},
		{"other scheme", "PUT", statePath, "Basic czNjcmV0", `{"state":"maint"}`, "missing token"},
		{"read", "GET", "/api/v1/pools", "", "", "missing token"},
		{"rebalance", "POST", "/api/v1/pools/ws/rebalance", "Bearer nope", "", "wrong token"},
	} {
		code, h, _, msg := f.do(t, tc.method, tc.path, tc.auth, tc.body)
		if code != 401 || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") || !strings.Contains(msg, tc.err) {
			t.Errorf("%s: %d %q, WWW-Authenticate %q", tc.name, code, msg, h.Get("WWW-Authenticate"))
		}
	}
	if f.states() != "ready,ready" || len(f.rebalanced) != 0 {
		t.Fatalf("refused requests changed %s, %v", f.states(), f.rebalanced)
	}
	if code, _, body, _ := f.do(t, "PUT", statePath, "Bearer s3cret ", `{"state":"maint"}`); code != 200 || f.states() != "ready,maint" {
		t.Fatalf("with the token: %d %s", code, body)
	}
	if code, _, body, _ := f.do(t, "GET", "/status.json", "", ""); code != 200 || !strings.Contains(body, `"writes":"token"`) {
		t.Fatalf("/status.json without a token: %d %s", code, body)
	}
}

// TestAPIWritesNeedLocal: with no token, writes are 403 on a listener that
// is neither loopback nor a unix socket (reads pass); on a unix socket
// they are allowed.
func TestAPIWritesNeedLocal(t *testing.T) {
	f := newAPI(t, "", &net.TCPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 9090})
	code, _, _, msg := f.do(t, "PUT", statePath, "", `{"state":"maint"}`)
	if code != 403 || !strings.Contains(msg, "set admin.token_file, or listen on 127.0.0.1 or unix:PATH") {
		t.Errorf("write: %d %q", code, msg)
	}
	if code, _, _, msg = f.do(t, "POST", "/api/v1/pools/ws/rebalance", "", ""); code != 403 {
		t.Errorf("rebalance: %d %q", code, msg)
	}
	if code, _, _, _ := f.do(t, "GET", "/api/v1/pools", "", ""); code != 200 {
		t.Errorf("read: %d", code)
	}
	if code, _, body, _ := f.do(t, "GET", "/status.json", "", ""); code != 200 || !strings.Contains(body, `"writes":"forbidden"`) {
		t.Errorf("/status.json: %d %s", code, body)
	}
	if f.states() != "ready,ready" || len(f.rebalanced) != 0 {
		t.Fatalf("refused writes changed %s, %v", f.states(), f.rebalanced)
	}

	u := newAPI(t, "", &net.UnixAddr{Name: "/run/wslb/admin.sock", Net: "unix"})
	if code, _, body, _ := u.do(t, "PUT", statePath, "", `{"state":"maint"}`); code != 200 || u.states() != "ready,maint" {
		t.Errorf("unix socket: %d %s", code, body)
	}
}

// TestListenUnix: unix:PATH makes a 0660 socket that is removed on close;
// a stale socket file is replaced, a live one and a plain file refused.
func TestListenUnix(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "admin.sock")
	ln, err := Listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket file: %v, %v", fi, err)
	}
	if _, err := Listen("unix:" + path); err == nil || !strings.Contains(err.Error(), "another process listens on this socket") {
		t.Fatalf("second listen on a live socket: %v", err)
	}
	ln.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("socket file after close: %v", err)
	}

	// A crashed run leaves its file: a listener that does not unlink it.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	ln, err = Listen("unix:" + path)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	ln.Close()

	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, []byte("keep me"), 0o600)
	if _, err := Listen("unix:" + plain); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Fatalf("over a plain file: %v", err)
	}
	if b, _ := os.ReadFile(plain); string(b) != "keep me" {
		t.Fatalf("the plain file was touched: %q", b)
	}
}
