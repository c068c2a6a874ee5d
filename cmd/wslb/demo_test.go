package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wslb/wslb/internal/syncbuf"
	"github.com/wslb/wslb/internal/wait"
)

// TestDemoProcess runs `wslb demo` as a process on a copy of the shipped
// config.yaml (its fixed ports moved to free ones) and uses it as the README
// tells a newcomer to: it reads the URLs the demo prints, loads the page,
// curls /websocket/, opens WebSockets through the l7 and the l4 listener
// and checks which backend answered, looks at /status and /metrics, then
// stops it with SIGTERM and expects a drain that exits 0.
func TestDemoProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	exe := demoBuild(ctx, t)
	cfgPath, ports := demoConfig(t)

	p := demoStart(ctx, t, exe, "demo", "-config", cfgPath)
	lines := p.waitStdout(t, "stop with Ctrl-C", 30*time.Second)
	out := strings.Join(lines, "\n")
	t.Logf("wslb demo printed:\n%s", out)

	// What the demo prints: the backends, one URL a listener, the admin
	// pages and a hint, all on the addresses of the config it was given.
	u := demoParseURLs(t, lines)
	for what, want := range map[string]string{
		"page":    "http://" + ports["127.0.0.1:8080"] + "/",
		"l4":      "ws://" + ports["127.0.0.1:8081"] + "/",
		"status":  "http://" + ports["127.0.0.1:9090"] + "/status",
		"metrics": "http://" + ports["127.0.0.1:9090"] + "/metrics",
	} {
		if u[what] != want {
			t.Errorf("printed %s URL %q, want %q (from the config)", what, u[what], want)
		}
	}
	if !strings.Contains(out, "3 echo backends") {
		t.Errorf("the demo does not say it started 3 echo backends:\n%s", out)
	}
	for _, a := range []string{"127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"} {
		if !strings.Contains(out, ports[a]) {
			t.Errorf("backend %s (moved to %s) not printed:\n%s", a, ports[a], out)
		}
	}
	if !regexp.MustCompile(`(?m)^try: .*\bbrowser\b.*\bcurl -si http://\S+/websocket/`).MatchString(out) {
		t.Errorf("no curl/browser hint line:\n%s", out)
	}
	if t.Failed() {
		t.FailNow()
	}
	page := strings.TrimSuffix(u["page"], "/")
	host := strings.TrimPrefix(page, "http://")
	// No keep-alive: an idle client conn would be an open conn for the drain
	// at the end to wait for.
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

	// The page: the chat page of web/index.html, from the static route.
	resp, body := demoGet(t, hc, u["page"])
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("GET %s: %d %q, want 200 text/html", u["page"], resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, s := range []string{"<title>wslb demo</title>", "/websocket/?hello=1", `id="who"`, "new WebSocket("} {
		if !strings.Contains(body, s) {
			t.Errorf("the page lacks %q:\n%s", s, body)
		}
	}

	// curl -si http://HOST/websocket/: a plain GET reaches a backend, with the
	// prefix stripped; the demo backend names itself.
	resp, body = demoGet(t, hc, page+"/websocket/")
	if resp.StatusCode != 200 || !regexp.MustCompile(`^demo-[123]: a WebSocket echo backend of wslb demo \(path /\)\n$`).MatchString(body) {
		t.Errorf("GET /websocket/: %d %q, want 200 and a backend naming itself with path /", resp.StatusCode, body)
	}
	// The bare prefix is redirected, as DESIGN.md says.
	noRedirect := &http.Client{Timeout: 10 * time.Second, Transport: hc.Transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, _ = demoGet(t, noRedirect, page+"/websocket?x=1")
	if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != "/websocket/?x=1" {
		t.Errorf("GET /websocket?x=1: %d Location %q, want 308 to /websocket/?x=1", resp.StatusCode, resp.Header.Get("Location"))
	}

	// The page's WebSocket, three times at once as three tabs would: each
	// gets the "connected to demo-N" greeting first, then its echo, and
	// least_conn spreads the three over the three backends.
	seen := map[string]bool{}
	var conns []*websocket.Conn
	for i := range 3 {
		c := dialWS(ctx, t, "ws://"+host+"/websocket/?hello=1", nil)
		conns = append(conns, c)
		name := demoGreeting(ctx, t, c)
		wsEcho(ctx, t, c, fmt.Sprintf("hello %d through l7", i))
		seen[name] = true
	}
	if len(seen) != 3 {
		t.Errorf("3 open conns through l7 reached %v, want the 3 backends (least_conn)", seen)
	}

	// The l4 listener: the same backends, bytes untouched.
	c4 := dialWS(ctx, t, u["l4"]+"?hello=1", nil)
	conns = append(conns, c4)
	if name := demoGreeting(ctx, t, c4); !seen[name] {
		t.Errorf("l4 conn reached %q, not one of the demo backends %v", name, seen)
	}
	wsEcho(ctx, t, c4, "hello through l4")

	// The admin pages the demo printed.
	resp, body = demoGet(t, hc, u["status"])
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("GET %s: %d %q, want 200 text/html", u["status"], resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	resp, body = demoGet(t, hc, u["metrics"])
	if resp.StatusCode != 200 {
		t.Errorf("GET %s: %d", u["metrics"], resp.StatusCode)
	}
	for _, s := range []string{
		`wslb_upgrades_total{listener="public",pool="ws"} 3`,
		`wslb_connections_active{backend="` + ports["127.0.0.1:9001"] + `",listener="public",pool="ws"}`,
		`wslb_connections_total{backend=`,
	} {
		if !strings.Contains(body, s) {
			t.Errorf("/metrics lacks %s:\n%s", s, grepLines(body, "wslb_"))
		}
	}

	// Stop as a user would once done: close the tabs, Ctrl-C. With no conn
	// left the drain ends at once and the process exits 0.
	for _, c := range conns {
		c.Close(websocket.StatusNormalClosure, "")
	}
	p.signalAndWait(t, syscall.SIGTERM, 5*time.Second)
	// The access log (stdout by default) has a line for the tunnels that ended.
	if n := strings.Count(p.stdout.String(), "\n"); n <= len(lines) {
		t.Errorf("no access log lines on stdout after the traffic:\n%s", p.stdout.String())
	}
}

// demoBuild builds the wslb binary into a temporary folder, with the build
// cache this takes a second or two.
func demoBuild(ctx context.Context, t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	exe := filepath.Join(t.TempDir(), "wslb")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", exe, ".")
	cmd.Dir = "." // the test runs in cmd/wslb
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return exe
}

// demoConfig copies the shipped config.yaml and web/ into a temporary folder,
// with every 127.0.0.1:PORT moved to a free port, and returns the copy's path
// and the address each original one moved to.
func demoConfig(t *testing.T) (string, map[string]string) {
	t.Helper()
	data, err := os.ReadFile("../../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	addrRE := regexp.MustCompile(`127\.0\.0\.1:\d+`)
	moved := map[string]string{}
	var held []net.Listener // held until all are picked, so no two are the same
	for _, a := range addrRE.FindAllString(string(data), -1) {
		if moved[a] != "" {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, ln)
		moved[a] = ln.Addr().String()
	}
	for _, ln := range held {
		ln.Close()
	}
	for _, a := range []string{"127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:9090", "127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"} {
		if moved[a] == "" {
			t.Fatalf("config.yaml no longer has %s; this test expects the README's demo addresses", a)
		}
	}
	data = addrRE.ReplaceAllFunc(data, func(a []byte) []byte { return []byte(moved[string(a)]) })

	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	// static: ./web is relative to the config file.
	if err := os.CopyFS(filepath.Join(dir, "web"), os.DirFS("../../web")); err != nil {
		t.Fatal(err)
	}
	return path, moved
}

// demoProc is a wslb process started by a test.
type demoProc struct {
	cmd            *exec.Cmd
	stdout, stderr *syncbuf.Buffer
	done           chan struct{} // closed when the process has exited
	err            error         // Wait's result, once done is closed
}

// demoStart runs exe with args until ctx ends or the test does; the cleanup
// kills it if it is still running.
func demoStart(ctx context.Context, t *testing.T, exe string, args ...string) *demoProc {
	t.Helper()
	p := &demoProc{stdout: &syncbuf.Buffer{}, stderr: &syncbuf.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.CommandContext(ctx, exe, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
			return
		default:
		}
		p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Error("wslb did not exit after SIGKILL")
		}
		if t.Failed() {
			t.Logf("wslb stderr:\n%s", p.stderr.String())
		}
	})
	return p
}

// running fails the test if the process has exited.
func (p *demoProc) running(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
		t.Fatalf("wslb exited (%v); stderr:\n%s", p.err, p.stderr.String())
	default:
	}
}

