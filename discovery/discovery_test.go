package discovery

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/internal/clocktest"
	"github.com/wslb/wslb/internal/dnstest"
)

// resolverFor is a resolver on the test's DNS servers with a short timeout,
// so that a dropped query costs little.
func resolverFor(servers ...*dnstest.Server) *Resolver {
	c := config.Resolver{Timeout: 300 * time.Millisecond}
	for _, s := range servers {
		c.Servers = append(c.Servers, s.Addr())
	}
	return NewResolver(c)
}

func TestResolverAnswers(t *testing.T) {
	s := dnstest.Start(t)
	s.SetAddrs("two.test", "127.0.0.2", "127.0.0.1", "::1")
	s.SetAddrs("empty.test")
	s.Fail("servfail.test", dns.RcodeServerFailure)
	s.Fail("refused.test", dns.RcodeRefused)
	s.Drop("silent.test")
	s.SetSRV("_ws._tcp.chat.test", dnstest.SRV{Target: "a.test", Port: 9001, Weight: 5})
	r := resolverFor(s)
	ctx := t.Context()

	addrs, err := r.Addrs(ctx, "two.test")
	want := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("::1")}
	if err != nil || !slices.Equal(addrs, want) {
		t.Errorf("two.test: %v, %v; want %v", addrs, err, want)
	}
	for _, name := range []string{"missing.test", "empty.test"} {
		if addrs, err := r.Addrs(ctx, name); err != nil || len(addrs) != 0 {
			t.Errorf("%s: %v, %v; want an answer with no addresses", name, addrs, err)
		}
	}
	for _, name := range []string{"servfail.test", "refused.test", "silent.test"} {
		start := time.Now()
		if addrs, err := r.Addrs(ctx, name); err == nil {
			t.Errorf("%s: %v with no error; want a failed lookup", name, addrs)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s took %v: the timeout does not bound it", name, d)
		}
	}
	srvs, err := r.SRV(ctx, "_ws._tcp.chat.test")
	if err != nil || len(srvs) != 1 || srvs[0].Target != "a.test." || srvs[0].Port != 9001 || srvs[0].Weight != 5 {
		t.Errorf("SRV: %v, %v", srvs, err)
	}
	if srvs, err := r.SRV(ctx, "_ws._tcp.missing.test"); err != nil || len(srvs) != 0 {
		t.Errorf("missing SRV: %v, %v; want an answer with no records", srvs, err)
	}

	// A second server is asked when the first fails.
	good := dnstest.Start(t)
	good.SetAddrs("servfail.test", "127.0.0.9")
	addrs, err = resolverFor(s, good).Addrs(ctx, "servfail.test")
	if err != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("127.0.0.9") {
		t.Errorf("with a second server: %v, %v", addrs, err)
	}
}

// rig is one pool's Set and Watcher over a test DNS server, on a fake clock.
type rig struct {
	t       *testing.T
	dns     *dnstest.Server
	clock   *clocktest.Clock
	set     *Set
	w       *Watcher
	ok, bad int
}

const testHold = 30 * time.Second

func newRig(t *testing.T, yamlPool string) *rig {
	t.Helper()
	c, err := config.Parse([]byte(`
listeners: [{name: l, listen: 127.0.0.1:0, mode: l4, pool: p}]
pools:
  - `+yamlPool), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, dns: dnstest.Start(t), clock: clocktest.New(time.Unix(1000, 0))}
	r.set = NewSet(c.Pools[0], testHold, nil, nil)
	r.w = &Watcher{Set: r.set, Resolver: resolverFor(r.dns), Interval: 5 * time.Second, Clock: r.clock,
		OnLookups: func(_ string, ok, failed int) { r.ok += ok; r.bad += failed }}
	return r
}

