package main

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/internal/clocktest"
	"github.com/wslb/wslb/internal/wait"
)

// storm starts n WebSocket clients on url at once. Each waits up to 30 s for
// its handshake and greeting and then sends nil on served (the conn stays
// open until the test ends), or the error that stopped it.
func storm(ctx context.Context, t *testing.T, url string, n int) <-chan error {
	t.Helper()
	served := make(chan error, n)
	var mu sync.Mutex
	var conns []*websocket.Conn
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.CloseNow()
		}
	})
	for i := range n {
		go func() {
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			c, _, err := websocket.Dial(ctx, fmt.Sprintf("%s?hello=1&n=%d", url, i), nil)
			if err != nil {
				served <- fmt.Errorf("client %d: %w", i, err)
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			if _, err := readGreeting(ctx, c); err != nil {
				served <- fmt.Errorf("client %d: greeting: %w", i, err)
				return
			}
			served <- nil
		}()
	}
	return served
}

// pacedConfig is an l7 listener paced at rate in front of the backends.
func pacedConfig(rate string, backends map[string]string) string {
	return fmt.Sprintf(`
admin: {listen: ""}
workers: 1  # the counts are exact with one accept loop (frontend/pace.go)
shutdown: {drain_timeout: 200ms, close_spread: 100ms}
listeners:
  - {name: web, listen: 127.0.0.1:0, mode: l7, pool: ws, max_accept_rate: %s}
pools:
  - name: ws
    health: {check: none}
    backends: [{address: %s}, {address: %s}, {address: %s}]
`, rate, backends["a"], backends["b"], backends["c"])
}

// TestAcceptPacingStorm: 60 WebSocket clients at once against a listener
// paced at 20/s, on the real clock. Every one is served (none refused or
// reset), and at every moment a client is served, the conns accepted so far
// are within burst + rate × the time since the listener was made: counted,
// not timed, so a slow machine only loosens the bound.
func TestAcceptPacingStorm(t *testing.T) {
	const clients, rate = 60, 20
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cfg, err := config.Parse([]byte(pacedConfig(fmt.Sprint(rate), reloadBackends(t, "a", "b", "c"))), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	made := time.Now() // before the listener and its full bucket
	in := startServeConfig(t, cfg, serveOptions{}).in
	accepted := in.metrics.ConnectionsAccepted.WithLabelValues("web")
	served := storm(ctx, t, "ws://"+in.addr(0)+"/", clients)
	for i := range clients {
		if err := <-served; err != nil {
			t.Fatal(err)
		}
		n := testutil.ToFloat64(accepted)
		bound := rate + rate*time.Since(made).Seconds() + 1 // + the token the accept loop holds
		if n > bound {
			t.Fatalf("%d clients served, %v conns accepted %v after start; want at most %.0f", i+1, n, time.Since(made), bound)
		}
	}
	if n := testutil.ToFloat64(accepted); n != clients {
		t.Fatalf("wslb_connections_accepted_total = %v, want %d (one per client)", n, clients)
	}
}

// TestAcceptPacingReload: reloads change the rate of a listener whose queue
// holds a storm, on a clock the test moves; a bad rate is rejected and the
// running one stays; no client is lost.
func TestAcceptPacingReload(t *testing.T) {
	const clients = 30
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	clk := clocktest.New(time.Unix(1_000_000, 0))
	f := &reloadFixture{t: t, path: filepath.Join(t.TempDir(), "config.yaml"), backends: reloadBackends(t, "a", "b", "c")}
	f.write(pacedConfig("5", f.backends))
	cfg, err := config.Load(f.path)
	if err != nil {
		t.Fatal(err)
	}
	f.r = startServeConfig(t, cfg, serveOptions{path: f.path, clock: clk})
	accepted := f.r.in.metrics.ConnectionsAccepted.WithLabelValues("web")
	served := storm(ctx, t, "ws://"+f.r.in.addr(0)+"/", clients)
	got := 0
	step := func(what string, want int) {
		t.Helper()
		for ; got < want; got++ {
			if err := <-served; err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		}
		if n := testutil.ToFloat64(accepted); n != float64(want) {
			t.Fatalf("%s: %v conns accepted, want %d", what, n, want)
		}
	}
	step("the burst at 5/s", 5)
	f.reload(pacedConfig("-5", f.backends), "rejected")
	clk.Advance(time.Second)
	step("a second at 5/s, after a rejected reload", 10)
	f.reload(pacedConfig("10", f.backends), "ok")
	clk.Advance(time.Second)
	step("a second at 10/s", 20)
	f.reload(pacedConfig("0", f.backends), "ok")
	step("unlimited", clients)
}

// TestDrainDuringPacedStorm: a drain that starts while a storm waits for
// tokens that never come (the clock stands still) ends at once; the accept
// loops do not wait on the bucket.
func TestDrainDuringPacedStorm(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cfg, err := config.Parse([]byte(pacedConfig("1", reloadBackends(t, "a", "b", "c"))), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The served client holds its WebSocket and never answers the drain's
	// Close 1001: a short closeWait keeps the graceful close from taking
	// the default 5 s.
	r := startServeConfig(t, cfg, serveOptions{clock: clocktest.New(time.Unix(1_000_000, 0)), closeWait: 100 * time.Millisecond})
	accepted := r.in.metrics.ConnectionsAccepted.WithLabelValues("web")
	served := storm(ctx, t, "ws://"+r.in.addr(0)+"/", 20)
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	wait.For(t, "the burst of one accepted", func() bool { return testutil.ToFloat64(accepted) == 1 })
	r.cancel()
	// drain_timeout 200ms + close_spread 100ms + closeWait 100ms, and room
	// for a loaded machine.
	if code := r.exitCode(t, 5*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}
