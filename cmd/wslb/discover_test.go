package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/internal/clocktest"
	"github.com/wslb/wslb/internal/dnstest"
	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/wait"
	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/status"
)

// dnsRig is wslb serving pool ws from DNS names, with a DNS server the
// test changes and the watchers' clock in the test's hand.
type dnsRig struct {
	t        *testing.T
	dns      *dnstest.Server
	clock    *clocktest.Clock
	r        *running
	path     string
	backends map[string]string // greeting name -> ip:port
}

// dnsInterval and dnsHold are the rig's resolver.interval and hold, on the
// test's clock: nothing happens until the test advances it.
const (
	dnsInterval = 5 * time.Second
	dnsHold     = 30 * time.Second
)

// newDNSRig starts WebSocket echo backends that greet with their names and
// a DNS server on which the test sets records; start runs wslb on a pool
// block written with the backends' ports.
func newDNSRig(t *testing.T, names ...string) *dnsRig {
	g := &dnsRig{t: t, dns: dnstest.Start(t), clock: clocktest.New(time.Unix(1_000_000, 0)),
		path: filepath.Join(t.TempDir(), "config.yaml"), backends: map[string]string{}}
	for _, n := range names {
		g.backends[n] = echo.WS(t, echo.WSOptions{Name: n})
		g.dns.SetAddrs(n+".test", "127.0.0.1")
	}
	return g
}

// port is backend name's port.
func (g *dnsRig) port(name string) uint16 {
	_, p, _ := strings.Cut(g.backends[name], ":")
	n, _ := strconv.Atoi(p)
	return uint16(n)
}

// srv is the SRV record of backend name (whose host is name.test).
func (g *dnsRig) srv(name string, weight uint16) dnstest.SRV {
	return dnstest.SRV{Target: name + ".test", Port: g.port(name), Weight: weight}
}

// config is the rig's config file with pool block ws.
func (g *dnsRig) config(ws string) string {
	return fmt.Sprintf(`
resolver: {servers: [%s], interval: %v, timeout: 500ms, hold: %v}
shutdown: {drain_timeout: 0s, close_spread: 0s}
admin: {listen: 127.0.0.1:0}
%s%s`, g.dns.Addr(), dnsInterval, dnsHold, webTCPPoolWS, ws)
}

func (g *dnsRig) start(ws string) {
	g.t.Helper()
	if err := os.WriteFile(g.path, []byte(g.config(ws)), 0o644); err != nil {
		g.t.Fatal(err)
	}
	cfg, err := config.Load(g.path)
	if err != nil {
		g.t.Fatal(err)
	}
	g.r = startServeConfig(g.t, cfg, serveOptions{path: g.path, clock: g.clock})
}

func (g *dnsRig) pool() *pool.Pool { return g.r.in.gen.Load().pools["ws"] }

// backend is pool ws's backend of greeting name, or nil.
func (g *dnsRig) backend(name string) *pool.Backend {
	for _, b := range g.pool().Backends() {
		if b.String() == g.backends[name] {
			return b
		}
	}
	return nil
}

func (g *dnsRig) lookups(result string) float64 {
	return testutil.ToFloat64(g.r.in.metrics.DNSLookups.WithLabelValues("ws", result))
}

// round advances the clock by one interval, so that the watcher looks the
// names up, and waits until it has.
func (g *dnsRig) round() {
	g.t.Helper()
	before := g.lookups("ok") + g.lookups("error")
	g.clock.Advance(dnsInterval)
	wait.For(g.t, "a round of DNS lookups", func() bool { return g.lookups("ok")+g.lookups("error") > before })
}

// await waits until the pool's backends, described as "name" or
// "name/held" in name order, are want.
func (g *dnsRig) await(want string) {
	g.t.Helper()
	var got string
	if !wait.Until(wait.Timeout, func() bool { got = g.describe(); return got == want }) {
		g.t.Fatalf("backends %q, want %q", got, want)
	}
}