// backends describes the set's backends as "addr/weight/source", "held" added.
func (r *rig) backends() string {
	var out []string
	for _, b := range r.set.Backends() {
		s := fmt.Sprintf("%s/%d/%s", b.Addr, b.Weight, b.Source)
		if b.Held {
			s += "/held"
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

func (r *rig) refresh(wantChanged bool, want string) {
	r.t.Helper()
	if changed := r.w.Refresh(r.t.Context()); changed != wantChanged {
		r.t.Errorf("Refresh changed = %v, want %v (backends %s)", changed, wantChanged, r.backends())
	}
	if got := r.backends(); got != want {
		r.t.Errorf("backends\n got %s\nwant %s", got, want)
	}
}

func TestHostnameBackends(t *testing.T) {
	r := newRig(t, `{name: p, backends: [{address: 10.0.0.1:80}, {address: chat.test:9001, weight: 3}], discovery: [{name: web.test, port: 80}]}`)
	r.dns.SetAddrs("chat.test", "127.0.0.2", "127.0.0.1")
	r.dns.SetAddrs("web.test", "127.0.0.1")
	r.refresh(true, "10.0.0.1:80/1/ 127.0.0.1:9001/3/chat.test 127.0.0.2:9001/3/chat.test 127.0.0.1:80/1/web.test")
	r.refresh(false, "10.0.0.1:80/1/ 127.0.0.1:9001/3/chat.test 127.0.0.2:9001/3/chat.test 127.0.0.1:80/1/web.test")
	if r.ok != 4 || r.bad != 0 {
		t.Errorf("lookups ok %d, failed %d; want 4, 0", r.ok, r.bad)
	}
	// An address given by a static backend or an earlier name is one backend.
	r.dns.SetAddrs("web.test", "10.0.0.1")
	r.refresh(true, "10.0.0.1:80/1/ 127.0.0.1:9001/3/chat.test 127.0.0.2:9001/3/chat.test 127.0.0.1:80/1/web.test/held")
}

// TestHoldAndReturn: an address that leaves the answers is held (no new
// conns) until resolver.hold has passed, then removed; one that comes back
// while held is back at once. Absent from an answer, NXDOMAIN and an empty
// answer all make addresses vanish.
func TestHoldAndReturn(t *testing.T) {
	r := newRig(t, `{name: p, discovery: [{srv: _ws._tcp.chat.test}]}`)
	r.dns.SetAddrs("a.test", "127.0.0.1")
	r.dns.SetAddrs("b.test", "127.0.0.1")
	r.dns.SetSRV("_ws._tcp.chat.test", dnstest.SRV{Target: "a.test", Port: 9001, Weight: 0}, dnstest.SRV{Target: "b.test", Port: 9002, Weight: 5000})
	const src = "_ws._tcp.chat.test"
	a, b := "127.0.0.1:9001/1/"+src, "127.0.0.1:9002/1000/"+src
	r.refresh(true, a+" "+b)

	r.dns.SetSRV(src, dnstest.SRV{Target: "a.test", Port: 9001})
	r.refresh(true, a+" "+b+"/held")
	r.clock.Advance(testHold / 2)
	r.refresh(false, a+" "+b+"/held") // still gone: the hold runs from when it vanished
	r.dns.SetSRV(src, dnstest.SRV{Target: "a.test", Port: 9001}, dnstest.SRV{Target: "b.test", Port: 9002, Weight: 5000})
	r.refresh(true, a+" "+b) // back at once

	r.dns.Delete(src) // NXDOMAIN
	r.refresh(true, a+"/held "+b+"/held")
	if at, ok := r.set.nextExpiry(); !ok || !at.Equal(r.clock.Now().Add(testHold)) {
		t.Errorf("next expiry %v, %v; want now + hold", at, ok)
	}
	r.clock.Advance(testHold - time.Nanosecond)
	if r.set.Expire(r.clock.Now()) {
		t.Error("a hold ended early")
	}
	r.clock.Advance(time.Nanosecond)
	if !r.set.Expire(r.clock.Now()) || r.backends() != "" {
		t.Errorf("after the hold: %q, want no backends", r.backends())
	}

	r.dns.SetSRV(src, dnstest.SRV{Target: "a.test", Port: 9001})
	r.refresh(true, a)
	r.dns.SetSRV(src) // an empty answer
	r.refresh(true, a+"/held")
}

// TestFailedLookupChangesNothing: a timeout, SERVFAIL or REFUSED keeps the
// last answer, however long it lasts, and counts as an error.
func TestFailedLookupChangesNothing(t *testing.T) {
	r := newRig(t, `{name: p, discovery: [{name: chat.test, port: 9001}]}`)
	r.dns.SetAddrs("chat.test", "127.0.0.1")
	r.refresh(true, "127.0.0.1:9001/1/chat.test")
	for i, fail := range []func(){
		func() { r.dns.Fail("chat.test", dns.RcodeServerFailure) },
		func() { r.dns.Fail("chat.test", dns.RcodeRefused) },
		func() { r.dns.Drop("chat.test") },
	} {
		fail()
		r.clock.Advance(2 * testHold)
		r.refresh(false, "127.0.0.1:9001/1/chat.test")
		if r.bad != i+1 {
			t.Errorf("failed lookups %d, want %d", r.bad, i+1)
		}
	}
}

// TestSRVTargets: a target that does not resolve is skipped; one whose
// lookup fails keeps the addresses it had.
func TestSRVTargets(t *testing.T) {
	r := newRig(t, `{name: p, discovery: [{srv: _ws._tcp.chat.test}]}`)
	r.dns.SetAddrs("a.test", "127.0.0.1")
	r.dns.SetAddrs("b.test", "127.0.0.2")
	r.dns.SetSRV("_ws._tcp.chat.test",
		dnstest.SRV{Target: "a.test", Port: 9001, Weight: 2},
		dnstest.SRV{Target: "b.test", Port: 9001, Weight: 3},
		dnstest.SRV{Target: "gone.test", Port: 9001})
	const src = "_ws._tcp.chat.test"
	r.refresh(true, "127.0.0.1:9001/2/"+src+" 127.0.0.2:9001/3/"+src)
	if r.ok != 4 || r.bad != 0 {
		t.Errorf("lookups ok %d, failed %d; want 4 (the SRV and three targets), 0", r.ok, r.bad)
	}
	r.dns.Fail("b.test", dns.RcodeServerFailure)
	r.refresh(false, "127.0.0.1:9001/2/"+src+" 127.0.0.2:9001/3/"+src)
	r.dns.Delete("b.test")
	r.refresh(true, "127.0.0.1:9001/2/"+src+" 127.0.0.2:9001/3/"+src+"/held")
}

// TestReloadCarriesOver: a new set for the same pool keeps the answers of
// the names that stay and their holds, and drops those of removed names.
func TestReloadCarriesOver(t *testing.T) {
	r := newRig(t, `{name: p, discovery: [{name: a.test, port: 1}, {name: b.test, port: 2}]}`)
	r.dns.SetAddrs("a.test", "127.0.0.1", "127.0.0.2")
	r.dns.SetAddrs("b.test", "127.0.0.1")
	r.refresh(true, "127.0.0.1:1/1/a.test 127.0.0.2:1/1/a.test 127.0.0.1:2/1/b.test")
	r.dns.SetAddrs("a.test", "127.0.0.1")
	r.refresh(true, "127.0.0.1:1/1/a.test 127.0.0.1:2/1/b.test 127.0.0.2:1/1/a.test/held")

	c, err := config.Parse([]byte(`
listeners: [{name: l, listen: 127.0.0.1:0, mode: l4, pool: p}]
pools: [{name: p, discovery: [{name: A.test., port: 1}, {name: c.test, port: 3}]}]`), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	next := NewSet(c.Pools[0], testHold, nil, r.set)
	got := []string{}
	for _, b := range next.Backends() {
		got = append(got, fmt.Sprintf("%s/%v", b.Addr, b.Held))
	}
	if want := "127.0.0.1:1/false 127.0.0.2:1/true"; strings.Join(got, " ") != want {
		t.Errorf("carried over %v, want %s", got, want)
	}
	if at := next.nextRefresh(time.Second); !at.IsZero() {
		t.Errorf("next refresh %v; want at once, c.test was never looked up", at)
	}
}

// TestWatcherRun: Run looks the names up every interval on its clock and
// ends holds on time, calling OnChange for each change.
func TestWatcherRun(t *testing.T) {
	r := newRig(t, `{name: p, discovery: [{name: chat.test, port: 9001}]}`)
	r.dns.SetAddrs("chat.test", "127.0.0.1")
	changes := make(chan string, 10)
	r.w.OnChange = func(ctx context.Context, s *Set) { changes <- r.backends() }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	next := func(what string) string {
		t.Helper()
		select {
		case s := <-changes:
			return s
		case <-time.After(5 * time.Second):
			t.Fatalf("no change: %s", what)
			return ""
		}
	}
	// Never answered: the first round is at once.
	if got := next("first round"); got != "127.0.0.1:9001/1/chat.test" {
		t.Fatalf("first round: %s", got)
	}
	queries := r.dns.Queries("chat.test")
	r.dns.SetAddrs("chat.test", "127.0.0.2")
	r.clock.Advance(5 * time.Second)
	if got := next("second round"); got != "127.0.0.2:9001/1/chat.test 127.0.0.1:9001/1/chat.test/held" {
		t.Fatalf("second round: %s", got)
	}
	if r.dns.Queries("chat.test") <= queries {
		t.Fatal("no lookup in the second round")
	}
	r.clock.Advance(testHold) // rounds due on the way change nothing
	if got := next("hold over"); got != "127.0.0.2:9001/1/chat.test" {
		t.Fatalf("after the hold: %s", got)
	}
}

func TestCheck(t *testing.T) {
	s := dnstest.Start(t)
	s.SetAddrs("ok.test", "127.0.0.1")
	s.SetAddrs("empty.test")
	s.Fail("broken.test", dns.RcodeServerFailure)
	s.SetSRV("_ws._tcp.chat.test", dnstest.SRV{Target: "ok.test", Port: 1}, dnstest.SRV{Target: "gone.test", Port: 2})
	c, err := config.Parse([]byte(fmt.Sprintf(`
resolver: {servers: [%s], timeout: 300ms}
listeners: [{name: l, listen: 127.0.0.1:0, mode: l4, pool: p}]
pools:
  - name: p
    backends:
      - address: ok.test:80
      - address: missing.test:80
    discovery:
      - name: empty.test
        port: 80
      - srv: _ws._tcp.chat.test
      - name: broken.test
        port: 80
`, s.Addr())), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range Check(t.Context(), c) {
		got = append(got, p.String())
	}
	want := []string{
		"t.yaml:8: pools[0].backends[1].address: warning: missing.test has no A/AAAA records (NXDOMAIN or an empty answer)",
		"t.yaml:10: pools[0].discovery[0].name: warning: empty.test has no A/AAAA records",
		"t.yaml:12: pools[0].discovery[1].srv: warning: SRV targets of _ws._tcp.chat.test that do not resolve are skipped: gone.test:2",
		"t.yaml:13: pools[0].discovery[2].name: warning: lookup of broken.test failed:",
	}
	if len(got) != len(want) {
		t.Fatalf("warnings:\n%s", strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("warning %d:\n got %s\nwant %s...", i, got[i], want[i])
		}
	}
}
