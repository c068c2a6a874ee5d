package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/loopback"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
)

// TestDrainSpreadsCloses opens 60 WebSocket tunnels through an l7 listener,
// starts the drain (as SIGTERM does) and records when each client sees its
// conn end. With drain_timeout 300ms and close_spread 1s, wslb closes the
// i-th of the n conns left at 300ms + i*1s/n, so:
//
//   - none may end before 300ms (250ms allowed: the timer starts a little
//     after the cancel, never before, so this slack only covers clock reads);
//   - all must have ended by 300ms+1s plus 700ms of slack for a loaded,
//     -race machine;
//   - split [300ms, 1300ms] into quarters: the schedule puts exactly 15 of
//     the 60 closes in each (n/4). Scheduling delays only move a close later,
//     by about a millisecond each here, so at most the last one or two of a
//     quarter slip into the next one. Requiring 9 to 21 closes (15% to 35%)
//     per quarter tolerates up to 6 slipped closes a quarter (or tens of
//     milliseconds of delay, under -race on a busy machine) while still
//     failing a drain that closes everything at once (60, 0, 0, 0) or only
//     at the end.
func TestDrainSpreadsCloses(t *testing.T) {
	const (
		n       = 60
		timeout = 300 * time.Millisecond
		spread  = time.Second
	)
	backend := echo.WS(t, echo.WSOptions{Name: "drain-backend"})
	listen := loopback.FreeAddr(t)
	r := startServe(t, fmt.Sprintf(`
workers: 2
shutdown: {drain_timeout: %v, close_spread: %v}
admin: {listen: ""}
listeners:
  - {name: web, listen: %s, mode: l7, pool: p}
pools:
  - {name: p, backends: [{address: %s}], health: {check: none}}
`, timeout, spread, listen, backend))

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	conns := make([]*websocket.Conn, n)
	for i := range conns {
		conns[i] = dialWS(ctx, t, "ws://"+listen+"/", nil)
		wsEcho(ctx, t, conns[i], fmt.Sprintf("conn %d", i))
	}

	// One reader per conn, blocked until its conn ends. Each conn's context
	// bounds the wait (its expiry would close the conn and count as a late close).
	ended := make([]time.Duration, n)
	var wg sync.WaitGroup
	var begin time.Time
	startReading := make(chan struct{})
	for i, c := range conns {
		wg.Go(func() {
			<-startReading
			_, _, err := c.Read(ctx)
			ended[i] = time.Since(begin)
			if err == nil {
				t.Errorf("conn %d: a message arrived during the drain", i)
			}
		})
	}
	begin = time.Now()
	close(startReading)
	r.cancel()
	wg.Wait()

	if code := r.exitCode(t, 5*time.Second); code != 0 {
		t.Errorf("serve exited %d after the drain, want 0", code)
	}
	t.Logf("serve returned %v after the cancel", time.Since(begin).Round(time.Millisecond))

	sorted := slices.Clone(ended)
	slices.Sort(sorted)
	q := func(p float64) time.Duration { return sorted[int(p*float64(n-1))].Round(time.Millisecond) }
	t.Logf("close times after the cancel (n=%d, drain_timeout %v, close_spread %v): min %v, p25 %v, median %v, p75 %v, max %v",
		n, timeout, spread, q(0), q(0.25), q(0.5), q(0.75), q(1))

	if sorted[0] < timeout-50*time.Millisecond {
		t.Errorf("a conn was closed %v after the cancel, before drain_timeout %v", sorted[0], timeout)
	}
	if last := sorted[n-1]; last > timeout+spread+700*time.Millisecond {
		t.Errorf("the last conn was closed %v after the cancel, want by %v + %v (+ slack)", last, timeout, spread)
	}
	var quarters [4]int
	for _, d := range ended {
		i := int((d - timeout) * 4 / spread)
		quarters[min(max(i, 0), 3)]++
	}
	t.Logf("closes per quarter of [%v, %v]: %v (the schedule puts %d in each)", timeout, timeout+spread, quarters, n/4)
	for i, c := range quarters {
		if c < n*15/100 || c > n*35/100 {
			t.Errorf("quarter %d of the close window holds %d of %d closes, want %d to %d: closes are not spread; per quarter %v",
				i+1, c, n, n*15/100, n*35/100, quarters)
		}
	}
}

