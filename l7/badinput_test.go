package l7

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wslb/wslb/header"
	"github.com/wslb/wslb/internal/certtest"
	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/loopback"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
)

// DESIGN.md "Bad input and faults", the rows that concern l7. Every answer
// wslb makes itself is a status with a one-line plain-text body; where the
// contract says so, nothing reaches a backend.

// checkOwnAnswer asserts a response wslb wrote itself: status, plain text,
// one line that starts with the status code.
func checkOwnAnswer(t *testing.T, resp *http.Response, body string, status int) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d %q, want %d", resp.StatusCode, body, status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Errorf("Content-Type %q, want plain text", ct)
	}
	if !strings.HasPrefix(body, strconv.Itoa(status)+" ") || !strings.HasSuffix(body, "\n") || strings.Count(body, "\n") != 1 {
		t.Errorf("body %q is not one line starting with the status", body)
	}
}

// sendRaw writes raw on a new conn and reads one answer to method.
func sendRaw(t *testing.T, addr, raw, method string) (*net.TCPConn, *bufio.Reader, *http.Response, string) {
	t.Helper()
	c := tcptest.Dial(t, addr)
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, body := readResp(t, br, method)
	return c, br, resp, body
}

func TestMalformedRequestsRefused(t *testing.T) {
	const host = "Host: example.test\r\n"
	for _, tc := range []struct {
		name, raw string
		status    int
		reason    string // errors_total reason
		text      string // in the body, when set
	}{
		{"garbage request line", "GARBAGE\r\n\r\n", 400, "bad_request", ""},
		{"request line without version", "GET /\r\n" + host + "\r\n", 400, "bad_request", ""},
		{"request line with an extra field", "GET / HTTP/1.1 x\r\n" + host + "\r\n", 400, "bad_request", ""},
		{"bad version", "GET / HTTP/x.y\r\n" + host + "\r\n", 400, "bad_request", ""},
		{"two spaces in request line", "GET  / HTTP/1.1\r\n" + host + "\r\n", 400, "bad_request", ""},
		{"control byte in target", "GET /a\x01b HTTP/1.1\r\n" + host + "\r\n", 400, "bad_request", ""},
		{"header line without colon", "GET / HTTP/1.1\r\n" + host + "NoColonHere\r\n\r\n", 400, "bad_request", ""},
		{"space before colon", "GET / HTTP/1.1\r\n" + host + "X-A : b\r\n\r\n", 400, "bad_request", ""},
		{"obs-fold first line", "GET / HTTP/1.1\r\n folded: x\r\n" + host + "\r\n", 400, "bad_request", ""},
		{"NUL in value", "GET / HTTP/1.1\r\n" + host + "X-A: b\x00c\r\n\r\n", 400, "bad_request", ""},
		{"bare CR in value", "GET / HTTP/1.1\r\n" + host + "X-A: b\rc\r\n\r\n", 400, "bad_request", ""},
		{"bare CR hiding a header", "GET / HTTP/1.1\r\n" + host + "X-A: b\rTransfer-Encoding: chunked\r\n\r\n", 400, "bad_request", ""},
		{"NUL in name", "GET / HTTP/1.1\r\n" + host + "X-\x00A: b\r\n\r\n", 400, "bad_request", ""},
		{"DEL in value", "GET / HTTP/1.1\r\n" + host + "X-A: b\x7f\r\n\r\n", 400, "bad_request", ""},
		{"NUL in Host", "GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n", 400, "bad_request", ""},
		{"space in Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "bad_request", ""},
		{"slash in Host", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, "bad_request", ""},
		{"two Host headers", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "bad_request", ""},
		{"missing Host on HTTP/1.1", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400, "bad_request", "Host"},
		{"CL+TE", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "bad_request", "both Content-Length and Transfer-Encoding"},
		{"TE+CL any case", "POST / HTTP/1.1\r\n" + host + "transfer-encoding: chunked\r\nCONTENT-LENGTH: 5\r\n\r\n0\r\n\r\n", 400, "bad_request", "both Content-Length and Transfer-Encoding"},
		{"CL+TE on HTTP/1.0", "POST / HTTP/1.0\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "bad_request", "both Content-Length and Transfer-Encoding"},
		{"CL+TE with bare LF", "POST / HTTP/1.1\nHost: a\nContent-Length: 5\nTransfer-Encoding: chunked\n\n0\r\n\r\n", 400, "bad_request", "both Content-Length and Transfer-Encoding"},
		{"Transfer-Encoding on HTTP/1.0", "POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400, "bad_request", ""},
		{"two differing Content-Length", "POST / HTTP/1.1\r\n" + host + "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400, "bad_request", ""},
		{"Content-Length list", "POST / HTTP/1.1\r\n" + host + "Content-Length: 3, 4\r\n\r\nabcd", 400, "bad_request", ""},
		{"negative Content-Length", "POST / HTTP/1.1\r\n" + host + "Content-Length: -1\r\n\r\n", 400, "bad_request", ""},
		{"unknown Transfer-Encoding", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip\r\n\r\n", 400, "bad_request", ""},
		{"CONNECT", "CONNECT example.test:443 HTTP/1.1\r\n" + host + "\r\n", 400, "bad_request", ""},
		{"HTTP/2.0 request line", "GET / HTTP/2.0\r\n" + host + "\r\n", 400, "bad_request", "version"},
		{"HTTP/0.9 request line", "GET / HTTP/0.9\r\n" + host + "\r\n", 400, "bad_request", "version"},
		{"opaque target", "GET a:0 HTTP/1.1\r\n" + host + "\r\n", 400, "bad_request", "target"},
		{"asterisk target for GET", "GET * HTTP/1.1\r\n" + host + "\r\n", 400, "bad_request", "target"},
		{"absolute-form of another scheme", "GET ftp://example.test/x HTTP/1.1\r\n" + host + "\r\n", 400, "bad_request", "target"},
		// RFC 9112 §3.2: Host is required even with an absolute-form target.
		{"absolute-form without Host", "GET http://evil.test/x HTTP/1.1\r\nAccept: */*\r\n\r\n", 400, "bad_request", "Host"},
		{"absolute-form without Host on HTTP/1.0", "GET https://evil.test/ HTTP/1.0\r\n\r\n", 400, "bad_request", "Host"},
		// RFC 9110 §4.2.4: userinfo in an http(s) URI is an error.
		{"userinfo in target", "GET http://u@evil.test/ HTTP/1.1\r\n" + host + "\r\n", 400, "bad_request", "userinfo"},
		{"user and password in target", "GET https://u:p@evil.test:8443/x HTTP/1.1\r\n" + host + "\r\n", 400, "bad_request", "userinfo"},
		{"empty userinfo in target", "GET http://@evil.test/ HTTP/1.1\r\n" + host + "\r\n", 400, "bad_request", "userinfo"},
		{"path above the root", "GET /../x HTTP/1.1\r\n" + host + "\r\n", 400, "bad_request", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := newBackend(t, http.HandlerFunc(echoBody))
			l := simpleLB(t, "", be.addr())
			c, br, resp, body := sendRaw(t, l.addr, tc.raw, "GET")
			checkOwnAnswer(t, resp, body, tc.status)
			if !strings.Contains(body, tc.text) {
				t.Errorf("body %q does not say %q", body, tc.text)
			}
			expectClosed(t, br, c)
			if got := l.errs(tc.reason); got != 1 {
				t.Errorf("errors_total{%s} = %v, want 1", tc.reason, got)
			}
			mExpectErrs(t, l, nil, map[string]float64{tc.reason: 1})
			if n := be.conns.Load(); n != 0 {
				t.Errorf("backend got %d conns; want nothing sent to it", n)
			}
		})
	}
}

// padHead returns a GET head of exactly n bytes, request line and final
// empty line included.
func padHead(t *testing.T, n int) string {
	t.Helper()
	start, end := "GET /pad HTTP/1.1\r\nHost: example.test\r\nX-Pad: ", "\r\n\r\n"
	pad := n - len(start) - len(end)
	if pad < 1 {
		t.Fatalf("head of %d bytes too small", n)
	}
	h := start + strings.Repeat("p", pad) + end
	if len(h) != n {
		t.Fatalf("padHead: %d bytes, want %d", len(h), n)
	}
	return h
}

func TestHeadSizeLimit(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	for _, max := range []int{2048, 8192} {
		t.Run(strconv.Itoa(max), func(t *testing.T) {
			l := simpleLB(t, fmt.Sprintf("    http:\n      max_header_bytes: %d\n", max), be.addr())
			before := be.reqs.Load()
			// Exactly max_header_bytes, and one byte under: forwarded.
			for _, n := range []int{max - 1, max} {
				_, _, resp, body := sendRaw(t, l.addr, padHead(t, n), "GET")
				if resp.StatusCode != 200 || body != "ok" {
					t.Fatalf("head of %d bytes (limit %d): %d %q, want it forwarded", n, max, resp.StatusCode, body)
				}
			}
			// Pipelined behind a request that fits, too.
			c := tcptest.Dial(t, l.addr)
			io.WriteString(c, padHead(t, max)+padHead(t, max))
			br := bufio.NewReader(c)
			for i := range 2 {
				if resp, _ := readResp(t, br, "GET"); resp.StatusCode != 200 {
					t.Fatalf("pipelined head %d of %d bytes: %d", i, max, resp.StatusCode)
				}
			}
			if got := be.reqs.Load() - before; got != 4 {
				t.Fatalf("backend got %d requests, want 4", got)
			}
			// One byte over, and far over: 431, nothing forwarded.
			for i, n := range []int{max + 1, 10 * max} {
				c, br, resp, body := sendRaw(t, l.addr, padHead(t, n), "GET")
				checkOwnAnswer(t, resp, body, http.StatusRequestHeaderFieldsTooLarge)
				expectClosed(t, br, c)
				if got := l.errs("bad_request"); got != float64(i+1) {
					t.Errorf("errors_total{bad_request} = %v after %d oversized heads", got, i+1)
				}
			}
			// A head that never ends is cut at the limit too.
			c, br, resp, body := sendRaw(t, l.addr, "GET / HTTP/1.1\r\nHost: a\r\nX: "+strings.Repeat("x", 4*max), "GET")
			checkOwnAnswer(t, resp, body, http.StatusRequestHeaderFieldsTooLarge)
			expectClosed(t, br, c)
			if got := be.reqs.Load() - before; got != 4 {
				t.Errorf("backend got %d requests, want only the 4 that fit", got)
			}
			// Two oversized heads and the endless one: 431s are bad requests.
			mExpectErrs(t, l, nil, map[string]float64{"bad_request": 3})
		})
	}
}

func TestSlowHeadTimesOut(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(echoBody))
	l := simpleLB(t, "    timeouts:\n      handshake: 300ms\n      keepalive: 2s\n", be.addr())
	for _, tc := range []struct {
		name  string
		first string // a complete request sent first, if any
	}{
		{"first head", ""},
		// On a kept-alive conn the handshake timer runs from the next
		// request's first byte.
		{"head after a keep-alive request", "GET / HTTP/1.1\r\nHost: a\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := l.errs("timeout")
			all := mErrCounts(l)
			c := tcptest.Dial(t, l.addr)
			br := bufio.NewReader(c)
			if tc.first != "" {
				io.WriteString(c, tc.first)
				if resp, _ := readResp(t, br, "GET"); resp.StatusCode != 200 {
					t.Fatalf("first request: %d", resp.StatusCode)
				}
				time.Sleep(400 * time.Millisecond) // pacing: an idle gap longer than handshake, shorter than keepalive
			}
			reqs := be.reqs.Load()
			io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a\r\n")
			start := time.Now()
			expectClosed(t, br, c)
			if d := time.Since(start); d < 200*time.Millisecond || d > 3*time.Second {
				t.Errorf("closed after %v, want about 300ms", d)
			}
			if got := l.errs("timeout") - before; got != 1 {
				t.Errorf("errors_total{timeout} went up by %v, want 1", got)
			}
			mExpectErrs(t, l, all, map[string]float64{"timeout": 1})
			if be.reqs.Load() != reqs {
				t.Errorf("a partial head reached the backend")
			}
		})
	}
}

func TestKeepaliveIdleClose(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(echoBody))
	l := simpleLB(t, "    timeouts:\n      keepalive: 500ms\n", be.addr())
	c := tcptest.Dial(t, l.addr)
	br := bufio.NewReader(c)
	// Requests within the keepalive time keep the conn.
	for range 3 {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp, _ := readResp(t, br, "GET"); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		time.Sleep(100 * time.Millisecond) // pacing: a gap between requests, well within keepalive
	}
	start := time.Now()
	expectClosed(t, br, c)
	if d := time.Since(start); d < 200*time.Millisecond || d > 3*time.Second {
		t.Errorf("idle conn closed after %v, want about 500ms", d)
	}
}

func TestBodyTooLarge(t *testing.T) {
	const limit = 1000
	t.Run("content-length", func(t *testing.T) {
		be := newBackend(t, http.HandlerFunc(echoBody))
		l := simpleLB(t, fmt.Sprintf("    http:\n      max_body_bytes: %d\n", limit), be.addr())
		// Only the head is sent: the answer must not wait for the body.
		c, br, resp, body := sendRaw(t, l.addr, fmt.Sprintf("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", limit+1), "POST")
		checkOwnAnswer(t, resp, body, http.StatusRequestEntityTooLarge)
		expectClosed(t, br, c)
		if got := l.errs("bad_request"); got != 1 {
			t.Errorf("errors_total{bad_request} = %v", got)
		}
		if n := be.conns.Load(); n != 0 {
			t.Errorf("backend got %d conns before the 413", n)
		}
		// At the limit it is forwarded.
		_, _, resp, body = sendRaw(t, l.addr, fmt.Sprintf("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s", limit, strings.Repeat("b", limit)), "POST")
		if resp.StatusCode != 200 || len(body) != limit {
			t.Errorf("body at the limit: %d, %d bytes", resp.StatusCode, len(body))
		}
		mExpectErrs(t, l, nil, map[string]float64{"bad_request": 1})
	})
	t.Run("chunked", func(t *testing.T) {
		got := make(chan string, 4)
		be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(r.Body)
			got <- fmt.Sprintf("%d bytes, err %v", len(b), err)
			if err != nil {
				return
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(b)))
			w.Write(b)
		}))
		l := simpleLB(t, fmt.Sprintf("    http:\n      max_body_bytes: %d\n", limit), be.addr())

		// Within the limit: forwarded whole.
		_, _, resp, body := sendRaw(t, l.addr, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"+
			chunk([]byte(strings.Repeat("a", 600)))+chunk([]byte(strings.Repeat("a", 400)))+"0\r\n\r\n", "POST")
		if resp.StatusCode != 200 || len(body) != limit {
			t.Fatalf("chunked body at the limit: %d, %d bytes", resp.StatusCode, len(body))
		}
		<-got

		// Growing past it: the backend request is aborted and the client,
		// to whom nothing was answered yet, gets 413. The client keeps
		// its conn open and stops sending, as a real uploader would.
		c := tcptest.Dial(t, l.addr)
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
		for range 3 {
			io.WriteString(c, chunk([]byte(strings.Repeat("x", 400))))
			time.Sleep(20 * time.Millisecond) // pacing: the uploader's chunks come one by one
		}
		br := bufio.NewReader(c)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, body = readResp(t, br, "POST")
		checkOwnAnswer(t, resp, body, http.StatusRequestEntityTooLarge)
		expectClosed(t, br, c)
		if got := l.errs("bad_request"); got != 1 {
			t.Errorf("errors_total{bad_request} = %v", got)
		}
		select {
		case s := <-got:
			if strings.HasSuffix(s, "err <nil>") {
				t.Errorf("backend read a complete body (%s); the request must be aborted", s)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("backend request not aborted")
		}
		wait.For(t, "backend released", func() bool { return l.pools["p"].Backends()[0].Active() == 0 })
		mExpectErrs(t, l, nil, map[string]float64{"bad_request": 1})
	})
}

