package pool

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
)

// pair is one loopback TCP conn: the end the cache holds and the backend's end.
type pair struct {
	client net.Conn
	server net.Conn
}

// dialPairs opens n loopback conns.
func dialPairs(t *testing.T, n int) []pair {
	t.Helper()
	ps := make([]pair, n)
	for i := range ps {
		c, s := tcptest.Pair(t)
		ps[i] = pair{client: c, server: s}
	}
	return ps
}

// closedByCache reports whether the cache closed the client end: the server
// end then reads EOF.
func closedByCache(t *testing.T, p pair) bool {
	t.Helper()
	p.server.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := p.server.Read(make([]byte, 1))
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("server read: %v", err)
	}
	return errors.Is(err, io.EOF)
}

// openByCache reports whether the client end is still open, without waiting.
func openByCache(t *testing.T, p pair) bool {
	t.Helper()
	p.server.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := p.server.Read(make([]byte, 1))
	if errors.Is(err, io.EOF) {
		return false
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("server read: %v; want a timeout", err)
	}
	return true
}

// waitStale polls until the probe sees what the backend did to c (its FIN or
// its bytes crossing loopback), with a bound.
func waitStale(t *testing.T, c net.Conn) {
	t.Helper()
	wait.For(t, "the probe to see the backend's close or bytes", func() bool { return !alive(idleConn{conn: c}) })
}

func testBackends(idleMax int, n int) []*Backend {
	c := testConfig(config.BalanceLeastConn, make([]int, n)...)
	c.IdlePerWorker = idleMax
	return New(c).Backends()
}

func TestIdleCapEvictsOldest(t *testing.T) {
	b := testBackends(2, 1)[0]
	ps := dialPairs(t, 3)
	var c IdleCache // the zero value works
	defer c.Close()
	for _, p := range ps {
		c.Put(b, p.client, bufio.NewReader(p.client))
	}
	if c.Len(b) != 2 || b.Idle() != 2 {
		t.Fatalf("Len, Idle = %d, %d; want 2, 2", c.Len(b), b.Idle())
	}
	if !closedByCache(t, ps[0]) {
		t.Error("the oldest conn was not closed on eviction")
	}
	for i, want := range []int{2, 1} { // newest first
		got, br, ok := c.Get(b)
		if !ok || got != ps[want].client || br == nil {
			t.Fatalf("Get %d = %v, %v; want conn %d with its reader", i, got, ok, want)
		}
		if !openByCache(t, ps[want]) {
			t.Errorf("conn %d handed out closed", want)
		}
	}
	if _, _, ok := c.Get(b); ok {
		t.Error("Get on an empty cache returned a conn")
	}
	if b.Idle() != 0 {
		t.Errorf("Idle() = %d; want 0", b.Idle())
	}
}

func TestIdlePutRefuses(t *testing.T) {
	buffered := bufio.NewReader(strings.NewReader("leftover"))
	buffered.Peek(1)
	tests := []struct {
		name    string
		idleMax int
		br      *bufio.Reader
	}{
		{name: "idle_per_worker 0", idleMax: 0},
		{name: "unread bytes buffered", idleMax: 2, br: buffered},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := testBackends(tt.idleMax, 1)[0]
			p := dialPairs(t, 1)[0]
			c := NewIdleCache()
			defer c.Close()
			c.Put(b, p.client, tt.br)
			if !closedByCache(t, p) {
				t.Error("conn not closed")
			}
			if c.Len(b) != 0 || b.Idle() != 0 {
				t.Errorf("Len, Idle = %d, %d; want 0, 0", c.Len(b), b.Idle())
			}
		})
	}
}

// TestIdleGetSkipsStale checks that a conn the backend closed, or sent bytes
// on, is never handed out, and that Get goes on to the next one.
func TestIdleGetSkipsStale(t *testing.T) {
	tests := []struct {
		name  string
		spoil func(server net.Conn) error
	}{
		{name: "backend closed", spoil: func(s net.Conn) error { return s.Close() }},
		{name: "unsolicited bytes", spoil: func(s net.Conn) error {
			_, err := s.Write([]byte("HTTP/1.1 408 Request Timeout\r\n\r\n"))
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := testBackends(4, 1)[0]
			ps := dialPairs(t, 2)
			good, bad := ps[0], ps[1]
			c := NewIdleCache()
			defer c.Close()
			c.Put(b, good.client, bufio.NewReader(good.client))
			c.Put(b, bad.client, bufio.NewReader(bad.client)) // newest, so tried first
			if err := tt.spoil(bad.server); err != nil {
				t.Fatal(err)
			}
			waitStale(t, bad.client)

			got, _, ok := c.Get(b)
			if !ok || got != good.client {
				t.Fatalf("Get = %v, %v; want the good conn", got, ok)
			}
			if _, err := bad.client.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
				t.Errorf("stale conn read: %v; want net.ErrClosed (closed by Get)", err)
			}
			if _, _, ok := c.Get(b); ok {
				t.Error("second Get returned a conn")
			}
			if b.Idle() != 0 {
				t.Errorf("Idle() = %d; want 0", b.Idle())
			}
		})
	}
}

