package l7

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wslb/wslb/internal/certtest"
	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/syncbuf"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
	"github.com/wslb/wslb/pool"
)

// TLS to backends end to end: a pool with tls, real TLS backends
// (httptest servers with certificates of a CA made for the test) and an l7
// listener read from a config file, as config.Load reads its files.

// tlsBackendLB is an l7 listener "web" with extra keys (indented 4 spaces)
// in front of pool p, round robin over backends, which speaks TLS with
// tlsKeys (the inside of a flow mapping: "ca: /x/ca.pem, server_name: b").
func tlsBackendLB(t *testing.T, extra, tlsKeys string, backends []string, setup ...func(*Proxy)) *lb {
	t.Helper()
	var sb strings.Builder
	sb.WriteString("listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    mode: l7\n    pool: p\n" + extra)
	sb.WriteString("pools:\n  - name: p\n    balance: round_robin\n    tls: {" + tlsKeys + "}\n    backends:\n")
	for _, a := range backends {
		fmt.Fprintf(&sb, "      - address: %s\n", a)
	}
	return startLBFile(t, sb.String(), setup...)
}

// serverTLS is a backend's TLS: a certificate of ca for 127.0.0.1 and
// backend.test.
func serverTLS(t testing.TB, ca *certtest.CA) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, certtest.Leaf{Names: []string{"127.0.0.1", "backend.test"}})}}
}

// says answers every request with word.
func says(word string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, word) })
}

// TestBackendTLSRequests: plain requests, with and without a body, reach a
// TLS backend that verifies, over http/1.1 chosen by ALPN, with the SNI of
// server_name (and none for an IP, as RFC 6066 asks).
func TestBackendTLSRequests(t *testing.T) {
	ca := certtest.NewCA(t)
	caFile := ca.WriteRoots(t)
	states := make(chan tls.ConnectionState, 16)
	be := newTLSBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			states <- *r.TLS
		}
		echoBody(w, r)
	}), serverTLS(t, ca))
	for _, tc := range []struct{ name, keys, sni string }{
		{"verified against the IP", "ca: " + caFile, ""},
		{"verified against server_name", "ca: " + caFile + ", server_name: backend.test", "backend.test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := tlsBackendLB(t, "", tc.keys, []string{be.addr()})
			resp, body := exchange(t, l.addr, "GET /a HTTP/1.1\r\nHost: a.test\r\n\r\n")
			if resp.StatusCode != 200 || body != "" {
				t.Fatalf("GET: %d %q", resp.StatusCode, body)
			}
			resp, body = exchange(t, l.addr, "POST /items HTTP/1.1\r\nHost: a.test\r\nContent-Length: 11\r\n\r\nhello, tls!")
			if resp.StatusCode != 200 || body != "hello, tls!" {
				t.Fatalf("POST: %d %q", resp.StatusCode, body)
			}
			for i := range 2 {
				select {
				case st := <-states:
					if st.NegotiatedProtocol != "http/1.1" || st.ServerName != tc.sni {
						t.Errorf("request %d: ALPN %q, SNI %q; want http/1.1, %q", i, st.NegotiatedProtocol, st.ServerName, tc.sni)
					}
				default:
					t.Fatalf("request %d did not reach the backend over TLS", i)
				}
			}
		})
	}
}