func TestNoBackendAvailable(t *testing.T) {
	t.Run("all down", func(t *testing.T) {
		be := newBackend(t, http.HandlerFunc(echoBody))
		be2 := newBackend(t, http.HandlerFunc(echoBody))
		l := simpleLB(t, "", be.addr(), be2.addr())
		for _, b := range l.pools["p"].Backends() {
			b.SetUp(false)
		}
		c, br, resp, body := sendRaw(t, l.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET")
		checkOwnAnswer(t, resp, body, http.StatusServiceUnavailable)
		expectClosed(t, br, c)
		if got := l.errs("no_backend"); got != 1 {
			t.Errorf("errors_total{no_backend} = %v", got)
		}
		if be.conns.Load()+be2.conns.Load() != 0 {
			t.Errorf("a down backend got a conn")
		}
		if got := l.requests("p", "503"); got != 1 {
			t.Errorf("http_requests_total{pool=p,code=503} = %v", got)
		}
		mExpectErrs(t, l, nil, map[string]float64{"no_backend": 1})
	})
	t.Run("full", func(t *testing.T) {
		be := newBackend(t, echo.WSHandler(echo.WSOptions{}))
		l := simpleLBWithPool(t, "    max_connections_per_backend: 1\n", be.addr())
		ws := tcptest.Dial(t, l.addr)
		io.WriteString(ws, upgradeHead("/"))
		if resp, err := http.ReadResponse(bufio.NewReader(ws), nil); err != nil || resp.StatusCode != 101 {
			t.Fatalf("tunnel: %v %v", resp, err)
		}
		for _, raw := range []string{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", upgradeHead("/")} {
			c, br, resp, body := sendRaw(t, l.addr, raw, "GET")
			checkOwnAnswer(t, resp, body, http.StatusServiceUnavailable)
			expectClosed(t, br, c)
		}
		if got := l.errs("no_backend"); got != 2 {
			t.Errorf("errors_total{no_backend} = %v", got)
		}
		if n := be.reqs.Load(); n != 1 {
			t.Errorf("backend got %d requests, want only the tunnel's", n)
		}
		mExpectErrs(t, l, nil, map[string]float64{"no_backend": 2})
		// The tunnel ends: the backend takes traffic again.
		ws.Close()
		b := l.pools["p"].Backends()[0]
		wait.For(t, "tunnel released", func() bool { return b.Active() == 0 })
		if _, _, resp, _ := sendRaw(t, l.addr, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "GET"); resp.StatusCode == 503 {
			t.Errorf("still 503 after the tunnel ended")
		}
	})
}

// simpleLBWithPool is simpleLB with extra keys for the pool (indented by the
// caller with 4 spaces).
func simpleLBWithPool(t *testing.T, poolExtra string, backends ...string) *lb {
	t.Helper()
	var sb strings.Builder
	sb.WriteString("listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    mode: l7\n    pool: p\n")
	sb.WriteString("pools:\n  - name: p\n" + poolExtra + "    backends:\n")
	for _, a := range backends {
		fmt.Fprintf(&sb, "      - address: %s\n", a)
	}
	return startLB(t, sb.String())
}

func TestDialFailure(t *testing.T) {
	l := simpleLB(t, "    timeouts:\n      connect: 1s\n", loopback.DeadAddr(t), loopback.DeadAddr(t))
	for _, raw := range []string{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", upgradeHead("/")} {
		before := l.errs("dial")
		all := mErrCounts(l)
		c, br, resp, body := sendRaw(t, l.addr, raw, "GET")
		checkOwnAnswer(t, resp, body, http.StatusBadGateway)
		expectClosed(t, br, c)
		// Both backends were tried: the first and the one retry.
		if got := l.errs("dial") - before; got != 2 {
			t.Errorf("errors_total{dial} went up by %v, want 2", got)
		}
		mExpectErrs(t, l, all, map[string]float64{"dial": 2})
	}
	for _, b := range l.pools["p"].Backends() {
		if b.Active() != 0 {
			t.Errorf("%s: %d reservations left", b, b.Active())
		}
	}
	if got := l.errs("no_backend"); got != 0 {
		t.Errorf("errors_total{no_backend} = %v, want 0: a dial failure is a 502", got)
	}
}

func TestDialFailureThenRetrySucceeds(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "alive") }))
	l := simpleLBWithPool(t, "    balance: round_robin\n", loopback.DeadAddr(t), be.addr())
	for i := range 4 {
		_, _, resp, body := sendRaw(t, l.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET")
		if resp.StatusCode != 200 || body != "alive" {
			t.Fatalf("request %d: %d %q, want the live backend after one retry", i, resp.StatusCode, body)
		}
	}
}

