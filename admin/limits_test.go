package admin

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wslb/wslb/fdbudget"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
	"github.com/wslb/wslb/status"
)

// serveLimited serves the admin routes as cmd/wslb does, on a Listener over
// a loopback socket counted in fds, and returns its address. tune adjusts
// the server before it serves (shorter timeouts).
func serveLimited(t *testing.T, fds *fdbudget.Budget, tune func(*http.Server)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(Handler(Options{
		Gatherer: prometheus.NewRegistry(),
		Ready:    func() (bool, string) { return true, "ready" },
		Status:   func() status.Snapshot { return status.Snapshot{} },
		Addr:     ln.Addr(),
	}))
	if tune != nil {
		tune(srv)
	}
	l := NewListener(ln, fds, MaxConns)
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// get sends GET path with host on c and returns the answer's status.
func get(t *testing.T, c net.Conn, br *bufio.Reader, host, path string) (int, string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("GET %s (Host %s): %v", path, host, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(body)
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c := tcptest.Dial(t, addr)
	return c, bufio.NewReader(c)
}

// closedWithin reports whether the server closes c within d (a read ends
// in EOF or a reset rather than the deadline).
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

func TestServerLimits(t *testing.T) {
	srv := NewServer(http.NotFoundHandler())
	if srv.ReadHeaderTimeout != 10*time.Second || srv.IdleTimeout != 30*time.Second || srv.WriteTimeout != 30*time.Second {
		t.Fatalf("header %v idle %v write %v, want 10s, 30s, 30s", srv.ReadHeaderTimeout, srv.IdleTimeout, srv.WriteTimeout)
	}
	if MaxConns != 64 {
		t.Fatalf("MaxConns %d, want 64", MaxConns)
	}
}

// TestConnCap: 64 kept-alive admin conns are served; the 65th waits in the
// queue, uncounted, until one of them closes, and is served then. Every
// conn and the socket are counted while open.
func TestConnCap(t *testing.T) {
	fds := fdbudget.WithLimit(1000, 0, nil)
	addr := serveLimited(t, fds, nil)
	var conns []net.Conn
	for i := range MaxConns {
		c, br := dial(t, addr)
		if code, _ := get(t, c, br, "localhost", "/healthz"); code != 200 {
			t.Fatalf("conn %d: status %d", i, code)
		}
		conns = append(conns, c)
	}
	if fds.Used() != 1+MaxConns {
		t.Fatalf("%d counted, want the socket and %d conns", fds.Used(), MaxConns)
	}
	extra, br := dial(t, addr)
	extra.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(extra, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
	answered := make(chan error, 1)
	go func() {
		resp, err := http.ReadResponse(br, nil)
		if err == nil {
			resp.Body.Close()
		}
		answered <- err
	}()
	// A bounded look for an answer that must not come: the 65th conn waits.
	select {
	case err := <-answered:
		t.Fatalf("conn %d answered (%v) while %d were open", MaxConns+1, err, MaxConns)
	case <-time.After(300 * time.Millisecond):
	}
	conns[0].Close()
	if err := <-answered; err != nil {
		t.Fatalf("the waiting conn once a slot was free: %v", err)
	}
	for _, c := range conns[1:] {
		c.Close()
	}
	extra.Close()
	wait.For(t, "the conns to be uncounted", func() bool { return fds.Used() == 1 })
}

// TestIdleAndHeaderTimeouts: a kept-alive conn with no next request, and a
// conn whose head never completes, are closed (shortened timeouts here;
// TestServerLimits checks the real ones).
func TestIdleAndHeaderTimeouts(t *testing.T) {
	addr := serveLimited(t, nil, func(s *http.Server) {
		s.IdleTimeout = 200 * time.Millisecond
		s.ReadHeaderTimeout = 200 * time.Millisecond
	})
	idle, br := dial(t, addr)
	if code, _ := get(t, idle, br, "localhost", "/healthz"); code != 200 {
		t.Fatalf("status %d", code)
	}
	slow, _ := dial(t, addr)
	fmt.Fprintf(slow, "GET /healthz HTTP/1.1\r\nHost: loc")
	if !closedWithin(idle, 5*time.Second) {
		t.Error("an idle kept-alive admin conn was not closed")
	}
	if !closedWithin(slow, 5*time.Second) {
		t.Error("an admin conn with an incomplete head was not closed")
	}
}

// TestHostCheck: bound to loopback, the admin listener answers requests
// that name it (localhost, *.localhost, a loopback address, its own address)
// and 421 to any other name, which is what a DNS-rebound page sends.
func TestHostCheck(t *testing.T) {
	addr := serveLimited(t, nil, nil)
	_, port, _ := net.SplitHostPort(addr)
	allowed := []string{"localhost", "localhost:" + port, "LOCALHOST.", "status.localhost:" + port,
		addr, "127.0.0.1", "127.1.2.3:" + port, "[::1]:" + port, "[::ffff:127.0.0.1]"}
	refused := []string{"evil.example", "evil.example:" + port, "localhost.evil.example", "127.0.0.1.nip.io:" + port,
		"10.0.0.1:" + port, "0.0.0.0:" + port, "[::]:" + port}
	c, br := dial(t, addr)
	for _, h := range allowed {
		if code, body := get(t, c, br, h, "/status.json"); code != 200 {
			t.Errorf("Host %s: %d %q, want 200", h, code, body)
		}
	}
	for _, h := range refused {
		c, br := dial(t, addr)
		code, body := get(t, c, br, h, "/metrics")
		if code != http.StatusMisdirectedRequest || !strings.Contains(body, "use localhost") {
			t.Errorf("Host %s: %d %q, want 421 saying what to use", h, code, body)
		}
	}
}

// TestHostCheckOffLoopback: a listener bound to another address has no
// Host check (rebinding a name to loopback cannot reach it).
func TestHostCheckOffLoopback(t *testing.T) {
	var seen atomic.Bool
	h := Handler(Options{
		Gatherer: prometheus.NewRegistry(),
		Ready:    func() (bool, string) { seen.Store(true); return true, "ready" },
		Status:   func() status.Snapshot { return status.Snapshot{} },
		Addr:     &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 9090},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	defer func() { srv.Close(); <-done }()
	c, br := dial(t, ln.Addr().String())
	if code, _ := get(t, c, br, "evil.example", "/readyz"); code != 200 || !seen.Load() {
		t.Fatalf("Host evil.example off loopback: %d, want 200", code)
	}
}
