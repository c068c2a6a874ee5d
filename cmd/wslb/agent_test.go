package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/internal/agenttest"
	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/syncbuf"
	"github.com/wslb/wslb/internal/wait"
	"github.com/wslb/wslb/status"
)

// TestAgentCheck runs wslb in front of two WebSocket echoes, each with its
// agent on the same port of the backend's own IP: the agent's 50% sends b a
// third of 30 new tunnels, down takes it out and up brings it back, drain
// reaches the admin hook, /status.json and the metrics show it, and a reload
// keeps the 50% while the agent is away.
func TestAgentCheck(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	ips := map[string]string{"a": "127.0.0.2", "b": "127.0.0.3"}
	addrs := map[string]string{}
	for name, ip := range ips {
		addrs[name] = echo.WSOn(t, ip+":0", echo.WSOptions{Name: name})
	}
	agent := agenttest.Serve(t, "", ips["a"], ips["b"])
	agent.Set(ips["a"], "ready 100%")
	agent.Set(ips["b"], "ready 50%")
	text := func(weightA int) string {
		return fmt.Sprintf(`
admin: {listen: ""}
listeners:
  - {name: web, listen: 127.0.0.1:0, mode: l7, pool: ws}
pools:
  - name: ws
    health: {check: none, agent: {port: %d, interval: 50ms}}
    backends: [{address: %s, weight: %d}, {address: %s}]
`, agent.Port, addrs["a"], weightA, addrs["b"])
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(text(1)), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	r := startServeLogged(t, cfg, serveOptions{path: path}, &logs)
	in := r.in
	backend := func(name string) status.Backend {
		for _, b := range in.status().Pools[0].Backends {
			if b.Address == addrs[name] {
				return b
			}
		}
		t.Fatalf("no backend %s in /status.json", name)
		return status.Backend{}
	}
	wait.For(t, "b at 50%", func() bool { return backend("b").AgentPercent == 50 })
	if b := backend("b"); b.EffectiveWeight != 0.5 || b.Weight != 1 {
		t.Errorf("/status.json: b's weight %d, effective_weight %v; want 1 and 0.5", b.Weight, b.EffectiveWeight)
	}

	open := func(n int) map[string]int {
		got := map[string]int{}
		for i := range n {
			c := dialWS(ctx, t, fmt.Sprintf("ws://%s/?hello=1&n=%d", in.addr(0), i), nil)
			got[strings.TrimPrefix(greeting(ctx, t, c), "connected to ")]++
		}
		return got
	}
	if got := open(30); got["a"] != 20 || got["b"] != 10 {
		t.Errorf("30 tunnels with b at 50%%: %v; want a:20 b:10", got)
	}

	agent.Set(ips["b"], "down #deploying")
	wait.For(t, "b down", func() bool { return !backend("b").Up })
	if got := open(6); got["b"] != 0 {
		t.Errorf("6 tunnels with b's agent down: %v; want all on a", got)
	}
	agent.Set(ips["b"], "up 50%")
	wait.For(t, "b up", func() bool { return backend("b").Up })

	// The agent's drain is the backend's admin state, as the API sets it:
	// no new conns to a; its ready gives them back.
	agent.Set(ips["a"], "drain 100%")
	wait.For(t, "a drained by its agent", func() bool { return backend("a").AdminState == "drain" })
	if got := open(4); got["a"] != 0 {
		t.Errorf("4 tunnels with a's agent saying drain: %v; want all on b", got)
	}
	if !strings.Contains(logs.String(), "backend="+addrs["a"]+" state=drain") {
		t.Errorf("no log line says a's agent drained it:\n%s", logs.String())
	}
	agent.Set(ips["a"], "ready 100%")
	wait.For(t, "a ready again", func() bool { return backend("a").AdminState == "ready" })
	if n := testutil.ToFloat64(in.metrics.AgentChecks.WithLabelValues("ws", addrs["b"], "ok")); n < 3 {
		t.Errorf("wslb_agent_checks_total{result=ok} of b = %v; want several", n)
	}
	if w := testutil.ToFloat64(in.metrics.BackendWeight.WithLabelValues("ws", addrs["b"])); w != 0.5 {
		// Gauges derived from pool state are refreshed before a scrape.
		in.refreshGauges()
		if w = testutil.ToFloat64(in.metrics.BackendWeight.WithLabelValues("ws", addrs["b"])); w != 0.5 {
			t.Errorf("wslb_backend_weight of b = %v; want 0.5", w)
		}
	}

	// A reload while b's agent is away: the 50% stands, the new weight of a
	// applies.
	agent.Refuse(ips["b"])
	before := testutil.ToFloat64(in.metrics.ConfigReloads.WithLabelValues("ok"))
	if err := os.WriteFile(path, []byte(text(3)), 0o644); err != nil {
		t.Fatal(err)
	}
	in.reloadNow <- struct{}{}
	wait.For(t, "the reload", func() bool { return testutil.ToFloat64(in.metrics.ConfigReloads.WithLabelValues("ok")) == before+1 })
	if a, b := backend("a"), backend("b"); a.Weight != 3 || b.AgentPercent != 50 || b.EffectiveWeight != 0.5 {
		t.Errorf("after the reload: a's weight %d, b's agent_percent %d, effective_weight %v; want 3, 50, 0.5", a.Weight, b.AgentPercent, b.EffectiveWeight)
	}
}
