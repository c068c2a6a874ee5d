package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
)

// TestMaxConnectionAge: a WebSocket that reaches max_connection_age (1 s
// ±10%) gets a Close 1001 within the jitter window, an l4 conn is closed
// plainly, and both count as reason max_age.
func TestMaxConnectionAge(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	ws := echo.WS(t, echo.WSOptions{})
	tcp := echo.TCP(t)
	r := startServe(t, fmt.Sprintf(`
admin: {listen: ""}
listeners:
  - {name: web, listen: 127.0.0.1:0, mode: l7, pool: ws}
  - {name: tcp, listen: 127.0.0.1:0, mode: l4, pool: tcp}
pools:
  - name: ws
    health: {check: none}
    max_connection_age: 1s
    backends: [{address: %s}]
  - name: tcp
    health: {check: none}
    max_connection_age: 1s
    backends: [{address: %s}]
`, ws, tcp.Addr()))
	const lo, hi = 900 * time.Millisecond, 1100 * time.Millisecond
	// Above hi, the time a loaded machine may take to deliver the close.
	const slack = time.Second

	var wg sync.WaitGroup
	wg.Go(func() {
		start := time.Now() // before the tunnel opens: its age is at most this
		c := dialWS(ctx, t, "ws://"+r.in.addr(0)+"/", nil)
		wsEcho(ctx, t, c, "hello")
		_, _, err := c.Read(ctx)
		lived := time.Since(start)
		if code := websocket.CloseStatus(err); code != websocket.StatusGoingAway {
			t.Errorf("WebSocket ended with %v (status %d), want Close 1001", err, code)
		}
		if lived < lo || lived > hi+slack {
			t.Errorf("WebSocket closed after %v, want %v..%v", lived, lo, hi)
		}
	})
	wg.Go(func() {
		start := time.Now()
		c := tcptest.Dial(t, r.in.addr(1))
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Error(err)
			return
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(c)
		lived := time.Since(start)
		if err != nil || string(got) != "ping" {
			t.Errorf("l4 conn read %q, %v; want the echo, then a plain close", got, err)
		}
		if lived < lo || lived > hi+slack {
			t.Errorf("l4 conn closed after %v, want %v..%v", lived, lo, hi)
		}
	})
	wg.Wait()
	closed := r.in.metrics.TunnelsClosed
	wait.For(t, "both max_age closes counted", func() bool {
		return testutil.ToFloat64(closed.WithLabelValues("web", "ws", "max_age")) == 1 &&
			testutil.ToFloat64(closed.WithLabelValues("tcp", "tcp", "max_age")) == 1
	})
}

// rebalanceClient is one WebSocket client of the rebalance test: when its
// tunnel is closed it checks for a Close 1001, counts it and reconnects at
// once, as a real client would.
type rebalanceClient struct {
	mu      sync.Mutex
	backend string
	moves   int
}

func (rc *rebalanceClient) run(ctx context.Context, t *testing.T, url string, ready chan<- struct{}) {
	for {
		c, _, err := websocket.Dial(ctx, url, nil)
		if err != nil {
			if ctx.Err() == nil {
				t.Errorf("dial: %v", err)
			}
			return
		}
		name, err := readGreeting(ctx, c)
		if err != nil {
			c.CloseNow()
			if ctx.Err() == nil {
				t.Errorf("greeting: %v", err)
			}
			return
		}
		rc.mu.Lock()
		rc.backend = name
		rc.mu.Unlock()
		if ready != nil {
			ready <- struct{}{}
			ready = nil
		}
		_, _, err = c.Read(ctx)
		c.CloseNow()
		if ctx.Err() != nil {
			return
		}
		if code := websocket.CloseStatus(err); code != websocket.StatusGoingAway {
			t.Errorf("tunnel to %s ended with %v (status %d), want Close 1001", name, err, code)
			return
		}
		rc.mu.Lock()
		rc.moves++
		rc.mu.Unlock()
	}
}

func (rc *rebalanceClient) state() (string, int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.backend, rc.moves
}

// TestRebalanceAfterReload: 10 WebSockets on backend a; a reload adds b with
// rebalancing on, and exactly 5 are moved (a held 10 > 1.2 × its share of
// 5), each client seeing a Close 1001, and no more once balanced.
func TestRebalanceAfterReload(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	f := &reloadFixture{t: t, path: filepath.Join(t.TempDir(), "config.yaml"), backends: reloadBackends(t, "a", "b")}
	text := func(backends ...string) string {
		return f.config(backends...) + "    rebalance: {enabled: true, tolerance: 0.2, rate: 100}\n"
	}
	f.write(text("a"))
	cfg, err := config.Load(f.path)
	if err != nil {
		t.Fatal(err)
	}
	// Tunnels a few ms old may be moved, so the test need not wait 10 s.
	f.r = startServeConfig(t, cfg, serveOptions{path: f.path, rebalanceMinAge: time.Millisecond})
	in := f.r.in

	const n = 10
	clients := make([]*rebalanceClient, n)
	ready := make(chan struct{}, n)
	runCtx, stopClients := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range clients {
		clients[i] = &rebalanceClient{}
		url := fmt.Sprintf("ws://%s/?hello=1&n=%d", in.addr(0), i)
		wg.Go(func() { clients[i].run(runCtx, t, url, ready) })
	}
	defer func() {
		stopClients()
		wg.Wait()
	}()
	for range n {
		select {
		case <-ready:
		case <-ctx.Done():
			t.Fatal("clients did not connect")
		}
	}
	f.reload(text("a", "b"), "ok")

	// Balanced: 5 on each, every client back on a tunnel, 5 moves counted.
	count := func() (onA, onB, moves int) {
		for _, c := range clients {
			name, m := c.state()
			switch name {
			case "a":
				onA++
			case "b":
				onB++
			}
			moves += m
		}
		return
	}
	wait.For(t, "5 tunnels moved from a to b", func() bool {
		onA, onB, moves := count()
		return onA == 5 && onB == 5 && moves == 5
	})
	// Nothing more to move, deterministically: a step now plans nothing.
	if moved := in.gen.Load().rebalancers["ws"].Step(); moved != 0 {
		t.Fatalf("a step after balance moved %d more", moved)
	}
	if _, _, moves := count(); moves != 5 {
		t.Fatalf("%d moves, want 5", moves)
	}
	closed := in.metrics.TunnelsClosed.WithLabelValues("web", "ws", "rebalance")
	wait.For(t, "5 rebalance closes counted", func() bool { return testutil.ToFloat64(closed) == 5 })
	if n, err := in.rebalanceNow("ws"); n != 0 || err != nil {
		t.Fatalf("rebalanceNow on a balanced pool = %d, %v", n, err)
	}
	if _, err := in.rebalanceNow("nowhere"); err == nil {
		t.Fatal("rebalanceNow of an unknown pool: no error")
	}

}