// waitStdout waits until a stdout line contains marker and returns the lines
// so far; it fails if the process exits first or within is over.
func (p *demoProc) waitStdout(t *testing.T, marker string, within time.Duration) []string {
	t.Helper()
	var printed []string
	if !wait.Until(within, func() bool {
		lines := p.stdout.Lines()
		for i, l := range lines {
			if strings.Contains(l, marker) {
				printed = lines[:i+1]
				return true
			}
		}
		select {
		case <-p.done:
			t.Fatalf("wslb exited (%v) before printing %q; stdout:\n%s\nstderr:\n%s", p.err, marker, p.stdout.String(), p.stderr.String())
		default:
		}
		return false
	}) {
		t.Fatalf("wslb did not print %q within %v; stdout:\n%s\nstderr:\n%s", marker, within, p.stdout.String(), p.stderr.String())
	}
	return printed
}

// signalAndWait sends sig and expects the process to exit 0 within d.
func (p *demoProc) signalAndWait(t *testing.T, sig syscall.Signal, d time.Duration) {
	t.Helper()
	begin := time.Now()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
		if p.err != nil {
			t.Fatalf("wslb exited with %v after %v, want exit 0; stderr:\n%s", p.err, sig, p.stderr.String())
		}
		t.Logf("wslb exited 0 %v after the signal (%v)", time.Since(begin).Round(time.Millisecond), sig)
	case <-time.After(d):
		t.Fatalf("wslb still running %v after %v; stderr:\n%s", d, sig, p.stderr.String())
	}
}

