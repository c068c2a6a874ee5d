package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/loopback"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
)

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if code := run(t.Context(), []string{"version"}, &out, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	want := regexp.MustCompile(`^wslb \S+ \(` + regexp.QuoteMeta(runtime.Version()) + `\)\n$`)
	if !want.MatchString(out.String()) {
		t.Fatalf("version printed %q", out.String())
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(`listeners:
  - name: a
    listen: 127.0.0.1:0
    mode: l4
    pool: missing
    timeouts:
      idle: -1s
pools:
  - name: p
    bogus: 1
    backends:
      - address: 127.0.0.1:9001
        weight: 0
`), 0o644)
	expectProblems(t, bad,
		bad+":5: listeners[0].pool:",
		bad+":7: listeners[0].timeouts.idle:",
		bad+":10: pools[0].bogus:",
		bad+":13: pools[0].backends[0].weight:",
	)

	var out, errOut bytes.Buffer
	if code := run(t.Context(), []string{"-check", "-config", "../../config.yaml"}, &out, &errOut); code != 0 {
		t.Fatalf("shipped config.yaml: exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "ok") || strings.Count(out.String(), "\n") != 1 {
		t.Fatalf("summary %q, want one line", out.String())
	}
}

// expectProblems runs -check on path and expects exit 1 and one line per
// problem, each line holding one of wants.
func expectProblems(t *testing.T, path string, wants ...string) {
	t.Helper()
	var errOut bytes.Buffer
	if code := run(t.Context(), []string{"-check", "-config", path}, io.Discard, &errOut); code != 1 {
		t.Fatalf("exit %d for a bad file, want 1", code)
	}
	got := errOut.String()
	for _, want := range wants {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if lines := strings.Count(got, "\n"); lines != len(wants) {
		t.Errorf("%d lines, want one per problem (%d):\n%s", lines, len(wants), got)
	}
}

// TestCheckNginxKeys: DESIGN's bad input for the keys that translate nginx
// (a ${variable} that does not exist, rewrite_prefix with strip_prefix, a
// size like 10q, a bad entry of a listen list) is one line each, with the
// file, the line and what to write instead.
func TestCheckNginxKeys(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte(`listeners:
  - name: a
    listen: ["0.0.0.0:8080", "[::]:http"]
    mode: l7
    http:
      max_body_bytes: 10q
      redirect_code: 303
      request_headers:
        X-Server: "${hostname}"
    routes:
      - {path: /ws/, pool: p, strip_prefix: true, rewrite_prefix: /socket/}
pools:
  - {name: p, backends: [{address: 127.0.0.1:9001}]}
`), 0o644)
	var errOut bytes.Buffer
	if code := run(t.Context(), []string{"-check", "-config", bad}, io.Discard, &errOut); code != 1 {
		t.Fatalf("exit %d for a bad file, want 1", code)
	}
	want := []string{
		bad + `:3: listeners[0].listen[1]: invalid port "http": use a number from 0 to 65535`,
		bad + `:6: listeners[0].http.max_body_bytes: unknown size suffix in "10q": use k, m or g (powers of 1024), as in 512k, 10m or 1g, or a number of bytes`,
		bad + `:7: listeners[0].http.redirect_code: must be 301, 302, 307 or 308, got 303`,
		bad + `:9: listeners[0].http.request_headers.X-Server: unknown variable ${hostname}: use ${host}, ${http_host}, ${server_port}, ${scheme}, ${remote_addr} or ${client_ip}`,
		bad + `:11: listeners[0].routes[0].rewrite_prefix: set either strip_prefix or rewrite_prefix, not both: strip_prefix: true is rewrite_prefix: /`,
	}
	if got := strings.Split(strings.TrimSuffix(errOut.String(), "\n"), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("-check printed\n%s\nwant\n%s", errOut.String(), strings.Join(want, "\n"))
	}
}

func TestBadArgs(t *testing.T) {
	for _, args := range [][]string{{"frobnicate"}, {"-nope"}, {"demo", "extra"}, {"-log-format", "xml"}} {
		if code := run(t.Context(), args, io.Discard, io.Discard); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
}

// TestServeAndDrain runs the binary's serve path on a real config: traffic
// flows, /readyz says ready, and cancelling (as SIGTERM does) drains: the
// open conn is closed once drain_timeout is over and serve returns 0.
func TestServeAndDrain(t *testing.T) {
	r := startServe(t, fmt.Sprintf(`
shutdown: {drain_timeout: 200ms, close_spread: 0s}
admin: {listen: 127.0.0.1:0}
listeners:
  - {name: t, listen: 127.0.0.1:0, mode: l4, pool: p}
pools:
  - {name: p, backends: [{address: %s}]}
`, echo.TCP(t).Addr()))
	in := r.in
	adminURL := "http://" + in.adminLn.Addr().String()
	if code := get(t, adminURL+"/readyz"); code != 200 {
		t.Fatalf("/readyz %d before drain", code)
	}
	c := tcptest.Dial(t, in.addr(0))
	c.Write([]byte("hi"))
	if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
		t.Fatal(err)
	}

	begin := time.Now()
	r.cancel()
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("conn survived the drain")
	}
	if d := time.Since(begin); d < 150*time.Millisecond {
		t.Fatalf("conn closed after %v, before drain_timeout", d)
	}
	if code := r.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d after drain", code)
	}
}