func TestBackendFaults(t *testing.T) {
	for _, tc := range []struct {
		name   string
		serve  func(c net.Conn)
		status int
		reason string // errors_total reason that goes up by one, if any
	}{
		{"silent backend", func(c net.Conn) {
			http.ReadRequest(bufio.NewReader(c))
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			io.Copy(io.Discard, c) // reads, never answers
		}, http.StatusGatewayTimeout, "timeout"},
		{"closes without answering", func(c net.Conn) {
			http.ReadRequest(bufio.NewReader(c))
		}, http.StatusBadGateway, ""},
		{"answers garbage", func(c net.Conn) {
			http.ReadRequest(bufio.NewReader(c))
			io.WriteString(c, "HELLO THERE\r\n\r\n")
		}, http.StatusBadGateway, ""},
		{"answers 101 to a plain request", func(c net.Conn) {
			http.ReadRequest(bufio.NewReader(c))
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			io.Copy(io.Discard, c)
		}, http.StatusBadGateway, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := tcptest.Serve(t, tc.serve)
			addr := be.Addr()
			l := simpleLB(t, "    timeouts:\n      idle: 300ms\n", addr)
			start := time.Now()
			c, br, resp, body := sendRaw(t, l.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET")
			checkOwnAnswer(t, resp, body, tc.status)
			expectClosed(t, br, c)
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("answer took %v", d)
			}
			if tc.reason != "" {
				if got := l.errs(tc.reason); got != 1 {
					t.Errorf("errors_total{%s} = %v", tc.reason, got)
				}
			}
			wantErrs := map[string]float64{}
			if tc.reason != "" {
				wantErrs[tc.reason] = 1
			}
			mExpectErrs(t, l, nil, wantErrs)
			if be.Accepted() < 1 {
				t.Errorf("backend was never dialed")
			}
			b := l.pools["p"].Backends()[0]
			wait.For(t, "backend released", func() bool { return b.Active() == 0 })
			if got := testutil.ToFloat64(l.metrics.ConnectionsActive.WithLabelValues("web", "p", addr)); got != 0 {
				t.Errorf("connections_active = %v", got)
			}
			if got := l.requests("p", strconv.Itoa(tc.status)); got != 1 {
				t.Errorf("http_requests_total{code=%d} = %v", tc.status, got)
			}
		})
	}
}

