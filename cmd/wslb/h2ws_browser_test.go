package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/wslb/wslb/internal/certtest"
	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/wait"
)

// TestWebSocketOverH2InBrowser: headless Chromium opens a WebSocket to
// wslb's TLS listener on the h2 conn it already has to it, and exchanges
// messages through wslb with an echo backend. That it went over HTTP/2
// (RFC 8441) is what Chromium's DevTools say (the handshake's status is
// 200, where HTTP/1.1's is 101) and what wslb's access line says (proto
// HTTP/2.0).
//
// Chromium carries a WebSocket over HTTP/2 only on an h2 conn it has to the
// origin already. The page comes from a second origin, a test server, and
// first fetches from wslb's, which opens that conn: plain requests over h2
// are being built on another branch. Chromium trusts the test's
// certificate by its SPKI hash (--ignore-certificate-errors-spki-list), so
// the conns are verified as any other would be, against that one key.
func TestWebSocketOverH2InBrowser(t *testing.T) {
	exe := browserFind(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	certFile, keyFile, _ := certtest.SelfSigned(t)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "wslb.yaml")
	yaml := fmt.Sprintf(`
listeners:
  - name: web
    listen: 127.0.0.1:0
    mode: l7
    pool: p
    tls: {cert: %s, key: %s, redirect_http: false}
pools:
  - {name: p, backends: [{address: %s}], health: {check: none}}
`, certFile, keyFile, echo.WS(t, echo.WSOptions{}))
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	r, logs := startServeLogFile(t, cfgPath, 0)
	lb := r.in.addr(0)

	page := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, h2wsPage)
	}))
	page.EnableHTTP2 = true
	page.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	page.StartTLS()
	t.Cleanup(page.Close)

	bctx, console := browserStart(ctx, t, exe,
		chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:])))
	var mu sync.Mutex
	var statuses []int64
	if err := chromedp.Listen(bctx, func(ev any) {
		if e, ok := ev.(*network.EventWebSocketHandshakeResponseReceived); ok {
			mu.Lock()
			statuses = append(statuses, e.Response.Status)
			mu.Unlock()
		}
	}); err != nil {
		t.Fatalf("listen to the tab: %v", err)
	}
	if err := chromedp.Do(bctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{})
		return err
	})); err != nil {
		t.Fatalf("enable network events: %v", err)
	}
	url := fmt.Sprintf("%s/?lb=%s", page.URL, lb)
	if err := chromedp.Do(bctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("navigate to %s: %v", url, err)
	}
	browserWaitTexts(bctx, t, "the echoes", map[string]string{"#result": "echo 1: over h2 | echo 2: twice | closed 1000"})
	mu.Lock()
	got := append([]int64(nil), statuses...)
	mu.Unlock()
	if len(got) != 1 || got[0] != http.StatusOK {
		t.Errorf("WebSocket handshake statuses %v, want [200]: not over HTTP/2", got)
	}
	var line map[string]any
	wait.For(t, "the tunnel's access line", func() bool {
		for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "tunnel" {
				line = m
				return true
			}
		}
		return false
	})
	if line["proto"] != "HTTP/2.0" || line["status"] != float64(200) || line["upgrade"] != true {
		t.Errorf("access line %v, want a tunnel over HTTP/2.0, status 200", line)
	}
	console.check(t)
}

// h2wsPage opens the h2 conn to wslb's origin (a fetch whose answer does
// not matter), then a WebSocket to it, exchanges two messages and closes,
// writing what happened into #result.
const h2wsPage = `<!doctype html>
<title>ws over h2</title>
<p id="result">running</p>
<script>
const lb = new URLSearchParams(location.search).get("lb");
const out = [];
const show = s => { out.push(s); document.getElementById("result").textContent = out.join(" | "); };
fetch("https://" + lb + "/warm", {mode: "no-cors", credentials: "include"}).catch(() => {}).finally(() => {
  const ws = new WebSocket("wss://" + lb + "/chat");
  let n = 0;
  ws.onopen = () => ws.send("over h2");
  ws.onmessage = e => {
    n++;
    show("echo " + n + ": " + e.data);
    if (n === 1) ws.send("twice"); else ws.close(1000, "done");
  };
  ws.onclose = e => show("closed " + e.code + (e.wasClean ? "" : " unclean"));
});
</script>`
