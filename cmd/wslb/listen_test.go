package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/loopback"
	"github.com/wslb/wslb/internal/syncbuf"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
)

// TestListenList: a listener whose listen is a list binds every address and
// serves on each, and shows as one listener: one name in /status.json with
// every bound address, one listener label in the metrics.
func TestListenList(t *testing.T) {
	addrs := []string{"127.0.0.1:0", "127.0.0.2:0"}
	if loopback.IPv6(t) {
		addrs = append(addrs, "[::1]:0")
	}
	r := startServe(t, fmt.Sprintf(`
admin: {listen: ""}
workers: 2
listeners:
  - {name: web, listen: ["%s"], mode: l7, pool: ws}
pools:
  - {name: ws, health: {check: none}, backends: [{address: %s}]}
`, strings.Join(addrs, `", "`), echo.WS(t, echo.WSOptions{Name: "a"})))
	in := r.in
	bound := in.gen.Load().listeners[0].fl.BoundAddrs()
	if len(bound) != len(addrs) {
		t.Fatalf("bound %v for %v", bound, addrs)
	}
	for _, a := range bound {
		c := dialWS(t.Context(), t, "ws://"+a.String()+"/", nil)
		wsEcho(t.Context(), t, c, "via "+a.String())
	}
	st := in.status()
	if len(st.Listeners) != 1 || len(st.Listeners[0].Addrs) != len(addrs) || st.Listeners[0].Addr != bound[0].String() {
		t.Fatalf("status.json listeners %+v, want one with %d addresses", st.Listeners, len(addrs))
	}
	for i, a := range bound {
		if st.Listeners[0].Addrs[i] != a.String() {
			t.Errorf("status addrs %v, want %v", st.Listeners[0].Addrs, bound)
		}
	}
	b := in.gen.Load().pools["ws"].Backends()[0].String()
	wait.For(t, "every address's tunnel counted under the one listener", func() bool {
		return testutil.ToFloat64(in.metrics.ConnectionsTotal.WithLabelValues("web", "ws", b)) == float64(len(addrs))
	})
}

// TestStartRefusesAddressInUse: an address another process listens on,
// plainly or with SO_REUSEPORT as a second wslb would, stops wslb at start
// with exit 1, a log line naming the listener and the address, and no
// socket left bound.
func TestStartRefusesAddressInUse(t *testing.T) {
	be := echo.TCP(t).Addr()
	for _, tc := range []struct {
		name      string
		reusePort bool
	}{{"plain", false}, {"SO_REUSEPORT", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			held := loopback.Hold(t, "tcp4", "127.0.0.1:0", tc.reusePort).Addr().String()
			free := loopback.FreeAddr(t)
			path := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(path, []byte(fmt.Sprintf(`
admin: {listen: ""}
listeners:
  - {name: first, listen: 127.0.0.1:0, mode: l4, pool: p}
  - {name: public, listen: ["%s", "%s"], mode: l7, pool: p}
pools:
  - {name: p, health: {check: none}, backends: [{address: %s}]}
`, free, held, be)), 0o644); err != nil {
				t.Fatal(err)
			}
			var stderr syncbuf.Buffer
			if code := run(ctx, []string{"-config", path, "-access-log", "off"}, io.Discard, &stderr); code != 1 {
				t.Fatalf("exit %d, want 1; log:\n%s", code, stderr.String())
			}
			log := stderr.String()
			if !strings.Contains(log, "cannot start") || !strings.Contains(log, "listener public: bind "+held) ||
				!strings.Contains(log, "address already in use") {
				t.Fatalf("the log does not name the listener, the address and the cause:\n%s", log)
			}
			// Nothing of wslb's is left on the address it bound first.
			loopback.Hold(t, "tcp4", free, false)
		})
	}
}

