package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"

	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/syncbuf"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
)

// TestStatusPageInBrowser opens the admin /status page in headless Chromium
// while WebSocket tunnels are open, and reads the counts the page's own
// script drew: what an operator would see. Closing two tunnels must show up
// without a reload, which is the page's live refresh from /status.json.
func TestStatusPageInBrowser(t *testing.T) {
	exe := browserFind(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	beA, beB := echo.WS(t, echo.WSOptions{Name: "browser-test"}), echo.WS(t, echo.WSOptions{Name: "browser-test"})
	in := startServe(t, fmt.Sprintf(`
workers: 2
shutdown: {drain_timeout: 0s, close_spread: 0s}
admin: {listen: 127.0.0.1:0}
listeners:
  - name: web
    listen: [127.0.0.1:0, 127.0.0.2:0]
    mode: l7
    routes:
      - {path: /a/, pool: pa}
      - {path: /b/, pool: pb}
pools:
  - {name: pa, backends: [{address: %s}], health: {check: none}}
  - {name: pb, backends: [{address: %s}], health: {check: none}}
`, beA, beB)).in
	lb := in.addr(0)
	adminURL := "http://" + in.adminLn.Addr().String()

	var toA []*websocket.Conn
	for range 3 {
		toA = append(toA, browserDial(ctx, t, "ws://"+lb+"/a/"))
	}
	browserDial(ctx, t, "ws://"+lb+"/b/")
	browserBadRequest(t, lb)

	bctx, console := browserStart(ctx, t, exe)
	if err := chromedp.Do(bctx, chromedp.Navigate(adminURL+"/status")); err != nil {
		t.Fatalf("navigate to /status: %v", err)
	}

	rowA := fmt.Sprintf(`tr[data-pool="pa"][data-backend=%q]`, beA)
	rowB := fmt.Sprintf(`tr[data-pool="pb"][data-backend=%q]`, beB)
	listener := `tr[data-listener="web"]`
	field := func(row, name string) string { return fmt.Sprintf(`%s [data-field=%q]`, row, name) }

	bound := in.gen.Load().listeners[0].fl.BoundAddrs()
	shown := browserWaitTexts(bctx, t, "the open tunnels", map[string]string{
		field(listener, "addr"):   bound[0].String() + ", " + bound[1].String(),
		field(rowA, "active"):     "3",
		field(rowB, "active"):     "1",
		field(listener, "active"): "4",
		field(rowA, "state"):      "up",
		field(rowB, "state"):      "up",
		field(listener, "errors"): "bad_request 1",
	})
	t.Logf("page shows %v", shown)
	before := browserUpdates(bctx, t)

	for _, c := range toA[:2] {
		if err := c.Close(websocket.StatusNormalClosure, "done"); err != nil {
			t.Fatalf("close: %v", err)
		}
	}
	browserWaitTexts(bctx, t, "two /a/ tunnels closed", map[string]string{
		field(rowA, "active"):     "1",
		field(rowB, "active"):     "1",
		field(listener, "active"): "2",
	})
	if after := browserUpdates(bctx, t); after <= before {
		t.Fatalf("data-updated went from %d to %d: the page did not redraw", before, after)
	}
	// The page's totals come from the same snapshot.
	browserWaitTexts(bctx, t, "totals", map[string]string{"#t-active": "2"})
	console.check(t)
}

// browserFind returns the Chromium binary to drive, or skips the test. The
// test never installs a browser: CI images bring Debian's chromium package.
func browserFind(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("WSLB_CHROMIUM"); p != "" {
		exe, err := exec.LookPath(p)
		if err != nil {
			t.Fatalf("WSLB_CHROMIUM=%q: %v", p, err)
		}
		return exe
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if exe, err := exec.LookPath(name); err == nil {
			return exe
		}
	}
	t.Skip("no Chromium found (install Debian's chromium package; .ci/run does): browser test skipped")
	return ""
}

// browserBadRequest sends a request head wslb must refuse with a 400, so
// the listener row has an error reason to show.
func browserBadRequest(t *testing.T, addr string) {
	t.Helper()
	c := tcptest.Dial(t, addr)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "NOT HTTP\r\n\r\n")
	if b, _ := io.ReadAll(c); !bytes.HasPrefix(b, []byte("HTTP/1.1 400 ")) {
		t.Fatalf("malformed head answered %q, want a 400", b)
	}
}