// demoParseURLs picks the URLs out of the demo's banner: the l7 listener's
// page, the l4 listener's ws:// URL, and the admin status and metrics pages.
func demoParseURLs(t *testing.T, lines []string) map[string]string {
	t.Helper()
	urlRE := regexp.MustCompile(`\b(?:https?|wss?)://\S+`)
	u := map[string]string{}
	for _, l := range lines {
		found := urlRE.FindString(l)
		f := strings.Fields(l)
		switch {
		case found == "" || len(f) < 2:
		case f[1] == "l7" && u["page"] == "":
			u["page"] = found
		case f[1] == "l4" && u["l4"] == "":
			u["l4"] = found
		case f[0] == "status":
			u["status"] = found
		case f[0] == "metrics":
			u["metrics"] = found
		}
	}
	for _, k := range []string{"page", "l4", "status", "metrics"} {
		if u[k] == "" {
			t.Fatalf("the demo printed no %s URL:\n%s", k, strings.Join(lines, "\n"))
		}
	}
	return u
}

func demoGet(t *testing.T, hc *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", url, err)
	}
	return resp, string(b)
}

// demoGreeting reads the first message of a ?hello=1 conn and returns the
// backend it names.
func demoGreeting(ctx context.Context, t *testing.T, c *websocket.Conn) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	typ, msg, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("reading the greeting: %v", err)
	}
	m := regexp.MustCompile(`^connected to (demo-[123])$`).FindSubmatch(msg)
	if typ != websocket.MessageText || m == nil {
		t.Fatalf("first message %v %q, want text \"connected to demo-N\"", typ, msg)
	}
	return string(m[1])
}