func TestBackendClosesMidTunnel(t *testing.T) {
	addr := tcptest.Serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Accept: "+header.AcceptKey(req.Header.Get("Sec-WebSocket-Key"))+"\r\n\r\nfrom backend")
		buf := make([]byte, 4)
		io.ReadFull(br, buf) // then close, mid-tunnel
	}).Addr()
	l := simpleLB(t, "", addr)
	b := l.pools["p"].Backends()[0]
	active := l.metrics.ConnectionsActive.WithLabelValues("web", "p", addr)

	c := tcptest.Dial(t, l.addr)
	io.WriteString(c, upgradeHead("/"))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	wait.For(t, "tunnel counted", func() bool { return testutil.ToFloat64(active) == 1 && b.Active() == 1 })
	io.WriteString(c, "ping")
	rest, err := io.ReadAll(br)
	if err != nil && !isReset(err) {
		t.Fatalf("client conn not closed after the backend closed: %v", err)
	}
	if string(rest) != "from backend" {
		t.Errorf("client got %q", rest)
	}
	wait.For(t, "gauges back to 0", func() bool { return testutil.ToFloat64(active) == 0 && b.Active() == 0 })
	if got := testutil.ToFloat64(l.metrics.TunnelsClosed.WithLabelValues("web", "p", "backend")); got != 1 {
		t.Errorf("tunnels_closed_total{backend} = %v", got)
	}
	mExpectErrs(t, l, nil, nil)
	if got := l.fl.Active(); got != 0 {
		wait.For(t, "client conn ended", func() bool { return l.fl.Active() == 0 })
	}
}