// TestBackendTLSKeepAlive: kept-alive TLS backend conns are reused from the
// workers' idle caches as plain ones are, so sequential requests cost at
// most one handshake per worker, not one each.
func TestBackendTLSKeepAlive(t *testing.T) {
	ca := certtest.NewCA(t)
	be := newTLSBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok "+r.URL.Path)
	}), serverTLS(t, ca))
	l := tlsBackendLB(t, "", "ca: "+ca.WriteRoots(t), []string{be.addr()})
	const n, workers = 200, 2 // startLB runs two workers

	c := tcptest.Dial(t, l.addr)
	br := bufio.NewReader(c)
	for i := range n {
		fmt.Fprintf(c, "GET /r%d HTTP/1.1\r\nHost: example.test\r\n\r\n", i)
		if resp, body := readResp(t, br, "GET"); resp.StatusCode != 200 || body != fmt.Sprintf("ok /r%d", i) {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if got := be.handshakes.Load(); got != 1 {
		t.Errorf("%d TLS handshakes for %d requests on one client conn, want 1", got, n)
	}
	b := l.pools["p"].Backends()[0]
	// The last answer came before its backend conn went back to the cache.
	wait.For(t, "the backend conn back in the cache", func() bool { return b.Active() == 0 })
	// A client conn each: the kernel spreads them over the workers, and
	// each worker reuses its own idle conn. A request's backend conn goes
	// back to the cache just after its answer, before the reservation is
	// released: the next request waits for that, or it could find the
	// cache empty and dial (as it would have to if it were concurrent).
	for i := range n {
		if resp, body := exchange(t, l.addr, fmt.Sprintf("GET /c%d HTTP/1.1\r\nHost: example.test\r\n\r\n", i)); resp.StatusCode != 200 || body != fmt.Sprintf("ok /c%d", i) {
			t.Fatalf("client conn %d: %d %q", i, resp.StatusCode, body)
		}
		wait.For(t, "the backend conn back in the cache", func() bool { return b.Active() == 0 })
	}
	if got := be.handshakes.Load(); got > workers {
		t.Errorf("%d TLS handshakes for %d sequential requests, want at most one per worker (%d)", got, 2*n, workers)
	}
	if got := be.conns.Load(); got > workers {
		t.Errorf("backend saw %d TCP conns, want at most %d", got, workers)
	}
	if got := be.reqs.Load(); got != 2*n {
		t.Errorf("backend saw %d requests, want %d", got, 2*n)
	}
	if got := b.Idle(); got < 1 || got > workers {
		t.Errorf("idle TLS conns cached = %d, want 1 to %d", got, workers)
	}
}

// TestBackendTLSWebSocket: an upgrade goes over TLS to the backend and the
// tunnel relays the TLS conn: the backend's first frame, sent right behind
// its 101, arrives; the echo works; bytes, the upgrade and the access line
// are counted as for a plain backend; and the idle timeout still ends a
// quiet tunnel.
func TestBackendTLSWebSocket(t *testing.T) {
	ca := certtest.NewCA(t)
	be := newTLSBackend(t, echo.WSHandler(echo.WSOptions{Name: "tls-backend"}), serverTLS(t, ca))
	var lines accessLines
	l := tlsBackendLB(t, "    timeouts: {idle: 500ms}\n", "ca: "+ca.WriteRoots(t), []string{be.addr()}, lines.setup)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	c := dialWS(t, "ws://"+l.addr+"/chat?hello=1", nil)
	if _, hello, err := c.Read(ctx); err != nil || string(hello) != "connected to tls-backend" {
		t.Fatalf("greeting %q: %v", hello, err)
	}
	msg := bytes.Repeat([]byte("x"), 1000)
	echoOnce(t, c, websocket.MessageBinary, msg)
	c.Close(websocket.StatusNormalClosure, "")
	got := lines.waitLines(t, 1)[0]
	checkFields(t, got, map[string]any{
		"msg": "tunnel", "listener": "web", "pool": "p", "backend": be.addr(), "path": "/chat", "status": 101.0, "upgrade": true,
	})
	greeting := float64(len("connected to tls-backend"))
	for dir, least := range map[string]float64{"rx": 1000, "tx": 1000 + greeting} {
		if n, _ := got[dir].(float64); n < least || n > least+100 {
			t.Errorf("access line %s = %v, want %v bytes of payload plus framing", dir, got[dir], least)
		}
		if n := testutil.ToFloat64(l.metrics.Bytes.WithLabelValues("web", "p", be.addr(), dir)); n != got[dir] {
			t.Errorf("wslb_bytes_total{direction=%s} = %v, the access line says %v", dir, n, got[dir])
		}
	}
	if n := testutil.ToFloat64(l.metrics.Upgrades.WithLabelValues("web", "p")); n != 1 {
		t.Errorf("wslb_upgrades_total = %v, want 1", n)
	}

	// Quiet past timeouts.idle: closed, and counted as idle.
	quiet := dialWS(t, "ws://"+l.addr+"/quiet", nil)
	start := time.Now()
	if _, _, err := quiet.Read(ctx); err == nil {
		t.Fatal("a message arrived on a quiet tunnel")
	}
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("quiet tunnel closed after %v, before timeouts.idle (500ms)", d)
	}
	wait.For(t, "the idle close counted", func() bool {
		return testutil.ToFloat64(l.metrics.TunnelsClosed.WithLabelValues("web", "p", "idle")) == 1
	})
	checkFields(t, lines.waitLines(t, 2)[1], map[string]any{"path": "/quiet", "reason": "idle"})
	if b := l.pools["p"].Backends()[0]; b.Active() != 0 {
		t.Errorf("%d reservations left", b.Active())
	}
}

