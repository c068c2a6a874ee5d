package admin

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wslb/wslb/status"
)

// testServer serves Handler over a real loopback listener. ready is what
// /readyz and the snapshot report; the test flips it.
func testServer(t *testing.T, ready *atomic.Bool) *httptest.Server {
	t.Helper()
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "wslb_test_total", Help: "A test counter."})
	reg.MustRegister(c)
	c.Add(3)
	readyFn := func() (bool, string) {
		if ready.Load() {
			return true, "ready"
		}
		return false, "pool p has no backend up"
	}
	srv := httptest.NewServer(Handler(Options{
		Gatherer: reg,
		Ready:    readyFn,
		Status: func() status.Snapshot {
			ok, why := readyFn()
			now := time.Now()
			return status.Snapshot{
				Version: "test", Now: now, Started: now.Add(-time.Minute), Uptime: 60,
				Ready: ok, ReadyReason: why, HistoryInterval: 1,
				Totals:    status.Totals{Active: 2},
				Listeners: []status.Listener{{Name: "web", Mode: "l7", Addr: "127.0.0.1:1", Pools: []string{"p"}, Active: 2}},
				Pools: []status.Pool{{
					Name: "p", Balance: "least_conn", Check: "none", BackendsUp: 1, Active: 2,
					Backends: []status.Backend{{Address: "127.0.0.1:2", State: "up", Up: true, Weight: 1, EffectiveWeight: 1, Active: 2, History: []int64{0, 1, 2}}},
				}},
			}
		},
	}))
	t.Cleanup(srv.Close)
	return srv
}

// fetch GETs path without following redirects, so / can be checked.
func fetch(t *testing.T, srv *httptest.Server, path string) (*http.Response, string) {
	t.Helper()
	cl := &http.Client{
		Timeout:       5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := cl.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestStatusPage(t *testing.T) {
	var ready atomic.Bool
	ready.Store(true)
	srv := testServer(t, &ready)
	resp, body := fetch(t, srv, "/status")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Fatalf("Content-Type %q", ct)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "connect-src 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Error("no X-Content-Type-Options: nosniff")
	}
	// Self-contained: no URL at all (the page must work offline and the CSP
	// would block a remote asset anyway), no external script, style or font.
	for _, bad := range []string{"http://", "https://", "<link", " src=", "@import", "url("} {
		if strings.Contains(body, bad) {
			t.Errorf("page contains %q", bad)
		}
	}
	// The CSP allows no eval: a page that needs it would break silently.
	for _, bad := range []string{"eval(", "new Function", "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"} {
		if strings.Contains(body, bad) {
			t.Errorf("page uses %q", bad)
		}
	}
	for _, want := range []string{"/status.json", "data-updated", "data-backend", "data-listener", `data-field="active"`, "prefers-color-scheme"} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if !regexp.MustCompile(`(?i)^<!doctype html>`).MatchString(body) {
		t.Error("page does not start with <!doctype html>")
	}
}

func TestStatusJSON(t *testing.T) {
	var ready atomic.Bool
	srv := testServer(t, &ready)
	resp, body := fetch(t, srv, "/status.json")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q: the page would show stale counts", cc)
	}
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	var s status.Snapshot
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("decode: %v\n%s", err, body)
	}
	if s.Ready || s.ReadyReason != "pool p has no backend up" {
		t.Errorf("ready %v %q", s.Ready, s.ReadyReason)
	}
	if len(s.Pools) != 1 || len(s.Pools[0].Backends) != 1 || s.Pools[0].Backends[0].Active != 2 {
		t.Fatalf("pools %+v", s.Pools)
	}
	if got := s.Pools[0].Backends[0].History; len(got) != 3 || got[2] != 2 {
		t.Errorf("history %v", got)
	}
	// The page reads these names; a rename would blank it without an error.
	for _, key := range []string{`"uptime_seconds"`, `"ready_reason"`, `"connections_total"`, `"effective_weight"`, `"last_check"`, `"last_error"`, `"history"`, `"backends_up"`, `"max_connections"`} {
		if !strings.Contains(body, key) {
			t.Errorf("JSON lacks %s", key)
		}
	}
}

func TestReadyz(t *testing.T) {
	var ready atomic.Bool
	srv := testServer(t, &ready)
	resp, body := fetch(t, srv, "/readyz")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "no backend up") {
		t.Fatalf("not ready: %d %q, want 503 with the reason", resp.StatusCode, body)
	}
	ready.Store(true)
	resp, body = fetch(t, srv, "/readyz")
	if resp.StatusCode != 200 || body != "ready\n" {
		t.Fatalf("ready: %d %q", resp.StatusCode, body)
	}
}

func TestHealthz(t *testing.T) {
	var ready atomic.Bool // not ready: liveness must not depend on it
	srv := testServer(t, &ready)
	resp, body := fetch(t, srv, "/healthz")
	if resp.StatusCode != 200 || body != "ok\n" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
}

func TestRootRedirects(t *testing.T) {
	var ready atomic.Bool
	srv := testServer(t, &ready)
	resp, _ := fetch(t, srv, "/")
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/status" {
		t.Fatalf("%d Location %q, want 302 to /status", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := fetch(t, srv, "/nope"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/nope: %d, want 404", resp.StatusCode)
	}
}

func TestMetrics(t *testing.T) {
	var ready atomic.Bool
	srv := testServer(t, &ready)
	resp, body := fetch(t, srv, "/metrics")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if !strings.Contains(body, "wslb_test_total 3") {
		t.Fatalf("metrics lack the registered counter:\n%s", body)
	}
}

func TestMethodNotAllowed(t *testing.T) {
	var ready atomic.Bool
	srv := testServer(t, &ready)
	cl := &http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Post(srv.URL+"/status.json", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /status.json: %d, want 405", resp.StatusCode)
	}
}
