package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/loopback"
	"github.com/wslb/wslb/internal/wait"
)

// reloadConn is one WebSocket through wslb and the backend that answered it.
type reloadConn struct {
	c       *websocket.Conn
	backend string // the demo backend's name, from its greeting
	via     string // listener name
	seq     int
	closed  bool
}

// reloadFixture is a running wslb on a config file that a test rewrites.
type reloadFixture struct {
	t        *testing.T
	path     string
	r        *running
	backends map[string]string // demo name -> address
}

func reloadBackends(t *testing.T, names ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, n := range names {
		out[n] = echo.WS(t, echo.WSOptions{Name: n})
	}
	return out
}

// webTCPPoolWS is the listeners of the reload and discovery tests, web (l7)
// and tcp (l4), and the head of their pool ws, checks off.
const webTCPPoolWS = `listeners:
  - {name: web, listen: 127.0.0.1:0, mode: l7, pool: ws}
  - {name: tcp, listen: 127.0.0.1:0, mode: l4, pool: ws}
pools:
  - name: ws
    health: {check: none}
`

// reloadConfig is the test's config.yaml with pool ws over the named
// backends, name=weight each.
func (f *reloadFixture) config(backends ...string) string {
	var sb strings.Builder
	sb.WriteString(`
admin: {listen: ""}
shutdown: {drain_timeout: 200ms, close_spread: 300ms}
` + webTCPPoolWS + `    backends:
`)
	for _, nb := range backends {
		name, weight, _ := strings.Cut(nb, "=")
		if weight == "" {
			weight = "1"
		}
		fmt.Fprintf(&sb, "      - {address: %s, weight: %s}\n", f.backends[name], weight)
	}
	return sb.String()
}

func (f *reloadFixture) write(text string) {
	f.t.Helper()
	tmp := f.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Rename(tmp, f.path); err != nil {
		f.t.Fatal(err)
	}
}

// reload writes text and reloads, as SIGHUP does, and waits for the result.
func (f *reloadFixture) reload(text, want string) {
	f.t.Helper()
	in := f.r.in
	before := testutil.ToFloat64(in.metrics.ConfigReloads.WithLabelValues(want))
	f.write(text)
	in.reloadNow <- struct{}{}
	wait.For(f.t, fmt.Sprintf("a reload counted as %q", want), func() bool {
		return testutil.ToFloat64(in.metrics.ConfigReloads.WithLabelValues(want)) == before+1
	})
}

func (f *reloadFixture) dial(ctx context.Context, listener string, i int) *reloadConn {
	f.t.Helper()
	addr := f.r.in.addr(0)
	if listener == "tcp" {
		addr = f.r.in.addr(1)
	}
	c := dialWS(ctx, f.t, fmt.Sprintf("ws://%s/?hello=1&n=%d", addr, i), nil)
	return &reloadConn{c: c, backend: greeting(ctx, f.t, c), via: listener}
}

// exchange sends the conn's next numbered message and checks the echo is
// that very message: a lost or reordered one shows as a mismatch.
func (rc *reloadConn) exchange(ctx context.Context) error {
	rc.seq++
	msg := fmt.Sprintf("%s/%s #%d", rc.via, rc.backend, rc.seq)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rc.c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		return err
	}
	_, got, err := rc.c.Read(ctx)
	if err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("sent %q, got back %q", msg, got)
	}
	return nil
}