func TestBadWebSocketHandshakes(t *testing.T) {
	head := func(method, proto, extra string) string {
		return method + " /ws " + proto + "\r\nHost: example.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + extra + "\r\n"
	}
	const ver = "Sec-WebSocket-Version: 13\r\n"
	const key = "Sec-WebSocket-Key: " + wsKey + "\r\n"
	for _, tc := range []struct {
		name, raw string
		status    int
	}{
		{"missing key", head("GET", "HTTP/1.1", ver), 400},
		{"key too short", head("GET", "HTTP/1.1", ver+"Sec-WebSocket-Key: dGhlIHNhbXBsZQ==\r\n"), 400},
		{"key too long", head("GET", "HTTP/1.1", ver+"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZSBtb3Jl\r\n"), 400},
		{"key not base64", head("GET", "HTTP/1.1", ver+"Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!==\r\n"), 400},
		{"two keys", head("GET", "HTTP/1.1", ver+key+key), 400},
		{"missing version", head("GET", "HTTP/1.1", key), 400},
		{"version 8", head("GET", "HTTP/1.1", "Sec-WebSocket-Version: 8\r\n"+key), 426},
		{"POST", head("POST", "HTTP/1.1", ver+key), 400},
		{"POST with a body", head("POST", "HTTP/1.1", ver+key+"Content-Length: 2\r\n") + "hi", 400},
		{"HTTP/1.0", head("GET", "HTTP/1.0", ver+key), 400},
		{"GET with a body", "GET /ws HTTP/1.1\r\nHost: example.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + ver + key + "Content-Length: 2\r\n\r\nhi", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := newBackend(t, echo.WSHandler(echo.WSOptions{}))
			l := simpleLB(t, "", be.addr())
			c, br, resp, body := sendRaw(t, l.addr, tc.raw, "GET")
			checkOwnAnswer(t, resp, body, tc.status)
			if tc.status == 426 {
				if got := resp.Header.Get("Sec-WebSocket-Version"); got != "13" {
					t.Errorf("426 without Sec-WebSocket-Version: 13 (got %q)", got)
				}
			}
			expectClosed(t, br, c)
			if got := l.errs("bad_handshake"); got != 1 {
				t.Errorf("errors_total{bad_handshake} = %v", got)
			}
			mExpectErrs(t, l, nil, map[string]float64{"bad_handshake": 1})
			if n := be.conns.Load(); n != 0 {
				t.Errorf("backend got %d conns", n)
			}
		})
	}
}

