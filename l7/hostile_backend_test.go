package l7

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wslb/wslb/header"
	"github.com/wslb/wslb/internal/certtest"
	"github.com/wslb/wslb/internal/syncbuf"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
)

// The parts TestHostileInput runs on: a backend that records every byte it
// receives, and the listeners that face the client.

// recorder is a raw HTTP/1.1 backend that keeps every byte it receives, conn
// by conn: what reached a backend is read off its sockets, not from what a
// handler was shown. It answers one request per conn and then waits for wslb
// to close it (Connection: close), so that wslb caches no backend conn, every
// conn a row opens is the row's own, and whatever wslb sends behind a request
// is recorded too. The answer to an upgrade depends on its path: /ws/426 and
// /ws/403 refuse it, /ws/bad-accept and /ws/no-upgrade send an invalid 101,
// /ws/early a 103 before a valid 101; any other upgrade gets a valid 101 and
// an echo. A plain request gets 200 "ok".
type recorder struct {
	srv   *tcptest.Server
	mu    sync.Mutex
	conns []*recordedConn // in the order their serve began
}

// recordedConn is what one backend conn received; done once it ended.
type recordedConn struct {
	r    *recorder
	buf  bytes.Buffer
	done bool
}

func (rc *recordedConn) Write(p []byte) (int, error) {
	rc.r.mu.Lock()
	defer rc.r.mu.Unlock()
	return rc.buf.Write(p)
}

func newRecorder(t *testing.T) *recorder {
	t.Helper()
	r := &recorder{}
	r.srv = tcptest.Serve(t, r.serve)
	return r
}

func (r *recorder) serve(c net.Conn) {
	rc := &recordedConn{r: r}
	r.mu.Lock()
	r.conns = append(r.conns, rc)
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		rc.done = true
		r.mu.Unlock()
	}()
	// Bounded: wslb closes every conn of a row well within it.
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(io.TeeReader(c, rc))
	sink := io.Discard
	if req, err := http.ReadRequest(br); err == nil {
		if _, err := io.Copy(io.Discard, req.Body); err == nil {
			answer, echo := recorderAnswer(req)
			_, _ = io.WriteString(c, answer)
			if echo {
				sink = c
			}
		}
	}
	_, _ = io.Copy(sink, br)
}

// recorderAnswer is what the recorder answers req, and whether it then
// echoes what follows (a tunnel).
func recorderAnswer(req *http.Request) (answer string, echo bool) {
	if req.Header.Get("Upgrade") == "" {
		return "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", false
	}
	accept := header.AcceptKey(req.Header.Get("Sec-WebSocket-Key"))
	switchTo := func(accept string) string {
		return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n"
	}
	switch req.URL.Path {
	case "/ws/426":
		return "HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", false
	case "/ws/403":
		return "HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", false
	case "/ws/bad-accept":
		return switchTo("AAAAAAAAAAAAAAAAAAAAAAAAAAA="), false
	case "/ws/no-upgrade":
		return "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n", false
	case "/ws/early":
		return "HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n" + switchTo(accept), true
	}
	return switchTo(accept), true
}

// mark is where the next row's conns begin.
func (r *recorder) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns)
}