// TestBackendTLSWSSChain: wss in front and wss behind: the client's TLS is
// terminated by the listener and a new TLS conn carries the tunnel to the
// backend; both TLS conns relay on goroutines, whole, both ways.
func TestBackendTLSWSSChain(t *testing.T) {
	ca := certtest.NewCA(t)
	be := newTLSBackend(t, echo.WSHandler(echo.WSOptions{Name: "wss-backend"}), serverTLS(t, ca))
	certFile, keyFile, roots := certtest.SelfSigned(t)
	l := tlsBackendLB(t, fmt.Sprintf("    tls: {cert: %s, key: %s}\n", certFile, keyFile),
		"ca: "+ca.WriteRoots(t)+", server_name: backend.test", []string{be.addr()})
	c := dialWS(t, "wss://"+l.addr+"/ws?hello=1", &websocket.DialOptions{HTTPClient: tlsClient(roots)})
	c.SetReadLimit(4 << 20)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, hello, err := c.Read(ctx); err != nil || string(hello) != "connected to wss-backend" {
		t.Fatalf("greeting %q: %v", hello, err)
	}
	big := make([]byte, 2<<20)
	rand.Read(big)
	echoOnce(t, c, websocket.MessageBinary, big)
	echoOnce(t, c, websocket.MessageText, []byte("small"))
	if got := be.handshakes.Load(); got != 1 {
		t.Errorf("backend ran %d TLS handshakes, want 1", got)
	}
}

// dialFailures records what OnDialError was told.
type dialFailures struct {
	mu   sync.Mutex
	errs map[*pool.Backend][]error
}

func (f *dialFailures) setup(px *Proxy) {
	px.OnDialError = func(b *pool.Backend, err error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.errs == nil {
			f.errs = map[*pool.Backend][]error{}
		}
		f.errs[b] = append(f.errs[b], err)
	}
}

func (f *dialFailures) of(b *pool.Backend) []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.errs[b]
}

// withLog makes l's dials log to a buffer the test reads: the Dialer takes
// the Proxy's logger when a configuration is staged.
func withLog(t *testing.T, l *lb) *syncbuf.Buffer {
	t.Helper()
	var buf syncbuf.Buffer
	l.proxy.Log = slog.New(slog.NewTextHandler(&buf, nil))
	if err := l.proxy.Update(l.cfg, l.pools); err != nil {
		t.Fatal(err)
	}
	return &buf
}

