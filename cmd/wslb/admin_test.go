package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/loopback"
	"github.com/wslb/wslb/internal/tcptest"
)

// TestAdminListenerLimits: the admin listener wslb runs has the header and
// idle timeouts, serves at most 64 conns at once (the 65th waits until one
// closes), and, bound to loopback, answers 421 to a Host that does not name
// it (DNS rebinding) while localhost and its own address work.
func TestAdminListenerLimits(t *testing.T) {
	admin := loopback.FreeAddr(t)
	r := startServe(t, fmt.Sprintf(`
admin: {listen: %s}
listeners: [{name: l, listen: "127.0.0.1:0", mode: l4, pool: p}]
pools: [{name: p, backends: [{address: %s}], health: {check: none}}]
`, admin, echo.TCP(t).Addr()))
	if s := r.in.admin; s.ReadHeaderTimeout != 10*time.Second || s.IdleTimeout != 30*time.Second {
		t.Errorf("admin header timeout %v, idle timeout %v; want 10s and 30s", s.ReadHeaderTimeout, s.IdleTimeout)
	}

	get := func(c net.Conn, br *bufio.Reader, host string) (int, string) {
		t.Helper()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", host)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("GET /healthz (Host %s): %v", host, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(body)
	}
	dial := func() (net.Conn, *bufio.Reader) {
		c := tcptest.Dial(t, admin)
		return c, bufio.NewReader(c)
	}

	c, br := dial()
	for _, host := range []string{"localhost", admin, "app.localhost:9090", "[::1]:1"} {
		if code, body := get(c, br, host); code != 200 {
			t.Errorf("Host %s: %d %q, want 200", host, code, body)
		}
	}
	if code, body := get(c, br, "evil.example:"+strings.Split(admin, ":")[1]); code != http.StatusMisdirectedRequest {
		t.Errorf("Host evil.example: %d %q, want 421", code, body)
	}
	c.Close() // the 64 below are all the listener serves

	conns := []net.Conn{}
	for range 64 {
		c, br := dial()
		if code, _ := get(c, br, "localhost"); code != 200 {
			t.Fatalf("admin conn %d: status %d", len(conns), code)
		}
		conns = append(conns, c)
	}
	extra, ebr := dial()
	fmt.Fprintf(extra, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
	answered := make(chan error, 1)
	go func() {
		extra.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := http.ReadResponse(ebr, nil)
		answered <- err
	}()
	// A bounded look for an answer that must not come.
	select {
	case err := <-answered:
		t.Fatalf("a 65th admin conn was served (%v) while 64 were open", err)
	case <-time.After(300 * time.Millisecond):
	}
	conns[0].Close()
	if err := <-answered; err != nil {
		t.Fatalf("the waiting admin conn once one closed: %v", err)
	}
}
