package l4

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/frontend"
	"github.com/wslb/wslb/internal/servetest"
	"github.com/wslb/wslb/metrics"
	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/tunnel"
)

// lb is a running l4 listener in front of some backends.
type lb struct {
	addr    string
	proxy   *Proxy
	pool    *pool.Pool
	fl      *frontend.Listener
	metrics *metrics.Metrics
	reg     *prometheus.Registry
}

// startLB parses a real config (listener block extra is indented under the
// listener) and serves it until the test ends.
func startLB(t *testing.T, extra string, backends ...string) *lb {
	t.Helper()
	return startLBWith(t, nil, extra, backends...)
}

// startLBWith is startLB with setup run on the Proxy before it takes conns.
func startLBWith(t *testing.T, setup func(*Proxy), extra string, backends ...string) *lb {
	t.Helper()
	var sb strings.Builder
	fmt.Fprintf(&sb, "workers: 2\nlisteners:\n  - name: l4test\n    listen: 127.0.0.1:0\n    mode: l4\n    pool: p\n")
	for _, line := range strings.Split(strings.TrimSpace(extra), "\n") {
		if line != "" {
			fmt.Fprintf(&sb, "    %s\n", line)
		}
	}
	sb.WriteString("pools:\n  - name: p\n    backends:\n")
	for _, a := range backends {
		fmt.Fprintf(&sb, "      - address: %s\n", a)
	}
	cfg, err := config.Parse([]byte(sb.String()), "test.yaml")
	if err != nil {
		t.Fatalf("config:\n%s\n%v", sb.String(), err)
	}
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	p := pool.New(cfg.Pools[0])
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	px := New(cfg.Listeners[0], p, m, log)
	px.Engine = newEngine(t)
	if setup != nil {
		setup(px)
	}
	fl := &frontend.Listener{
		Name: "l4test", Addrs: cfg.Listeners[0].Listen, Workers: cfg.Workers,
		MaxConns:   cfg.Listeners[0].MaxConnections,
		NewHandler: func() frontend.Handler { return px },
		OnLimit:    px.OnLimit, Log: log,
	}
	servetest.Serve(t, fl)
	return &lb{addr: fl.BoundAddr().String(), proxy: px, pool: p, fl: fl, metrics: m, reg: reg}
}

// roundTrip writes msg and reads the same number of bytes back.
func roundTrip(t *testing.T, c net.Conn, msg string) string {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(buf)
}

// newEngine returns a tunnel engine that outlives the test's listener (the
// listener's cleanup, registered later, runs first).
func newEngine(t testing.TB) *tunnel.Engine {
	e, err := tunnel.NewEngine(2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}