func TestIdleConnStillUsable(t *testing.T) {
	b := testBackends(4, 1)[0]
	p := dialPairs(t, 1)[0]
	c := NewIdleCache()
	defer c.Close()
	// A deadline in the past must neither fool the probe nor survive the cache.
	p.client.SetDeadline(time.Now().Add(-time.Second))
	c.Put(b, p.client, nil)
	got, br, ok := c.Get(b)
	if !ok || got != p.client || br != nil {
		t.Fatalf("Get = %v, %v, %v; want the conn and a nil reader", got, br, ok)
	}
	if _, err := got.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
		t.Fatalf("write on reused conn: %v", err)
	}
	p.server.SetReadDeadline(time.Now().Add(2 * time.Second))
	if line, err := bufio.NewReader(p.server).ReadString('\n'); err != nil || line != "GET / HTTP/1.1\r\n" {
		t.Errorf("backend read %q, %v", line, err)
	}
}

func TestIdleNotSyscallConnAssumedAlive(t *testing.T) {
	b := testBackends(4, 1)[0]
	client, server := net.Pipe()
	defer server.Close()
	c := NewIdleCache()
	defer c.Close()
	c.Put(b, client, nil)
	if got, _, ok := c.Get(b); !ok || got != client {
		t.Errorf("Get = %v, %v; want the pipe conn", got, ok)
	}
	client.Close()
}

func TestIdleClose(t *testing.T) {
	bs := testBackends(4, 2)
	ps := dialPairs(t, 4)
	c := NewIdleCache()
	for i, p := range ps[:3] {
		c.Put(bs[i%2], p.client, nil)
	}
	if bs[0].Idle() != 2 || bs[1].Idle() != 1 {
		t.Fatalf("Idle() = %d, %d; want 2, 1", bs[0].Idle(), bs[1].Idle())
	}
	c.Close()
	for i, p := range ps[:3] {
		if !closedByCache(t, p) {
			t.Errorf("conn %d not closed by Close", i)
		}
	}
	for i, b := range bs {
		if b.Idle() != 0 || c.Len(b) != 0 {
			t.Errorf("backend %d: Idle, Len = %d, %d after Close; want 0, 0", i, b.Idle(), c.Len(b))
		}
	}
	c.Put(bs[0], ps[3].client, nil)
	if !closedByCache(t, ps[3]) {
		t.Error("Put after Close did not close the conn")
	}
	if _, _, ok := c.Get(bs[0]); ok {
		t.Error("Get after Close returned a conn")
	}
	c.Close() // a second Close is harmless
}

// TestIdleIsPerCache checks that Idle sums every worker's cache while Len is
// one cache's.
func TestIdleIsPerCache(t *testing.T) {
	b := testBackends(1, 1)[0]
	ps := dialPairs(t, 2)
	w1, w2 := NewIdleCache(), NewIdleCache()
	defer w1.Close()
	defer w2.Close()
	w1.Put(b, ps[0].client, nil)
	w2.Put(b, ps[1].client, nil)
	if w1.Len(b) != 1 || w2.Len(b) != 1 || b.Idle() != 2 {
		t.Errorf("Len, Len, Idle = %d, %d, %d; want 1, 1, 2", w1.Len(b), w2.Len(b), b.Idle())
	}
}

// TestIdleRemovedBackendPurged checks that a reload removing a backend closes
// its idle conns, and that later Puts for it are refused.
func TestIdleRemovedBackendPurged(t *testing.T) {
	cfg := testConfig(config.BalanceLeastConn, 1, 1)
	old := New(cfg)
	gone, kept := old.Backends()[0], old.Backends()[1]
	ps := dialPairs(t, 3)
	c := NewIdleCache()
	defer c.Close()
	c.Put(gone, ps[0].client, nil)
	c.Put(kept, ps[1].client, nil)

	cfg.Backends = cfg.Backends[1:]
	Reconcile(old, cfg)

	if !closedByCache(t, ps[0]) {
		t.Fatal("idle conn to the removed backend not closed")
	}
	wait.Until(wait.Timeout, func() bool { return gone.Idle() == 0 }) // the purge runs in context.AfterFunc's goroutine
	if gone.Idle() != 0 || c.Len(gone) != 0 {
		t.Errorf("removed backend: Idle, Len = %d, %d; want 0, 0", gone.Idle(), c.Len(gone))
	}
	if kept.Idle() != 1 || !openByCache(t, ps[1]) {
		t.Errorf("kept backend lost its idle conn")
	}
	c.Put(gone, ps[2].client, nil)
	if !closedByCache(t, ps[2]) {
		t.Error("Put for a removed backend kept the conn")
	}
}