// TestTLSHandshakeGarbage: a client that starts a TLS record and then sends
// nonsense is closed and counted.
func TestTLSHandshakeGarbage(t *testing.T) {
	certFile, keyFile, _ := certtest.SelfSigned(t)
	be := newBackend(t, http.HandlerFunc(echoBody))
	l := simpleLB(t, fmt.Sprintf("    tls: {cert: %s, key: %s, redirect_http: false}\n", certFile, keyFile), be.addr())
	c := tcptest.Dial(t, l.addr)
	io.WriteString(c, "\x16\x03\x01\x00\x05hello")
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.ReadAll(br) // a TLS alert, then close
	wait.For(t, "tls error counted", func() bool { return l.errs("tls") == 1 })
	mExpectErrs(t, l, nil, map[string]float64{"tls": 1})

	// Plain HTTP with redirect_http off: closed, counted, nothing forwarded.
	c2 := tcptest.Dial(t, l.addr)
	io.WriteString(c2, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	expectClosed(t, bufio.NewReader(c2), c2)
	wait.For(t, "tls error counted", func() bool { return l.errs("tls") == 2 })
	mExpectErrs(t, l, nil, map[string]float64{"tls": 2})
	if be.conns.Load() != 0 {
		t.Errorf("backend got a conn")
	}
}
