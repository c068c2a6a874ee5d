package l7

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
	"github.com/wslb/wslb/pool"
)

// DESIGN.md "Slow clients, starvation and spoofing": a peer that stops
// reading (timeouts.send) ends its request, with both conns closed and the
// backend conn never reused; what the client does wrong is blamed on the
// client, never on the backend. Timeouts are short here; every wait is
// bounded by wait.Timeout.

// faultLB is simpleLB with its access lines and its reports to the passive
// checks kept, to tell what a fault was blamed on.
type faultLB struct {
	*lb
	lines    accessLines
	dialErrs atomic.Int32
}

// startFaultLB is simpleLB over backend with extra listener keys; a
// rateGrace other than 0 replaces min_body_rate's 5 s.
func startFaultLB(t *testing.T, extra, backend string, rateGrace time.Duration) *faultLB {
	t.Helper()
	f := &faultLB{}
	f.lb = startLB(t, simpleYAML(extra, backend), f.lines.setup, func(px *Proxy) {
		px.OnDialError = func(*pool.Backend, error) { f.dialErrs.Add(1) }
		px.rateGrace = rateGrace
	})
	return f
}

// line waits for the access line of the n-th request (from 1) and checks
// its status and reason.
func (f *faultLB) line(t *testing.T, n int, status int, reason string) {
	t.Helper()
	wait.For(t, fmt.Sprintf("access line %d", n), func() bool { return len(f.lines.all(t)) >= n })
	checkFields(t, f.lines.all(t)[n-1], map[string]any{"status": float64(status), "reason": reason})
}

// released checks that the backend serves nothing and keeps no idle conn:
// the request's conn was closed, not cached, and its gauge is back to 0;
// and that the passive checks heard of nothing.
func (f *faultLB) released(t *testing.T) {
	t.Helper()
	b := f.pools["p"].Backends()[0]
	wait.For(t, "the backend released, its conn not cached", func() bool { return b.Active() == 0 && b.Idle() == 0 })
	if g := testutil.ToFloat64(f.metrics.ConnectionsActive.WithLabelValues("web", "p", b.String())); g != 0 {
		t.Errorf("wslb_connections_active = %v", g)
	}
	if n := f.dialErrs.Load(); n != 0 {
		t.Errorf("the passive checks were told of %d failures", n)
	}
}

// ended checks how the test's only request ended, the client's doing: its
// access line, the errors it counted and nothing else, no 5xx for the pool,
// and the backend released.
func (f *faultLB) ended(t *testing.T, status int, reason string, errs map[string]float64) {
	t.Helper()
	f.line(t, 1, status, reason)
	mExpectErrs(t, f.lb, nil, errs)
	f.notBlamed(t)
	f.released(t)
}

// notBlamed checks that no 5xx was counted for the pool.
func (f *faultLB) notBlamed(t *testing.T) {
	t.Helper()
	for _, code := range []string{"500", "502", "503", "504"} {
		if n := f.requests("p", code); n != 0 {
			t.Errorf("wslb_http_requests_total{pool=p, code=%s} = %v", code, n)
		}
	}
}

// hogBackend serves raw HTTP/1.1: GET /small gets "ok"; any other request
// gets head, then, with stream, 64 KiB blocks until a write fails or 256 MiB
// are out (a client that never reads must stop it first). Every conn that
// served such a request is reported on cut when it ends.
func hogBackend(t *testing.T, head string, stream bool) (*tcptest.Server, <-chan struct{}) {
	t.Helper()
	cut := make(chan struct{}, 16)
	block := []byte(strings.Repeat("x", 64<<10))
	if strings.Contains(head, "chunked") {
		block = []byte(chunk(block))
	}
	s := tcptest.Serve(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		br := bufio.NewReader(c)
		hog := false
		defer func() {
			if hog {
				cut <- struct{}{}
			}
		}()
		for range 100 {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if req.URL.Path == "/small" {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				continue
			}
			hog = true
			if _, err := io.WriteString(c, head); err != nil {
				return
			}
			for i := 0; stream && i < 4096; i++ {
				if _, err := c.Write(block); err != nil {
					return
				}
			}
		}
	})
	return s, cut
}

// nonReader dials addr with a small receive buffer (so that little fills
// it) and sends raw; it never reads.
func nonReader(t *testing.T, addr, raw string) *net.TCPConn {
	t.Helper()
	c := tcptest.Dial(t, addr)
	c.SetReadBuffer(4096)
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	return c
}

// expectCut waits for cut, the backend's conn closed, then for wslb to have
// closed the client's. (Reading the client conn to its end would not tell
// sooner: a receive buffer as small as nonReader's takes the rest of the
// answer a persist-timer probe at a time.)
func (f *faultLB) expectCut(t *testing.T, cut <-chan struct{}) {
	t.Helper()
	select {
	case <-cut:
	case <-time.After(wait.Timeout):
		t.Fatal("the backend conn is still open: the request never ended")
	}
	f.clientClosed(t)
}