// TestReloadKeepsTunnels is the reload test: 100 WebSocket conns
// (through l7 and l4) exchange messages across ten reloads that add and
// remove backends and change weights, plus one invalid file. After each:
// every conn whose backend stayed still works, in order; the conns of a
// removed backend are closed (after drain_timeout, spread) and counted as
// removed; and the backends' active counts, which least_conn balances on,
// equal the tunnels each one really holds.
func TestReloadKeepsTunnels(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	f := &reloadFixture{t: t, path: filepath.Join(t.TempDir(), "config.yaml"),
		backends: reloadBackends(t, "a", "b", "c", "d")}
	f.write(f.config("a", "b", "c"))
	f.r = startServeFile(t, f.path)
	in := f.r.in

	var conns []*reloadConn
	closedTotal := 0
	for i := range 100 {
		via := "web"
		if i%5 == 0 {
			via = "tcp"
		}
		conns = append(conns, f.dial(ctx, via, i))
	}

	steps := []struct {
		what     string
		backends []string // "" entry: an invalid file
	}{
		{"add d", []string{"a", "b", "c", "d"}},
		{"weights", []string{"a=5", "b", "c=2", "d"}},
		{"remove c", []string{"a=5", "b", "d"}},
		{"invalid file", nil},
		{"add c back", []string{"a", "b", "c", "d"}},
		{"remove a", []string{"b", "c", "d"}},
		{"weights again", []string{"b=3", "c", "d=7"}},
		{"add a, remove d", []string{"a", "b", "c"}},
		{"unchanged", []string{"a", "b", "c"}},
		{"remove b", []string{"a", "c"}},
	}
	for _, step := range steps {
		before := in.gen.Load()
		if step.backends == nil {
			f.reload("listeners: [{name: web, listen: 127.0.0.1:0, mode: l7, pool: nowhere}]\nbogus: 1\n", "rejected")
			if in.gen.Load() != before {
				t.Fatalf("%s: the running configuration was replaced", step.what)
			}
		} else {
			f.reload(f.config(step.backends...), "ok")
		}
		present := map[string]bool{}
		for _, nb := range step.backends {
			name, _, _ := strings.Cut(nb, "=")
			present[name] = true
		}
		if step.backends == nil {
			for _, b := range before.pools["ws"].Backends() {
				for name, addr := range f.backends {
					if addr == b.String() {
						present[name] = true
					}
				}
			}
		}
		// Conns of removed backends end after drain_timeout, spread over
		// close_spread; every other conn must keep working, in order.
		var wg sync.WaitGroup
		var mu sync.Mutex
		var failures []string
		for _, rc := range conns {
			if rc.closed {
				continue
			}
			wg.Go(func() {
				err := rc.exchange(ctx)
				if present[rc.backend] {
					if err != nil {
						mu.Lock()
						failures = append(failures, fmt.Sprintf("%s conn to kept backend %s: %v", rc.via, rc.backend, err))
						mu.Unlock()
					}
					return
				}
				// The conn may still echo during the grace; then it must end.
				if err == nil {
					rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					defer cancel()
					_, _, err = rc.c.Read(rctx)
				}
				if err == nil || ctx.Err() != nil {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%s conn to removed backend %s still open", rc.via, rc.backend))
					mu.Unlock()
				}
				rc.closed = true
			})
		}
		wg.Wait()
		if len(failures) > 0 {
			t.Fatalf("%s: %d failures, first: %s", step.what, len(failures), failures[0])
		}
		// Clients of closed conns reconnect: 100 stay open, and new conns
		// only reach backends of the new configuration.
		live := conns[:0]
		for _, rc := range conns {
			if !rc.closed {
				live = append(live, rc)
			} else {
				closedTotal++
			}
		}
		conns = live
		for i := len(conns); i < 100; i++ {
			rc := f.dial(ctx, []string{"web", "tcp"}[i%2], i)
			if !present[rc.backend] {
				t.Fatalf("%s: a new conn reached removed backend %s", step.what, rc.backend)
			}
			conns = append(conns, rc)
		}
		// least_conn's counts equal the tunnels each backend holds.
		want := map[string]int64{}
		open := 0
		for _, rc := range conns {
			if !rc.closed {
				want[f.backends[rc.backend]]++
				open++
			}
		}
		wait.For(t, step.what+": active counts match the open tunnels", func() bool {
			for _, b := range in.gen.Load().pools["ws"].Backends() {
				if b.Active() != want[b.String()] {
					return false
				}
			}
			return in.status().Totals.Active == int64(open)
		})
		t.Logf("%s: %d conns open", step.what, open)
	}
	removed := testutil.ToFloat64(in.metrics.TunnelsClosed.WithLabelValues("web", "ws", "removed")) +
		testutil.ToFloat64(in.metrics.TunnelsClosed.WithLabelValues("tcp", "ws", "removed"))
	if closedTotal == 0 || removed != float64(closedTotal) {
		t.Fatalf("%d conns of removed backends closed, tunnels_closed{reason=removed} = %v", closedTotal, removed)
	}
	t.Logf("%d conns of removed backends were closed, all counted as removed", closedTotal)
}

