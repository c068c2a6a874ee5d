package l7

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wslb/wslb/internal/certtest"
	"github.com/wslb/wslb/internal/echo"
)

// The behaviour of the keys that translate nginx directives:
// request_headers (proxy_set_header), redirect_code (return 301),
// rewrite_prefix (proxy_pass with a path), fallback (try_files) and sizes
// with suffixes (client_max_body_size 10m).

// TestRequestHeaders: http.request_headers reach the backend on plain
// requests and upgrades, with their variables expanded, replacing what the
// client sent and what wslb set itself; an empty value removes a header;
// Host sets the request's Host.
func TestRequestHeaders(t *testing.T) {
	const extra = `    http:
      trusted_proxies: [127.0.0.1]
      request_headers:
        X-Forwarded-Server: "${host}"
        X-Original-Host: "${http_host}"
        X-Port: "${server_port}"
        X-Scheme: "${scheme}"
        X-Peer: "${remote_addr}"
        X-Client: "${client_ip}"
        X-Forwarded-For: "${client_ip}"
        X-Remove: ""
        User-Agent: "wslb test $$1"
        Sec-WebSocket-Extensions: ""
        Host: "${host}"
`
	const client = "Host: Example.TEST:8080\r\nX-Forwarded-For: 203.0.113.7\r\nX-Remove: x\r\nX-Port: 1\r\n" +
		"User-Agent: curl/8\r\nSec-WebSocket-Extensions: permessage-deflate\r\n"
	check := func(t *testing.T, r *http.Request, lbAddr string) {
		t.Helper()
		_, port, _ := net.SplitHostPort(lbAddr)
		for name, want := range map[string]string{
			"X-Forwarded-Server":       "example.test",
			"X-Original-Host":          "Example.TEST:8080",
			"X-Port":                   port,
			"X-Scheme":                 "http",
			"X-Peer":                   "127.0.0.1",
			"X-Client":                 "203.0.113.7",
			"X-Forwarded-For":          "203.0.113.7", // the user's value, not wslb's "203.0.113.7, 127.0.0.1"
			"X-Real-Ip":                "203.0.113.7", // wslb's own, untouched
			"X-Remove":                 "",
			"User-Agent":               "wslb test $1",
			"Sec-Websocket-Extensions": "",
		} {
			if got := strings.Join(r.Header.Values(name), "|"); got != want {
				t.Errorf("backend saw %s %q, want %q", name, got, want)
			}
		}
		if r.Host != "example.test" {
			t.Errorf("backend saw Host %q, want example.test", r.Host)
		}
	}

	t.Run("plain", func(t *testing.T) {
		rec := &headerRecorder{}
		l := simpleLB(t, extra, newBackend(t, rec).addr())
		resp, body := exchange(t, l.addr, "GET /h HTTP/1.1\r\n"+client+"\r\n")
		if resp.StatusCode != 200 || body != "recorded" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
		check(t, rec.last(t), l.addr)
	})
	t.Run("upgrade", func(t *testing.T) {
		var seen headerRecorder
		l := simpleLB(t, extra, newBackend(t, echo.WSHandler(echo.WSOptions{OnRequest: seen.add})).addr())
		head := strings.Replace(upgradeHead("/ws"), "Host: example.test\r\n", client, 1)
		resp, _ := exchange(t, l.addr, head)
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("got %d", resp.StatusCode)
		}
		if got := resp.Header.Get("Sec-WebSocket-Extensions"); got != "" {
			t.Errorf("compression negotiated (%q) though the request's extensions were removed", got)
		}
		r := seen.last(t)
		check(t, r, l.addr)
		if r.Header.Get("Upgrade") != "websocket" || r.Header.Get("Sec-WebSocket-Key") != wsKey {
			t.Errorf("the handshake did not reach the backend whole: %v", r.Header)
		}
	})
	t.Run("off", func(t *testing.T) {
		rec := &headerRecorder{}
		l := simpleLB(t, "", newBackend(t, rec).addr())
		exchange(t, l.addr, "GET /h HTTP/1.1\r\n"+client+"\r\n")
		r := rec.last(t)
		if r.Host != "Example.TEST:8080" || r.Header.Get("X-Remove") != "x" || r.Header.Get("User-Agent") != "curl/8" {
			t.Errorf("without request_headers the request changed: Host %q %v", r.Host, r.Header)
		}
	})
}

