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

// TestWebSocketOverH2InBrowser: headless Chromium loads a page from wslb's
// TLS listener (a static route) over HTTP/2, and the page opens a WebSocket
// to the same origin, which Chromium carries on that h2 conn (RFC 8441), and
// exchanges messages through wslb with an echo backend. That both went over
// HTTP/2 is what Chromium's DevTools say (the page's protocol is h2, the
// WebSocket handshake's status is 200, where HTTP/1.1's is 101) and what
// wslb's access lines say (proto HTTP/2.0).
//
// Chromium trusts the test's certificate by its SPKI hash
// (--ignore-certificate-errors-spki-list), so the conns are verified as any
// other would be, against that one key.
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
	web := filepath.Join(dir, "web")
	if err := os.Mkdir(web, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(web, "index.html"), []byte(h2wsPage), 0o644); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "wslb.yaml")
	yaml := fmt.Sprintf(`
listeners:
  - name: web
    listen: 127.0.0.1:0
    mode: l7
    tls: {cert: %s, key: %s, redirect_http: false}
    routes:
      - {path: /chat, pool: p}
      - {path: /, static: web}
pools:
  - {name: p, backends: [{address: %s}], health: {check: none}}
`, certFile, keyFile, echo.WS(t, echo.WSOptions{}))
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	r, logs := startServeLogFile(t, cfgPath, 0)
	lb := r.in.addr(0)

	bctx, console := browserStart(ctx, t, exe,
		chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:])))
	var mu sync.Mutex
	var statuses []int64
	var pageProto string
	if err := chromedp.Listen(bctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *network.EventWebSocketHandshakeResponseReceived:
			statuses = append(statuses, e.Response.Status)
		case *network.EventResponseReceived:
			if e.Type == network.ResourceTypeDocument {
				pageProto = e.Response.Protocol
			}
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
	url := "https://" + lb + "/"
	if err := chromedp.Do(bctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("navigate to %s: %v", url, err)
	}
	browserWaitTexts(bctx, t, "the echoes", map[string]string{"#result": "echo 1: over h2 | echo 2: twice | closed 1000"})
	mu.Lock()
	got := append([]int64(nil), statuses...)
	mu.Unlock()
	mu.Lock()
	proto := pageProto
	mu.Unlock()
	if len(got) != 1 || got[0] != http.StatusOK {
		t.Errorf("WebSocket handshake statuses %v, want [200]: not over HTTP/2", got)
	}
	if proto != "h2" {
		t.Errorf("the page came over %q, want h2", proto)
	}
	var page, tunnel map[string]any
	wait.For(t, "the page's and the tunnel's access lines", func() bool {
		for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) != nil {
				continue
			}
			switch {
			case m["msg"] == "tunnel":
				tunnel = m
			case m["msg"] == "request" && m["path"] == "/":
				page = m
			}
		}
		return page != nil && tunnel != nil
	})
	if page["proto"] != "HTTP/2.0" || page["status"] != float64(200) {
		t.Errorf("page's access line %v, want status 200 over HTTP/2.0", page)
	}
	if tunnel["proto"] != "HTTP/2.0" || tunnel["status"] != float64(200) || tunnel["upgrade"] != true {
		t.Errorf("tunnel's access line %v, want a tunnel over HTTP/2.0, status 200", tunnel)
	}
	console.check(t)
}

// h2wsPage opens a WebSocket to its own origin, exchanges two messages and
// closes, writing what happened into #result.
const h2wsPage = `<!doctype html>
<title>ws over h2</title>
<p id="result">running</p>
<script>
const out = [];
const show = s => { out.push(s); document.getElementById("result").textContent = out.join(" | "); };
const ws = new WebSocket("wss://" + location.host + "/chat");
let n = 0;
ws.onopen = () => ws.send("over h2");
ws.onmessage = e => {
  n++;
  show("echo " + n + ": " + e.data);
  if (n === 1) ws.send("twice"); else ws.close(1000, "done");
};
ws.onclose = e => show("closed " + e.code + (e.wasClean ? "" : " unclean"));
</script>`