// TestReloadListeners: a reload binds an added listener, rebinds one whose
// address changed (its conns continue on the old socket, which refuses new
// ones), and retires a removed one (its conns run for drain_timeout, then
// end as drained); an unchanged listener keeps its socket.
func TestReloadListeners(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	f := &reloadFixture{t: t, path: filepath.Join(t.TempDir(), "config.yaml"), backends: reloadBackends(t, "a")}
	pWeb, pTCP, pTCP2, pExtra := loopback.FreeAddr(t), loopback.FreeAddr(t), loopback.FreeAddr(t), loopback.FreeAddr(t)
	v1 := fmt.Sprintf(`
admin: {listen: ""}
shutdown: {drain_timeout: 300ms, close_spread: 0s}
listeners:
  - {name: web, listen: %s, mode: l7, pool: ws}
  - {name: tcp, listen: %s, mode: l4, pool: ws}
  - {name: gone, listen: 127.0.0.1:0, mode: l4, pool: ws}
pools:
  - {name: ws, health: {check: none}, backends: [{address: %s}]}
`, pWeb, pTCP, f.backends["a"])
	f.write(v1)
	f.r = startServeFile(t, f.path)
	in := f.r.in
	web := f.dial(ctx, "web", 1)
	tcp := f.dial(ctx, "tcp", 2)
	goneAddr := in.addr(2)
	gone := &reloadConn{c: dialWS(ctx, t, "ws://"+goneAddr+"/", nil), backend: "a", via: "gone"}
	webSocket := in.gen.Load().listeners[0].fl

	f.reload(fmt.Sprintf(`
admin: {listen: ""}
shutdown: {drain_timeout: 300ms, close_spread: 0s}
listeners:
  - {name: web, listen: %s, mode: l7, pool: ws, max_connections: 1000}
  - {name: tcp, listen: %s, mode: l4, pool: ws}
  - {name: extra, listen: %s, mode: l4, pool: ws}
pools:
  - {name: ws, health: {check: none}, backends: [{address: %s}]}
`, pWeb, pTCP2, pExtra, f.backends["a"]), "ok")

	if in.gen.Load().listeners[0].fl != webSocket {
		t.Error("an unchanged address was rebound")
	}
	for _, rc := range []*reloadConn{web, tcp, gone} {
		if err := rc.exchange(ctx); err != nil {
			t.Fatalf("%s conn broken by the reload: %v", rc.via, err)
		}
	}
	f.dial(ctx, "tcp", 3) // addr(1) is now the new address
	if in.addr(1) != pTCP2 {
		t.Fatalf("tcp listens on %s, want %s", in.addr(1), pTCP2)
	}
	if _, err := net.DialTimeout("tcp", pTCP, time.Second); err == nil {
		t.Error("the old tcp address still accepts")
	}
	if _, err := net.DialTimeout("tcp", goneAddr, time.Second); err == nil {
		t.Error("a removed listener still accepts")
	}
	dialWS(ctx, t, "ws://"+pExtra+"/", nil).CloseNow() // the added listener accepts

	// The removed listener's conn ends once drain_timeout has passed; the
	// rebound one's does not.
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	defer rcancel()
	if _, _, err := gone.c.Read(rctx); err == nil || rctx.Err() != nil {
		t.Fatalf("the removed listener's conn was not ended: %v", err)
	}
	// A gap past drain_timeout, not a wait for an event: had the rebound
	// listener's old socket been drained as the removed one's was (above),
	// its conn would be cut by now.
	time.Sleep(400 * time.Millisecond)
	if err := tcp.exchange(ctx); err != nil {
		t.Fatalf("a conn of the rebound listener was cut: %v", err)
	}
	wait.For(t, "the removed listener's tunnel counted as drained", func() bool {
		return testutil.ToFloat64(in.metrics.TunnelsClosed.WithLabelValues("gone", "ws", "drain")) == 1
	})
}

// TestReloadTriggers: a real SIGHUP reloads, and with -watch so does a
// change of the file (written by rename, as editors and ConfigMaps do).
func TestReloadTriggers(t *testing.T) {
	f := &reloadFixture{t: t, path: filepath.Join(t.TempDir(), "config.yaml"), backends: reloadBackends(t, "a", "b", "c")}
	f.write(f.config("a"))
	cfg, err := config.Load(f.path)
	if err != nil {
		t.Fatal(err)
	}
	f.r = startServeConfig(t, cfg, serveOptions{path: f.path, watch: true})
	in := f.r.in
	backends := func() int { return len(in.gen.Load().pools["ws"].Backends()) }

	f.write(f.config("a", "b"))
	wait.For(t, "a reload on the file change", func() bool { return backends() == 2 })
	wait.For(t, "the reload counted", func() bool {
		return testutil.ToFloat64(in.metrics.ConfigReloads.WithLabelValues("ok")) >= 1
	})

	// Same content again, then only SIGHUP: the watch sees a new file (a
	// rename) and reloads too; both are fine, and neither may cut anything.
	before := testutil.ToFloat64(in.metrics.ConfigReloads.WithLabelValues("ok"))
	if err := os.WriteFile(f.path, []byte(f.config("a", "b", "c")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "a reload on SIGHUP", func() bool { return backends() == 3 })
	// The new generation is in place a moment before the reload is
	// counted: wait for the count, do not read it once.
	wait.For(t, fmt.Sprintf("reloads ok above %v", before), func() bool {
		return testutil.ToFloat64(in.metrics.ConfigReloads.WithLabelValues("ok")) >= before+1
	})
}