// TestRedirectCode: http.redirect_code is the status of redirect_https and
// of tls.redirect_http; wslb's own bare-prefix redirect stays a 308.
func TestRedirectCode(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(echoBody))
	for _, code := range []int{301, 302, 307, 308} {
		l := simpleLB(t, fmt.Sprintf("    http: {redirect_https: true, redirect_code: %d}\n", code), be.addr())
		resp, body := exchange(t, l.addr, "GET /a?b HTTP/1.1\r\nHost: example.test\r\n\r\n")
		want := "https://example.test/a?b"
		if resp.StatusCode != code || resp.Header.Get("Location") != want || !strings.HasPrefix(body, fmt.Sprintf("%d %s", code, http.StatusText(code))) {
			t.Errorf("redirect_code %d: %d Location %q body %q", code, resp.StatusCode, resp.Header.Get("Location"), body)
		}
	}

	certFile, keyFile, _ := certtest.SelfSigned(t)
	l := simpleLB(t, fmt.Sprintf("    tls: {cert: %s, key: %s}\n    http: {redirect_code: 301}\n", certFile, keyFile), be.addr())
	resp, _ := exchange(t, l.addr, "GET /x HTTP/1.1\r\nHost: example.test\r\n\r\n")
	_, port, _ := net.SplitHostPort(l.addr)
	if want := "https://example.test:" + port + "/x"; resp.StatusCode != 301 || resp.Header.Get("Location") != want {
		t.Errorf("tls.redirect_http: %d Location %q, want 301 %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}

	l = simpleLB(t, "    http: {redirect_code: 301}\n    routes: [{path: /ws/, pool: p}]\n", be.addr())
	if resp, _ := exchange(t, l.addr, "GET /ws HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != http.StatusPermanentRedirect {
		t.Errorf("bare-prefix redirect: %d, want 308 whatever redirect_code says", resp.StatusCode)
	}
}

// TestRewritePrefix: nginx's `location /ws/ { proxy_pass http://up/socket/; }`
// as rewrite_prefix, for a plain request and an upgrade.
func TestRewritePrefix(t *testing.T) {
	var seen headerRecorder
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			echo.WSHandler(echo.WSOptions{OnRequest: seen.add}).ServeHTTP(w, r)
			return
		}
		seen.add(r)
		fmt.Fprint(w, r.URL.RequestURI())
	}))
	l := simpleLB(t, "    routes:\n      - {path: /ws/, pool: p, rewrite_prefix: /socket/}\n      - {path: /api, pool: p, rewrite_prefix: /v2}\n", be.addr())
	for uri, want := range map[string]string{
		"/ws/chat?room=1": "/socket/chat?room=1",
		"/ws/":            "/socket/",
		"/ws/a%2Fb":       "/socket/a%2Fb",
		"/apix":           "/v2x",
		"/api/users":      "/v2/users",
	} {
		if resp, body := exchange(t, l.addr, "GET "+uri+" HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 200 || body != want {
			t.Errorf("GET %s reached the backend as %d %q, want %q", uri, resp.StatusCode, body, want)
		}
	}
	ws := dialWS(t, "ws://"+l.addr+"/ws/live?x=1", nil)
	echoOnce(t, ws, 1, []byte("hi"))
	if got := seen.last(t).URL.RequestURI(); got != "/socket/live?x=1" {
		t.Errorf("upgrade reached the backend as %q, want /socket/live?x=1", got)
	}
}

// TestStaticFallback: the fallback file of a static route is served for a
// path that is no file; fallback "" answers 404.
func TestStaticFallback(t *testing.T) {
	web := t.TempDir()
	for name, body := range map[string]string{"index.html": "index\n", "app.html": "app\n", "a.css": "css\n"} {
		if err := os.WriteFile(filepath.Join(web, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	be := newBackend(t, http.HandlerFunc(echoBody))
	l := simpleLB(t, fmt.Sprintf("    routes:\n      - {path: /, static: %s, fallback: \"\"}\n      - {path: /app/, static: %s, fallback: /app.html}\n      - {path: /spa/, static: %s}\n", web, web, web), be.addr())
	for _, tc := range []struct {
		path   string
		status int
		body   string
	}{
		{"/a.css", 200, "css\n"},
		{"/", 200, "index\n"},
		{"/nowhere", 404, "not found"},
		{"/app/some/route", 200, "app\n"},
		{"/spa/some/route", 200, "index\n"},
	} {
		resp, body := exchange(t, l.addr, "GET "+tc.path+" HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp.StatusCode != tc.status || !strings.HasPrefix(body, tc.body) {
			t.Errorf("GET %s: %d %q, want %d %q", tc.path, resp.StatusCode, body, tc.status, tc.body)
		}
	}
}

// TestSizesWithSuffixes: max_body_bytes and max_header_bytes written as
// nginx writes them are the limits they say.
func TestSizesWithSuffixes(t *testing.T) {
	l := simpleLB(t, "    http: {max_body_bytes: 1k, max_header_bytes: 2K}\n", newBackend(t, http.HandlerFunc(echoBody)).addr())
	if resp, body := exchange(t, l.addr, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1024\r\n\r\n"+strings.Repeat("x", 1024)); resp.StatusCode != 200 || len(body) != 1024 {
		t.Errorf("a 1k body: %d, %d bytes back", resp.StatusCode, len(body))
	}
	if resp, _ := exchange(t, l.addr, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1025\r\n\r\n"); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("a body of 1k+1: %d, want 413", resp.StatusCode)
	}
	if resp, _ := exchange(t, l.addr, "GET / HTTP/1.1\r\nHost: a\r\nX-Big: "+strings.Repeat("y", 2048)+"\r\n\r\n"); resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a head over 2K: %d, want 431", resp.StatusCode)
	}
}