// get returns the status code of a GET of url.
func get(t *testing.T, url string) int {
	t.Helper()
	code, _ := fetch(t, url)
	return code
}

// getBody returns the body of a GET of url.
func getBody(t *testing.T, url string) string {
	t.Helper()
	_, body := fetch(t, url)
	return body
}

func fetch(t *testing.T, url string) (int, string) {
	t.Helper()
	return apiDo(t, http.MethodGet, url, "")
}

// TestHealthWiring runs serve with active checks over one live and one dead
// backend: the dead one is reported down in /metrics and /readyz stays ready,
// conns only reach the live one, and the checks are counted.
func TestHealthWiring(t *testing.T) {
	live := echo.TCP(t).Addr()
	deadAddr := loopback.DeadAddr(t)

	in := startServe(t, fmt.Sprintf(`
shutdown: {drain_timeout: 0s, close_spread: 0s}
admin: {listen: 127.0.0.1:0}
listeners:
  - {name: t, listen: 127.0.0.1:0, mode: l4, pool: p}
pools:
  - name: p
    backends: [{address: %s}, {address: %s}]
    health: {check: tcp, interval: 50ms, timeout: 40ms, rise: 1, fall: 1}
`, live, deadAddr)).in
	metricsURL := "http://" + in.adminLn.Addr().String() + "/metrics"
	want := fmt.Sprintf(`wslb_backend_up{backend=%q,pool="p"} 0`, deadAddr)
	var body string
	wait.Until(wait.Timeout, func() bool {
		body = getBody(t, metricsURL)
		return strings.Contains(body, want)
	})
	if !strings.Contains(body, want) {
		t.Fatalf("dead backend never reported down; metrics:\n%s", grepLines(body, "wslb_backend_up"))
	}
	if !strings.Contains(body, fmt.Sprintf(`wslb_backend_up{backend=%q,pool="p"} 1`, live)) {
		t.Fatalf("live backend not up:\n%s", grepLines(body, "wslb_backend_up"))
	}
	if !strings.Contains(body, fmt.Sprintf(`wslb_health_checks_total{backend=%q,pool="p",result="fail"}`, deadAddr)) {
		t.Fatal("failed checks not counted")
	}
	if code := get(t, "http://"+in.adminLn.Addr().String()+"/readyz"); code != 200 {
		t.Fatalf("/readyz %d with one backend up", code)
	}
	for i := range 10 {
		c := tcptest.Dial(t, in.addr(0))
		c.Write([]byte("x"))
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatalf("conn %d: %v", i, err)
		}
		c.Close()
	}
	if got := getBody(t, metricsURL); !strings.Contains(got, `wslb_errors_total{listener="t",reason="dial"} 0`) {
		t.Fatalf("a dial to the dead backend was attempted:\n%s", grepLines(got, "wslb_errors_total"))
	}
}

func grepLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestAllDownFast503: a backend that was up dies; once its checks take it out,
// an l7 request gets a 503 at once, with no dial attempted.
func TestAllDownFast503(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	t.Cleanup(be.Close)
	in := startServe(t, fmt.Sprintf(`
shutdown: {drain_timeout: 0s, close_spread: 0s}
admin: {listen: ""}
listeners:
  - {name: web, listen: 127.0.0.1:0, mode: l7, pool: p}
pools:
  - name: p
    backends: [{address: %s}]
    health: {check: http, interval: 50ms, timeout: 40ms, rise: 1, fall: 2}
`, be.Listener.Addr())).in
	url := "http://" + in.addr(0) + "/"
	b := in.gen.Load().pools["p"].Backends()[0]
	wait.For(t, "the backend up", b.Up)
	if code := get(t, url); code != 200 {
		t.Fatalf("status %d with the backend up", code)
	}
	be.Close() // the backend dies
	wait.Until(wait.Timeout, func() bool { return !b.Healthy() })
	if b.Healthy() {
		t.Fatal("dead backend never taken out")
	}
	start := time.Now()
	if code := get(t, url); code != http.StatusServiceUnavailable {
		t.Fatalf("status %d with every backend down, want 503", code)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("503 took %v", d)
	}
	if got := testutil.ToFloat64(in.metrics.Errors.WithLabelValues("web", "dial")); got != 0 {
		t.Fatalf("%v dials attempted to a known-dead backend", got)
	}
}

// TestMissingConfigHint: a config file that is not there is exit 1, and the
// message says how to name one.
func TestMissingConfigHint(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "config.yaml")
	for _, args := range [][]string{{"-config", missing}, {"-check", "-config", missing}} {
		var errOut bytes.Buffer
		if code := run(t.Context(), args, io.Discard, &errOut); code != 1 {
			t.Fatalf("%q: exit %d, want 1", args, code)
		}
		if got := errOut.String(); !strings.Contains(got, "no such file") || !strings.Contains(got, "-config") {
			t.Errorf("%q: stderr %q, want the error and a hint about -config", args, got)
		}
	}
}