// browserDial opens a WebSocket through the load balancer and exchanges one
// message, so the tunnel is established end to end when it returns.
func browserDial(ctx context.Context, t *testing.T, url string) *websocket.Conn {
	t.Helper()
	c := dialWS(ctx, t, url, nil)
	wsEcho(ctx, t, c, "ping")
	return c
}

// browserStart launches headless Chromium in a fresh profile and returns its
// context, which ends with ctx or the test, and a record of the page's
// console. extra are more flags, after the usual ones.
func browserStart(ctx context.Context, t *testing.T, exe string, extra ...chromedp.ExecAllocatorOption) (context.Context, *browserConsole) {
	t.Helper()
	out := &syncbuf.Buffer{}
	opts := append([]chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		// The page runs its poll loop from timers; a hidden headless tab
		// must not have them throttled.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.CombinedOutput(out),
	}, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	// Cleanups run last-in first-out: the browser must be gone before
	// t.TempDir removes its profile.
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
	})
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start %s: %v\n%s", exe, err, out.String())
	}
	// Chromium reports CSP violations to the page, not to the console, so
	// a listener installed before the page's own script turns each into a
	// console error that check sees: an asset or eval the CSP blocks is a
	// broken page.
	if err := chromedp.Do(bctx, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
			Source: `document.addEventListener("securitypolicyviolation",
				e => console.error("CSP violation: " + e.violatedDirective + " " + e.blockedURI));`,
		})
		return err
	})); err != nil {
		t.Fatalf("install the CSP listener: %v", err)
	}
	con := &browserConsole{}
	messages := chromedp.Console(bctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			con.add(m)
		}
	}()
	return bctx, con
}

// browserWaitTexts polls the page until every selector's textContent equals
// its value, and returns what was shown last. It fails the test at ctx's
// deadline, or after 30 s at most.
func browserWaitTexts(ctx context.Context, t *testing.T, what string, want map[string]string) map[string]string {
	t.Helper()
	sels := make([]string, 0, len(want))
	for s := range want {
		sels = append(sels, s)
	}
	slices.Sort(sels)
	js, err := json.Marshal(sels)
	if err != nil {
		t.Fatal(err)
	}
	expr := `(() => { const out = {}; for (const s of ` + string(js) + `) {
		const el = document.querySelector(s); out[s] = el ? el.textContent.trim() : "(missing)"; } return out; })()`
	var got map[string]string
	if !wait.Until(30*time.Second, func() bool {
		if ctx.Err() != nil {
			t.Fatalf("waiting for %s: %v; page shows %v, want %v", what, ctx.Err(), got, want)
		}
		got, err = chromedp.Run(ctx, chromedp.Evaluate[map[string]string](expr))
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		ok := true
		for _, s := range sels {
			ok = ok && got[s] == want[s]
		}
		return ok
	}) {
		t.Fatalf("waiting for %s: page shows %v, want %v", what, got, want)
	}
	return got
}

// browserUpdates is the page's count of successful redraws.
func browserUpdates(ctx context.Context, t *testing.T) int {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.getAttribute("data-updated")`))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("data-updated %q: %v", s, err)
	}
	return n
}

// browserConsole collects what the page wrote to its console.
type browserConsole struct {
	mu   sync.Mutex
	msgs []chromedp.ConsoleMessage
}

func (c *browserConsole) add(m chromedp.ConsoleMessage) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.msgs = append(c.msgs, m)
}

// check fails the test on any script exception or error, a CSP violation
// included. Failed resource loads (the browser's own /favicon.ico) are not
// the page's doing.
func (c *browserConsole) check(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.msgs {
		if (m.IsException() || m.Type == chromedp.ConsoleError) && m.Source != "network" {
			t.Errorf("page console: %s (%s:%d)", m, m.URL, m.Line)
		}
	}
}