// TestReloadRefusesAddressInUse: a reload that adds an address another
// process listens on is rejected, saying which listener and address, and
// the running configuration keeps serving as it was.
func TestReloadRefusesAddressInUse(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	f := &reloadFixture{t: t, path: filepath.Join(t.TempDir(), "config.yaml"), backends: reloadBackends(t, "a")}
	pWeb := loopback.FreeAddr(t)
	cfg := func(listen string) string {
		return fmt.Sprintf(`
admin: {listen: ""}
listeners:
  - {name: web, listen: %s, mode: l7, pool: ws}
  - {name: tcp, listen: 127.0.0.1:0, mode: l4, pool: ws}
pools:
  - {name: ws, health: {check: none}, backends: [{address: %s}]}
`, listen, f.backends["a"])
	}
	f.write(cfg(pWeb))
	c, err := config.Load(f.path)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	f.r = startServeLogged(t, c, serveOptions{path: f.path}, &logs)
	in := f.r.in
	web := f.dial(ctx, "web", 1)
	for _, reusePort := range []bool{false, true} {
		held := loopback.Hold(t, "tcp4", "127.0.0.1:0", reusePort).Addr().String()
		before := in.gen.Load()
		f.reload(cfg(fmt.Sprintf(`["%s", "%s"]`, pWeb, held)), "rejected")
		if in.gen.Load() != before {
			t.Fatalf("SO_REUSEPORT %v: the running configuration was replaced", reusePort)
		}
		// The rejection is counted before its problems are logged.
		want := "listener web: bind " + held
		if !wait.Until(wait.Timeout, func() bool {
			return strings.Contains(logs.String(), want) && strings.Contains(logs.String(), "address already in use")
		}) {
			t.Fatalf("SO_REUSEPORT %v: the log does not say %q: address already in use:\n%s", reusePort, want, logs.String())
		}
		if err := web.exchange(ctx); err != nil {
			t.Fatalf("SO_REUSEPORT %v: a conn broken by a rejected reload: %v", reusePort, err)
		}
		f.dial(ctx, "web", 2).c.CloseNow()
	}
}

// TestReloadRebindsOwnAddress: a reload that rebinds an address wslb holds
// (another worker count, another mode, the address in a longer list) is
// applied, and a client dialing all along is never refused.
func TestReloadRebindsOwnAddress(t *testing.T) {
	f := &reloadFixture{t: t, path: filepath.Join(t.TempDir(), "config.yaml"), backends: reloadBackends(t, "a")}
	pWeb, pMore := loopback.FreeAddr(t), loopback.FreeAddr(t)
	cfg := func(workers int, listen, mode string) string {
		return fmt.Sprintf(`
admin: {listen: ""}
workers: %d
listeners:
  - {name: web, listen: %s, mode: %s, pool: ws}
  - {name: tcp, listen: 127.0.0.1:0, mode: l4, pool: ws}
pools:
  - {name: ws, health: {check: none}, backends: [{address: %s}]}
`, workers, listen, mode, f.backends["a"])
	}
	f.write(cfg(1, pWeb, "l7"))
	c, err := config.Load(f.path)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	f.r = startServeLogged(t, c, serveOptions{path: f.path}, &logs)
	defer func() {
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	}()
	in := f.r.in

	var (
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		dials    int
		resets   int
		refusals []error
	)
	wg.Go(func() {
		end := time.Now().Add(30 * time.Second)
		for i := 0; i < 1_000_000 && time.Now().Before(end); i++ {
			select {
			case <-stop:
				return
			default:
			}
			c, err := net.DialTimeout("tcp", pWeb, time.Second)
			dials++
			switch {
			case errors.Is(err, syscall.ECONNRESET):
				// A SYN the kernel queued on an old socket as it closed:
				// reset unless net.ipv4.tcp_migrate_req is on (README).
				resets++
			case err != nil:
				refusals = append(refusals, err)
			default:
				c.Close()
			}
		}
	})
	for _, step := range []struct {
		what string
		text string
	}{
		{"3 workers", cfg(3, pWeb, "l7")},
		{"mode l4", cfg(3, pWeb, "l4")},
		{"a list", cfg(3, fmt.Sprintf(`["%s", "%s"]`, pWeb, pMore), "l4")},
		{"back to one address and l7", cfg(2, pWeb, "l7")},
	} {
		before := in.gen.Load().listeners[0].fl
		f.reload(step.text, "ok")
		if in.gen.Load().listeners[0].fl == before {
			t.Fatalf("%s: the listener was not rebound", step.what)
		}
	}
	close(stop)
	wg.Wait()
	if dials == 0 || len(refusals) > 0 {
		t.Fatalf("%d of %d dials during the reloads failed, first: %v", len(refusals), dials, refusals)
	}
	t.Logf("%d dials during 4 rebinds, none refused, %d reset by an old socket's close", dials, resets)
	tcptest.Dial(t, pWeb).Close()
	if c, err := net.DialTimeout("tcp", pMore, time.Second); err == nil {
		c.Close()
		t.Error("an address dropped from the list still accepts")
	}
}