// clientClosed waits for wslb to have closed every client conn.
func (f *faultLB) clientClosed(t *testing.T) {
	t.Helper()
	wait.For(t, "wslb to close the client conn", func() bool { return f.fl.Active() == 0 })
}

const sendTimeout = "    timeouts: {send: 300ms}\n"

// TestSendTimeoutNonReadingClient: a client that never reads its answer
// holds the backend conn no longer than timeouts.send: both conns are closed
// (the rest is not drained), the backend conn is never reused, the gauges go
// back to 0, and it counts as a timeout.
func TestSendTimeoutNonReadingClient(t *testing.T) {
	bigHead := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
	for i := range 128 {
		bigHead += fmt.Sprintf("X-Pad-%d: %s\r\n", i, strings.Repeat("p", 32<<10))
	}
	for _, tc := range []struct {
		name, head string
		stream     bool
	}{
		{"large body", "HTTP/1.1 200 OK\r\nContent-Length: 268435456\r\n\r\n", true},
		{"streaming body", "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"large head", bigHead + "\r\nok", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be, cut := hogBackend(t, tc.head, tc.stream)
			f := startFaultLB(t, sendTimeout, be.Addr(), 0)
			nonReader(t, f.addr, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
			f.expectCut(t, cut)
			f.line(t, 1, 200, "timeout")
			mExpectErrs(t, f.lb, nil, map[string]float64{"timeout": 1})
			f.released(t)

			// The next request gets a new backend conn.
			resp, body := exchange(t, f.addr, "GET /small HTTP/1.1\r\nHost: a\r\n\r\n")
			if resp.StatusCode != 200 || body != "ok" {
				t.Fatalf("next request: %d %q", resp.StatusCode, body)
			}
			if n := be.Accepted(); n != 2 {
				t.Errorf("backend accepted %d conns, want 2 (the cut one is never reused)", n)
			}
		})
	}
}

// TestSendTimeoutOwnAnswers: wslb's own answers and static files are
// written under timeouts.send too.
func TestSendTimeoutOwnAnswers(t *testing.T) {
	t.Run("static file", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "big.bin"), randomBytes(16<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		f := startFaultLB(t, sendTimeout+"    routes:\n      - {path: /, static: "+dir+"}\n", "127.0.0.1:1", 0)
		nonReader(t, f.addr, "GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n")
		f.line(t, 1, 200, "timeout")
		f.clientClosed(t)
		mExpectErrs(t, f.lb, nil, map[string]float64{"timeout": 1})
	})
	t.Run("redirects", func(t *testing.T) {
		// Each answer repeats the long target twice (Location and body);
		// pipelined and never read, they fill the client's buffers.
		f := startFaultLB(t, sendTimeout+"    http: {redirect_https: true}\n", "127.0.0.1:1", 0)
		c := nonReader(t, f.addr, "")
		sent := make(chan struct{})
		go func() {
			defer close(sent)
			req := "GET /" + strings.Repeat("r", 16<<10) + " HTTP/1.1\r\nHost: a\r\n\r\n"
			for range 1000 { // 16 MiB of answers at most
				if _, err := io.WriteString(c, req); err != nil {
					return // wslb stopped reading, then closed
				}
			}
		}()
		wait.For(t, "an answer that timed out", func() bool {
			for _, l := range f.lines.all(t) {
				if l["reason"] == "timeout" {
					return true
				}
			}
			return false
		})
		f.clientClosed(t)
		<-sent
		mExpectErrs(t, f.lb, nil, map[string]float64{"timeout": 1})
	})
}

// TestSendTimeoutBackendStopsReading: a backend that reads none of an
// upload for timeouts.send gets its conn closed, and the client a 504 (as
// nginx's proxy_send_timeout), counted as a timeout.
func TestSendTimeoutBackendStopsReading(t *testing.T) {
	stop := make(chan struct{})
	be := tcptest.Serve(t, func(c net.Conn) {
		http.ReadRequest(bufio.NewReader(c)) // the head, and no more
		<-stop
	})
	t.Cleanup(func() { close(stop) }) // runs before Serve's cleanup waits
	f := startFaultLB(t, sendTimeout, be.Addr(), 0)

	c := tcptest.Dial(t, f.addr)
	const size = 256 << 20
	uploaded := make(chan struct{})
	go func() {
		defer close(uploaded)
		io.WriteString(c, fmt.Sprintf("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", size))
		block := make([]byte, 64<<10)
		for range size / len(block) {
			if _, err := c.Write(block); err != nil {
				return // wslb answered and closed
			}
		}
	}()
	c.SetReadDeadline(time.Now().Add(wait.Timeout))
	resp, body := readResp(t, bufio.NewReader(c), "POST")
	checkOwnAnswer(t, resp, body, http.StatusGatewayTimeout)
	if !strings.Contains(body, "did not read the request") {
		t.Errorf("body %q", body)
	}
	c.Close()
	<-uploaded
	f.line(t, 1, 504, "timeout")
	mExpectErrs(t, f.lb, nil, map[string]float64{"timeout": 1})
	f.released(t)
}