// TestBackendTLSBadCertificate: a backend whose certificate does not verify
// (another name, another CA, expired) is a failed dial: counted as dial,
// told to the passive checks, logged with what to fix, and the one other
// backend is tried; with no other, the client gets 502.
func TestBackendTLSBadCertificate(t *testing.T) {
	ca, other := certtest.NewCA(t), certtest.NewCA(t)
	caFile := ca.WriteRoots(t)
	good := newTLSBackend(t, says("good"), serverTLS(t, ca))
	bad := []struct {
		name, errPart string
		be            *countingServer
	}{
		{"another name", "certificate is valid for 127.0.0.2, not 127.0.0.1",
			newTLSBackend(t, says("bad"), &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, certtest.Leaf{Names: []string{"127.0.0.2", "elsewhere.test"}})}})},
		{"another CA", "certificate signed by unknown authority", newTLSBackend(t, says("bad"), serverTLS(t, other))},
		{"expired", "certificate has expired",
			newTLSBackend(t, says("bad"), &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, certtest.Leaf{Names: []string{"127.0.0.1"}, Expired: true})}})},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			var failed dialFailures
			l := tlsBackendLB(t, "", "ca: "+caFile, []string{tc.be.addr(), good.addr()}, failed.setup)
			logs := withLog(t, l)
			for i := range 2 {
				resp, body := exchange(t, l.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
				if resp.StatusCode != 200 || body != "good" {
					t.Fatalf("request %d: %d %q, want the good backend after one retry", i, resp.StatusCode, body)
				}
			}
			badB, goodB := l.pools["p"].Backends()[0], l.pools["p"].Backends()[1]
			errs := failed.of(badB)
			if len(errs) == 0 || float64(len(errs)) != l.errs("dial") || len(failed.of(goodB)) != 0 {
				t.Fatalf("passive reports: bad %d, good %d; errors_total{dial} = %v", len(errs), len(failed.of(goodB)), l.errs("dial"))
			}
			for _, err := range errs {
				if !strings.Contains(err.Error(), tc.errPart) || !strings.Contains(err.Error(), "check the pool's tls.server_name and tls.ca") {
					t.Errorf("dial error %q, want %q and what to check", err, tc.errPart)
				}
			}
			if tc.be.reqs.Load() != 0 {
				t.Error("a request reached the backend whose certificate did not verify")
			}
			if log := logs.String(); !strings.Contains(log, "backend dial failed") || !strings.Contains(log, "backend certificate not trusted") {
				t.Errorf("log lacks the failed dial:\n%s", log)
			}
		})
	}
	t.Run("no other backend", func(t *testing.T) {
		var failed dialFailures
		l := tlsBackendLB(t, "", "ca: "+caFile, []string{bad[0].be.addr(), bad[1].be.addr()}, failed.setup)
		for _, raw := range []string{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", upgradeHead("/")} {
			before := mErrCounts(l)
			c, br, resp, body := sendRaw(t, l.addr, raw, "GET")
			checkOwnAnswer(t, resp, body, http.StatusBadGateway)
			expectClosed(t, br, c)
			mExpectErrs(t, l, before, map[string]float64{"dial": 2})
		}
		for _, b := range l.pools["p"].Backends() {
			if n := len(failed.of(b)); n != 2 {
				t.Errorf("%s: %d failed dials reported, want 2", b, n)
			}
			if b.Active() != 0 {
				t.Errorf("%s: %d reservations left", b, b.Active())
			}
		}
	})
}

// TestBackendTLSInsecureSkipVerify: insecure_skip_verify accepts a
// certificate from any CA, for any name.
func TestBackendTLSInsecureSkipVerify(t *testing.T) {
	be := newTLSBackend(t, says("unverified"), &tls.Config{Certificates: []tls.Certificate{
		certtest.NewCA(t).Issue(t, certtest.Leaf{Names: []string{"elsewhere.test"}})}})
	l := tlsBackendLB(t, "", "ca: "+certtest.NewCA(t).WriteRoots(t)+", insecure_skip_verify: true", []string{be.addr()})
	if resp, body := exchange(t, l.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 200 || body != "unverified" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
}

// TestBackendMutualTLS: a backend that requires a client certificate gets
// the pool's cert; without one it refuses, and the client gets 502.
func TestBackendMutualTLS(t *testing.T) {
	ca := certtest.NewCA(t)
	caFile := ca.WriteRoots(t)
	conf := serverTLS(t, ca)
	conf.ClientAuth, conf.ClientCAs = tls.RequireAndVerifyClientCert, ca.Pool()
	be := newTLSBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello "+r.TLS.PeerCertificates[0].Subject.CommonName)
	}), conf)
	certFile, keyFile := certtest.Write(t, ca.Issue(t, certtest.Leaf{Names: []string{"wslb-client"}, Client: true}))

	l := tlsBackendLB(t, "", fmt.Sprintf("ca: %s, cert: %s, key: %s", caFile, certFile, keyFile), []string{be.addr()})
	if resp, body := exchange(t, l.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 200 || body != "hello wslb-client" {
		t.Fatalf("with a client certificate: %d %q", resp.StatusCode, body)
	}

	without := tlsBackendLB(t, "", "ca: "+caFile, []string{be.addr()})
	resp, body := exchange(t, without.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	checkOwnAnswer(t, resp, body, http.StatusBadGateway)
	if be.reqs.Load() != 1 {
		t.Errorf("backend served %d requests, want only the one with a client certificate", be.reqs.Load())
	}
}