// since waits until every conn the backend accepted has ended, then returns
// what the conns from mark on received, in order, leaving out the last one
// that received exactly good (the good request sent after the row).
func (r *recorder) since(t *testing.T, mark int, good string) string {
	t.Helper()
	wait.For(t, "every backend conn to end", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, rc := range r.conns {
			if !rc.done {
				return false
			}
		}
		return len(r.conns) == r.srv.Accepted()
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	got := make([]string, 0, len(r.conns)-mark)
	for _, rc := range r.conns[mark:] {
		got = append(got, rc.buf.String())
	}
	for i := len(got) - 1; i >= 0; i-- {
		if got[i] == good {
			return strings.Join(append(got[:i], got[i+1:]...), "")
		}
	}
	t.Errorf("the good request did not reach the backend as %q; it got %q", good, got)
	return strings.Join(got, "")
}

// front is one of the listeners TestHostileInput sends to.
type front int

const (
	plainFront   front = iota // l7, no TLS, no PROXY header
	tlsFront                  // TLS with redirect_http
	tlsOnlyFront              // TLS without redirect_http
	proxiedFront              // accept_proxy_protocol
)

// hostileLB is a listener of the suite: its lb, what it logs (a panic
// recovered while serving a conn would be logged, and the row would
// otherwise pass as a close), and how a good request is sent to it.
type hostileLB struct {
	*lb
	log  *syncbuf.Buffer
	good func(t *testing.T) (*http.Response, string)
}

// goodHead is the good request sent after every row, and goodSeen what the
// backend receives for it (Connection is hop-by-hop).
const (
	goodHead = "GET /good HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n"
	goodSeen = "GET /good HTTP/1.1\r\nHost: example.test\r\n\r\n"
	// proxyV1 is a valid PROXY v1 header.
	proxyV1 = "PROXY TCP4 203.0.113.7 127.0.0.1 5000 80\r\n"
)

// hostileFronts starts the suite's four listeners, all on one pool over
// backend: small limits so that a row can reach them (max_header_bytes 1024,
// max_body_bytes 64), a short handshake timeout for the rows that stall, no
// forwarding headers so that a forwarded request reaches the backend as the
// client's bytes rewritten and nothing else, and a static route at
// /internal/ with no fallback: a request there never reaches the backend,
// whatever happened before it on its conn.
func hostileFronts(t *testing.T, backend string) map[front]*hostileLB {
	t.Helper()
	certFile, keyFile, roots := certtest.SelfSigned(t)
	staticDir := t.TempDir()
	fronts := map[front]*hostileLB{}
	for f, extra := range map[front]string{
		plainFront:   "",
		tlsFront:     fmt.Sprintf("    tls: {cert: %s, key: %s}\n", certFile, keyFile),
		tlsOnlyFront: fmt.Sprintf("    tls: {cert: %s, key: %s, redirect_http: false}\n", certFile, keyFile),
		proxiedFront: "    accept_proxy_protocol: true\n",
	} {
		yaml := "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    mode: l7\n    pool: p\n" + extra +
			"    timeouts: {handshake: 2s}\n" +
			"    http: {max_header_bytes: 1024, max_body_bytes: 64, forwarded_headers: false}\n" +
			"    routes:\n      - {path: /internal/, static: " + staticDir + ", fallback: \"\"}\n" +
			"pools:\n  - name: p\n    backends: [{address: " + backend + "}]\n"
		log := &syncbuf.Buffer{}
		l := startLB(t, yaml, func(px *Proxy) { px.Log = slog.New(slog.NewTextHandler(log, nil)) })
		h := &hostileLB{lb: l, log: log}
		switch f {
		case tlsFront, tlsOnlyFront:
			h.good = func(t *testing.T) (*http.Response, string) {
				c := tls.Client(tcptest.Dial(t, l.addr), &tls.Config{RootCAs: roots, ServerName: "localhost"})
				if _, err := io.WriteString(c, goodHead); err != nil {
					t.Fatal(err)
				}
				return readResp(t, bufio.NewReader(c), "GET")
			}
		case proxiedFront:
			h.good = func(t *testing.T) (*http.Response, string) { return exchange(t, l.addr, proxyV1+goodHead) }
		default:
			h.good = func(t *testing.T) (*http.Response, string) { return exchange(t, l.addr, goodHead) }
		}
		fronts[f] = h
	}
	return fronts
}

// clientHello returns the first TLS record a Go client sends: its ClientHello.
func clientHello(t *testing.T) []byte {
	t.Helper()
	c, s := net.Pipe()
	defer s.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = tls.Client(c, &tls.Config{ServerName: "example.test"}).Handshake()
	}()
	defer func() { c.Close(); <-done }()
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	head := make([]byte, 5)
	if _, err := io.ReadFull(s, head); err != nil {
		t.Fatal(err)
	}
	rest := make([]byte, int(head[3])<<8|int(head[4]))
	if _, err := io.ReadFull(s, rest); err != nil {
		t.Fatal(err)
	}
	return append(head, rest...)
}