// TestDrainSecondSignal: a second SIGTERM during the drain closes every
// conn at once and the process exits 0. serve only reads the second signal
// from the OS (instance.drain listens on the signal channel; cancelling
// serve's context starts the drain but cannot cut it short), and a signal
// sent to the test process would reach every serve running in it, so this
// runs the built binary as a process: plain `wslb -config`, an l4 listener,
// drain_timeout 30s so that only the second signal can end the drain quickly.
// An l7 WebSocket whose client never answers the Close 1001 shows that the
// second signal also cuts the graceful close's 5 s wait short.
func TestDrainSecondSignal(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	exe := demoBuild(ctx, t)
	listen, web := loopback.FreeAddr(t), loopback.FreeAddr(t)
	cfgPath := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, `
shutdown: {drain_timeout: 30s, close_spread: 5s}
admin: {listen: ""}
listeners:
  - {name: t, listen: %s, mode: l4, pool: p}
  - {name: web, listen: %s, mode: l7, pool: ws}
pools:
  - {name: p, backends: [{address: %s}], health: {check: none}}
  - {name: ws, backends: [{address: %s}], health: {check: none}}
`, listen, web, echo.TCP(t).Addr(), echo.WS(t, echo.WSOptions{})), 0o644); err != nil {
		t.Fatal(err)
	}
	p := demoStart(ctx, t, exe, "-config", cfgPath, "-access-log", "off")

	// Three conns, each echoing.
	var conns []net.Conn
	for i := range 3 {
		c, err := tcptest.Redial(t, listen, func() { p.running(t) })
		if err != nil {
			t.Fatalf("dial %s: %v; stderr:\n%s", listen, err, p.stderr.String())
		}
		conns = append(conns, c)
		drainEcho(t, c, fmt.Sprintf("c%d", i))
	}
	conns = append(conns, rawWebSocket(t, web))

	// First SIGTERM: the listener closes (new conns refused), established
	// conns keep working.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	refused := wait.Until(5*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", listen, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	if !refused {
		t.Fatal("new conns still accepted 5s after SIGTERM")
	}
	for i, c := range conns[:3] {
		drainEcho(t, c, fmt.Sprintf("c%d during the drain", i))
	}
	select {
	case <-p.done:
		t.Fatalf("wslb exited (%v) during drain_timeout with conns open; stderr:\n%s", p.err, p.stderr.String())
	case <-time.After(200 * time.Millisecond):
	}

	// Second SIGTERM: every conn is closed at once (not spread over 5s) and
	// the process exits 0.
	begin := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if i == 3 {
			// The WebSocket gets its Close 1001, then the end.
			_, err := io.ReadAll(c)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("the WebSocket still open 5s after the second SIGTERM")
			}
			continue
		}
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("conn %d: data instead of a close", i)
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("conn %d still open 5s after the second SIGTERM", i)
		}
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("the conns were closed %v after the second SIGTERM, want at once", d)
	}
	select {
	case <-p.done:
		if p.err != nil {
			t.Fatalf("wslb exited with %v after the second SIGTERM, want 0; stderr:\n%s", p.err, p.stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("wslb still running 5s after the second SIGTERM; stderr:\n%s", p.stderr.String())
	}
	t.Logf("exited 0 %v after the second SIGTERM", time.Since(begin).Round(time.Millisecond))
	if !strings.Contains(p.stderr.String(), "second signal") {
		t.Errorf("the log does not say the second signal cut the drain short:\n%s", p.stderr.String())
	}
}

// rawWebSocket opens a WebSocket through the l7 listener at addr by hand and
// returns its conn: a client that will never answer a Close.
func rawWebSocket(t *testing.T, addr string) net.Conn {
	t.Helper()
	c := tcptest.Dial(t, addr)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", addr)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("WebSocket handshake through %s: %v %v", addr, resp, err)
	}
	return c
}

func drainEcho(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read the echo of %q: %v", msg, err)
	}
	if string(got) != msg {
		t.Fatalf("echo %q, want %q", got, msg)
	}
}