func (g *dnsRig) describe() string {
	var out []string
	for _, b := range g.pool().Backends() {
		name := b.String()
		for n, addr := range g.backends {
			if addr == name {
				name = n
			}
		}
		if b.Held() {
			name += "/held"
		}
		out = append(out, name)
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// dial opens a WebSocket through listener i (0 web, 1 tcp) and returns the
// name of the backend that greeted it.
func (g *dnsRig) dial(ctx context.Context, i int) (*websocket.Conn, string) {
	g.t.Helper()
	c := dialWS(ctx, g.t, fmt.Sprintf("ws://%s/?hello=1", g.r.in.addr(i)), nil)
	return c, greeting(ctx, g.t, c)
}

func (g *dnsRig) status() status.Snapshot {
	g.t.Helper()
	var s status.Snapshot
	body := getBody(g.t, "http://"+g.r.in.adminLn.Addr().String()+"/status.json")
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		g.t.Fatal(err)
	}
	return s
}

func (g *dnsRig) readyz() int { return get(g.t, "http://"+g.r.in.adminLn.Addr().String()+"/readyz") }

// TestDiscoveryNames: a hostname backend and an SRV entry are looked up
// before wslb accepts, so the first conn already reaches them; SRV weights
// become weights (0 -> 1), a target that does not resolve is skipped, the
// backend label is the resolved ip:port and /status.json names the source.
func TestDiscoveryNames(t *testing.T) {
	g := newDNSRig(t, "a", "b", "c")
	g.dns.SetSRV("_ws._tcp.chat.test", g.srv("b", 0), g.srv("c", 7), dnstest.SRV{Target: "nowhere.test", Port: 1})
	g.start(fmt.Sprintf(`    backends: [{address: "a.test:%d", weight: 2}]
    discovery: [{srv: _ws._tcp.chat.test}]`, g.port("a")))
	g.await("a b c")
	if code := g.readyz(); code != 200 {
		t.Fatalf("/readyz %d", code)
	}
	for _, want := range []struct {
		name   string
		weight int
	}{{"a", 2}, {"b", 1}, {"c", 7}} {
		if w := g.backend(want.name).Weight(); w != want.weight {
			t.Errorf("backend %s weight %d, want %d", want.name, w, want.weight)
		}
	}
	seen := map[string]bool{}
	for i := range 6 {
		c, name := g.dial(t.Context(), i%2)
		seen[name] = true
		c.CloseNow()
	}
	if len(seen) != 3 {
		t.Errorf("conns reached %v, want all three backends", seen)
	}

	s := g.status()
	names := map[string]string{}
	for _, b := range s.Pools[0].Backends {
		names[b.Address] = b.Name
	}
	if names[g.backends["a"]] != "a.test" || names[g.backends["b"]] != "_ws._tcp.chat.test" {
		t.Errorf("/status.json names %v", names)
	}
	m := scrapeMetrics(t, g.r.in.adminLn.Addr().String())
	if v := m.sum("wslb_backends", "pool", "ws"); v != 3 {
		t.Errorf("wslb_backends %v, want 3", v)
	}
	if !m.has("wslb_backend_up", "pool", "ws", "backend", g.backends["c"]) {
		t.Errorf("no wslb_backend_up for the resolved ip:port:\n%s", m.lines("wslb_backend_up"))
	}
	// The SRV name, its four targets and a.test's A and AAAA: all answers.
	if ok, bad := g.lookups("ok"), g.lookups("error"); ok < 5 || bad != 0 {
		t.Errorf("lookups ok %v, error %v", ok, bad)
	}
}

// TestDiscoveryChanges is a record's life while conns run: added (it gets
// the next conn, ramping up by slow start), removed (held: no new conns,
// its conn runs on), back while held (back at once), removed again and held
// past resolver.hold (removed: its tunnels closed as "removed", its series
// gone).
func TestDiscoveryChanges(t *testing.T) {
	ctx := t.Context()
	g := newDNSRig(t, "a", "b", "c")
	const name = "_ws._tcp.chat.test"
	g.dns.SetSRV(name, g.srv("a", 1), g.srv("b", 1))
	g.start(`    discovery: [{srv: _ws._tcp.chat.test}]
    slow_start: 1h`)
	g.await("a b")
	conns := map[string]*websocket.Conn{}
	for i := range 2 { // least_conn: one each
		c, name := g.dial(ctx, i)
		conns[name] = c
	}
	ca, cb := conns["a"], conns["b"]
	if ca == nil || cb == nil {
		t.Fatalf("two conns reached %v, want a and b", slices.Collect(maps.Keys(conns)))
	}

	// Added: the new backend is the least loaded, and ramps.
	g.dns.SetSRV(name, g.srv("a", 1), g.srv("b", 1), g.srv("c", 1))
	g.round()
	g.await("a b c")
	if w := g.backend("c").EffectiveWeight(time.Now()); w >= 1 {
		t.Errorf("new backend's effective weight %v: not ramping by slow_start", w)
	}
	if _, got := g.dial(ctx, 0); got != "c" {
		t.Errorf("the conn after the addition went to %s, want c", got)
	}

	// Removed: held, no new conns, its conn runs on.
	g.dns.SetSRV(name, g.srv("a", 1), g.srv("c", 1))
	g.round()
	g.await("a b/held c")
	wsEcho(ctx, t, cb, "still here")
	for i := range 6 {
		c, got := g.dial(ctx, i%2)
		if got == "b" {
			t.Fatalf("conn %d went to the held backend", i)
		}
		c.CloseNow()
	}
	m := scrapeMetrics(t, g.r.in.adminLn.Addr().String())
	if m.sum("wslb_backend_up", "backend", g.backends["b"]) != 0 || m.sum("wslb_backends", "pool", "ws") != 3 {
		t.Errorf("held backend: up %v, backends %v", m.sum("wslb_backend_up", "backend", g.backends["b"]), m.sum("wslb_backends"))
	}
	for _, b := range g.status().Pools[0].Backends {
		if b.Held != (b.Address == g.backends["b"]) {
			t.Errorf("/status.json: %s held %v", b.Address, b.Held)
		}
	}

	// Back while held: at once, the same backend with its conn.
	held := g.backend("b")
	g.dns.SetSRV(name, g.srv("a", 1), g.srv("b", 1), g.srv("c", 1))
	g.round()
	g.await("a b c")
	if g.backend("b") != held || held.Active() != 1 || !held.Healthy() {
		t.Errorf("back: same %v, active %d, healthy %v", g.backend("b") == held, held.Active(), held.Healthy())
	}

	// Gone for good: held, then removed once the hold has passed.
	removed := func() float64 {
		return testutil.ToFloat64(g.r.in.metrics.TunnelsClosed.WithLabelValues("web", "ws", "removed")) +
			testutil.ToFloat64(g.r.in.metrics.TunnelsClosed.WithLabelValues("tcp", "ws", "removed"))
	}
	removedBefore := removed()
	g.dns.SetSRV(name, g.srv("a", 1), g.srv("c", 1))
	g.round()
	g.await("a b/held c")
	g.clock.Advance(dnsHold)
	g.await("a c")
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, _, err := cb.Read(rctx); err == nil || rctx.Err() != nil {
		t.Fatalf("the removed backend's conn: %v, want it closed", err)
	}
	wait.For(t, "the tunnel counted as removed", func() bool {
		return removed() == removedBefore+1
	})
	wsEcho(ctx, t, ca, "a's conn is untouched")
	m = scrapeMetrics(t, g.r.in.adminLn.Addr().String())
	if m.has("wslb_backend_up", "backend", g.backends["b"]) || m.sum("wslb_backends", "pool", "ws") != 2 {
		t.Errorf("after removal:\n%s\n%s", m.lines("wslb_backend_up"), m.lines("wslb_backends"))
	}
}

// TestDiscoveryFailures: a timeout, SERVFAIL or REFUSED changes nothing,
// however many rounds it lasts, and counts as an error; NXDOMAIN and an
// empty answer are answers, and make the address vanish.
func TestDiscoveryFailures(t *testing.T) {
	g := newDNSRig(t, "a")
	g.dns.SetAddrs("chat.test", "127.0.0.1")
	g.start(fmt.Sprintf(`    discovery: [{name: chat.test, port: %d}]`, g.port("a")))
	g.await("a")
	for i, fail := range []func(){
		func() { g.dns.Fail("chat.test", dns.RcodeServerFailure) },
		func() { g.dns.Fail("chat.test", dns.RcodeRefused) },
		func() { g.dns.Drop("chat.test") },
	} {
		errorsBefore := g.lookups("error")
		fail()
		const rounds = 2 + int(dnsHold/dnsInterval) // past a hold, were one started
		for range rounds {
			g.round()
		}
		if got := g.lookups("error") - errorsBefore; got != float64(rounds) {
			t.Errorf("failure %d: %v failed lookups counted, want %d", i, got, rounds)
		}
		g.await("a")
	}
	for _, vanish := range []func(){
		func() { g.dns.Delete("chat.test") },
		func() { g.dns.SetAddrs("chat.test") },
	} {
		g.dns.SetAddrs("chat.test", "127.0.0.1")
		g.round()
		g.await("a")
		okBefore := g.lookups("ok")
		vanish()
		g.round()
		g.await("a/held")
		if g.lookups("ok") <= okBefore {
			t.Error("NXDOMAIN or an empty answer was not counted as ok")
		}
	}
}

// TestDiscoveryNotAtStart: a name that does not resolve at start is not
// fatal: wslb serves, /readyz is 503 and l7 answers 503 until the record
// appears, then the pool has its backend and wslb is ready.
func TestDiscoveryNotAtStart(t *testing.T) {
	g := newDNSRig(t, "a")
	g.start(fmt.Sprintf(`    backends: [{address: "late.test:%d"}]`, g.port("a")))
	g.await("")
	if code := g.readyz(); code != 503 {
		t.Fatalf("/readyz %d with no backend, want 503", code)
	}
	if code := get(t, "http://"+g.r.in.addr(0)+"/"); code != 503 {
		t.Fatalf("l7 answered %d with no backend, want 503", code)
	}
	g.dns.SetAddrs("late.test", "127.0.0.1")
	g.round()
	g.await("a")
	if code := g.readyz(); code != 200 {
		t.Fatalf("/readyz %d once the name resolves", code)
	}
	c, name := g.dial(t.Context(), 1)
	defer c.CloseNow()
	if name != "a" {
		t.Fatalf("greeted by %s", name)
	}
}

// TestDiscoveryReload: a reload keeps what the names gave (the same
// backends, their conns and holds), even while lookups fail; a name the
// reload drops takes its backends with it.
func TestDiscoveryReload(t *testing.T) {
	ctx := t.Context()
	g := newDNSRig(t, "a", "b", "s")
	const name = "_ws._tcp.chat.test"
	g.dns.SetSRV(name, g.srv("a", 1), g.srv("b", 1))
	pools := func(static bool) string {
		block := `    discovery: [{srv: _ws._tcp.chat.test}]`
		if static {
			block = fmt.Sprintf("    backends: [{address: %s}]\n", g.backends["s"]) + block
		}
		return block
	}
	g.start(pools(false))
	g.await("a b")
	g.dns.SetSRV(name, g.srv("a", 1))
	g.round()
	g.await("a b/held")
	a := g.backend("a")
	c, _ := g.dial(ctx, 1)
	g.dns.Fail(name, dns.RcodeServerFailure)

	f := &reloadFixture{t: t, path: g.path, r: g.r}
	f.reload(g.config(pools(true)), "ok")
	g.await("a b/held s")
	if g.backend("a") != a || a.Active() != 1 {
		t.Errorf("after the reload: same backend %v, active %d", g.backend("a") == a, a.Active())
	}
	wsEcho(ctx, t, c, "across the reload")
	g.round() // SERVFAIL: nothing changes
	g.await("a b/held s")

	f.reload(g.config(fmt.Sprintf("    backends: [{address: %s}]", g.backends["s"])), "ok")
	g.await("s")
}

// TestCheckWarnings: -check looks the names up and prints a warning, with
// its line, for each that fails, without failing the check (the warnings
// themselves are discovery's TestCheck).
func TestCheckWarnings(t *testing.T) {
	s := dnstest.Start(t)
	s.SetAddrs("ok.test", "127.0.0.1")
	path := filepath.Join(t.TempDir(), "names.yaml")
	os.WriteFile(path, []byte(fmt.Sprintf(`resolver: {servers: [%s], timeout: 500ms}
listeners: [{name: l, listen: 127.0.0.1:0, mode: l4, pool: p}]
pools:
  - {name: p, backends: [{address: ok.test:80}, {address: 127.0.0.1:80}], discovery: [{name: missing.test, port: 80}]}
`, s.Addr())), 0o644)
	var out, errOut bytes.Buffer
	if code := run(t.Context(), []string{"-check", "-config", path}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d with warnings only, want 0:\n%s", code, errOut.String())
	}
	want := path + ":4: pools[0].discovery[0].name: warning: missing.test has no A/AAAA records (NXDOMAIN or an empty answer): it gives no backends until it has\n"
	if errOut.String() != want {
		t.Errorf("stderr:\n%s\nwant\n%s", errOut.String(), want)
	}
	if !strings.HasSuffix(out.String(), "1 pool, 2 backends, 2 DNS names looked up\n") {
		t.Errorf("summary %q", out.String())
	}
}

// BenchmarkDiscoveryChange measures what a DNS change costs: the time from
// a new SRV record to the first conn on its backend, with
// resolver.interval at its default 5s and at 1s, on the real clock. It is
// measured, not asserted: the record lands at a random point of the
// interval, so the mean is about half an interval plus a lookup.
//
//	go test -run '^$' -bench DiscoveryChange -benchtime 20x ./cmd/wslb
func BenchmarkDiscoveryChange(b *testing.B) {
	for _, interval := range []time.Duration{5 * time.Second, time.Second} {
		b.Run("interval="+interval.String(), func(b *testing.B) { benchDiscoveryChange(b, interval) })
	}
}

func benchDiscoveryChange(b *testing.B, interval time.Duration) {
	d := dnstest.Start(b)
	addrA, addrB := echo.WS(b, echo.WSOptions{Name: "a"}), echo.WS(b, echo.WSOptions{Name: "b"})
	srv := func(addr string) dnstest.SRV {
		_, p, _ := strings.Cut(addr, ":")
		n, _ := strconv.Atoi(p)
		return dnstest.SRV{Target: "host.test", Port: uint16(n)}
	}
	d.SetAddrs("host.test", "127.0.0.1")
	d.SetSRV("_ws._tcp.chat.test", srv(addrA))
	cfg, err := config.Parse([]byte(fmt.Sprintf(`
resolver: {servers: [%s], interval: %v, timeout: 1s, hold: 1ms}
shutdown: {drain_timeout: 0s, close_spread: 0s}
admin: {listen: ""}
listeners: [{name: tcp, listen: 127.0.0.1:0, mode: l4, pool: ws}]
pools: [{name: ws, health: {check: none}, discovery: [{srv: _ws._tcp.chat.test}]}]
`, d.Addr(), interval)), "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	in := startServeConfig(b, cfg, serveOptions{}).in
	url := "ws://" + in.addr(0) + "/?hello=1"
	dial := func() (*websocket.Conn, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(ctx, url, nil)
		if err != nil {
			b.Fatal(err)
		}
		_, hello, err := c.Read(ctx)
		if err != nil {
			b.Fatal(err)
		}
		return c, strings.TrimPrefix(string(hello), "connected to ")
	}
	hasB := func() bool {
		for _, be := range in.gen.Load().pools["ws"].Backends() {
			if be.String() == addrB && !be.Held() {
				return true
			}
		}
		return false
	}
	busyA, _ := dial() // least_conn sends the next conn to b once it is there
	defer busyA.CloseNow()
	var worst time.Duration
	for b.Loop() {
		start := time.Now()
		d.SetSRV("_ws._tcp.chat.test", srv(addrA), srv(addrB))
		for !hasB() {
			if time.Since(start) > 3*interval {
				b.Fatal("the new record never became a backend")
			}
			time.Sleep(time.Millisecond) // paces the poll of the pool, not a synchronisation
		}
		c, name := dial()
		took := time.Since(start)
		c.CloseNow()
		if name != "b" {
			b.Fatalf("the first conn after the change went to %s", name)
		}
		worst = max(worst, took)
		b.StopTimer()
		d.SetSRV("_ws._tcp.chat.test", srv(addrA))
		if !wait.Until(3*interval, func() bool {
			return len(in.gen.Load().pools["ws"].Backends()) == 1
		}) {
			b.Fatal("the removed record's backend stayed")
		}
		// Paces the next change on purpose: it lands at a random point of
		// the interval, as a real one does, rather than just after a round.
		time.Sleep(rand.N(interval))
		b.StartTimer()
	}
	b.ReportMetric(worst.Seconds(), "worst-s/change")
}
