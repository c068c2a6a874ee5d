package status

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/metrics"
	"github.com/wslb/wslb/pool"
)

const testConfig = `
admin: {listen: 127.0.0.1:0}
listeners:
  - {name: web, listen: 127.0.0.1:0, mode: l7, pool: a, max_connections: 100, routes: [{path: /b/, pool: b}]}
  - {name: raw, listen: 127.0.0.1:0, mode: l4, pool: b}
pools:
  - name: a
    backends: [{address: 127.0.0.1:9001, weight: 3}, {address: 127.0.0.1:9002}]
    health: {check: none}
  - name: b
    balance: round_robin
    backends: [{address: 127.0.0.1:9003}]
    health: {check: tcp}
`

// testSetup parses yaml and builds its pools as cmd/wslb does.
func testSetup(t *testing.T, yaml string) (*config.Config, map[string]*pool.Pool) {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pools := map[string]*pool.Pool{}
	for _, pc := range cfg.Pools {
		pools[pc.Name] = pool.New(pc)
	}
	return cfg, pools
}

// sources is a snapshot's inputs with no listeners running.
func sources(cfg *config.Config, pools map[string]*pool.Pool, m *metrics.Metrics) Sources {
	return Sources{
		Version: "v0", Started: time.Unix(1000, 0), Config: cfg, Pools: pools, Metrics: m,
		Ready: func() (bool, string) { return true, "ready" },
	}
}

// setActive reserves or releases backends of p until b has exactly n conns.
// p must hold only b as an available backend, so Pick lands on it.
func setActive(t *testing.T, p *pool.Pool, b *pool.Backend, n int64) {
	t.Helper()
	for range 1000 {
		switch {
		case b.Active() < n:
			got, err := p.Pick(netip.Addr{}, nil)
			if err != nil || got != b {
				t.Fatalf("Pick: %v %v, want %v", got, err, b)
			}
		case b.Active() > n:
			b.Release()
		default:
			return
		}
	}
	t.Fatalf("active %d, could not reach %d", b.Active(), n)
}

func findBackend(t *testing.T, s Snapshot, poolName, addr string) Backend {
	t.Helper()
	for _, p := range s.Pools {
		if p.Name != poolName {
			continue
		}
		for _, b := range p.Backends {
			if b.Address == addr {
				return b
			}
		}
	}
	t.Fatalf("no backend %s/%s in snapshot", poolName, addr)
	return Backend{}
}

// TestLastErrorSurvivesRecovery: a pass after a failure updates the last
// check but keeps the error and its time, which is what an operator looking
// at a flapping backend needs to see.
func TestLastErrorSurvivesRecovery(t *testing.T) {
	cfg, pools := testSetup(t, testConfig)
	m := metrics.New(prometheus.NewRegistry())
	bd := NewBoard(time.Second)
	t0 := time.Unix(2000, 0)
	const addr = "127.0.0.1:9003"

	b := findBackend(t, bd.Snapshot(sources(cfg, pools, m), t0), "b", addr)
	if b.LastCheck != nil || b.LastError != "" || b.LastErrorAt != nil {
		t.Fatalf("before any check: %+v", b)
	}

	bd.CheckDone("b", addr, errors.New("connection refused"), t0)
	b = findBackend(t, bd.Snapshot(sources(cfg, pools, m), t0), "b", addr)
	if b.LastCheck == nil || !b.LastCheck.Equal(t0) || b.LastCheckOK {
		t.Fatalf("after a failed check: last check %v ok %v", b.LastCheck, b.LastCheckOK)
	}
	if b.LastError != "connection refused" || b.LastErrorAt == nil || !b.LastErrorAt.Equal(t0) {
		t.Fatalf("after a failed check: error %q at %v", b.LastError, b.LastErrorAt)
	}

	t1 := t0.Add(5 * time.Second)
	bd.CheckDone("b", addr, nil, t1)
	b = findBackend(t, bd.Snapshot(sources(cfg, pools, m), t1), "b", addr)
	if !b.LastCheck.Equal(t1) || !b.LastCheckOK {
		t.Fatalf("after a pass: last check %v ok %v", b.LastCheck, b.LastCheckOK)
	}
	if b.LastError != "connection refused" || !b.LastErrorAt.Equal(t0) {
		t.Fatalf("after a pass the error was lost: %q at %v", b.LastError, b.LastErrorAt)
	}

	// A dial error (passive) replaces the error but is not a check.
	t2 := t1.Add(time.Second)
	bd.Failed("b", addr, errors.New("dial timeout"), t2)
	bd.Failed("b", addr, nil, t2.Add(time.Second)) // nil is no failure: ignored
	b = findBackend(t, bd.Snapshot(sources(cfg, pools, m), t2), "b", addr)
	if b.LastError != "dial timeout" || !b.LastErrorAt.Equal(t2) {
		t.Fatalf("after Failed: error %q at %v", b.LastError, b.LastErrorAt)
	}
	if !b.LastCheck.Equal(t1) || !b.LastCheckOK {
		t.Fatalf("Failed changed the last check: %v ok %v", b.LastCheck, b.LastCheckOK)
	}

	// Another backend's record is its own.
	if o := findBackend(t, bd.Snapshot(sources(cfg, pools, m), t2), "a", "127.0.0.1:9001"); o.LastError != "" || o.LastCheck != nil {
		t.Fatalf("unrelated backend got a record: %+v", o)
	}
}

// TestHistory: samples come out oldest first, ending with the latest, and
// only the last HistoryLen are kept.
func TestHistory(t *testing.T) {
	cfg, pools := testSetup(t, `
listeners: [{name: raw, listen: 127.0.0.1:0, mode: l4, pool: p}]
pools:
  - name: p
    backends: [{address: 127.0.0.1:9001}]
    health: {check: none}
`)
	m := metrics.New(prometheus.NewRegistry())
	bd := NewBoard(time.Second)
	p := pools["p"]
	b := p.Backends()[0]
	t.Cleanup(func() { setActive(t, p, b, 0) })

	value := func(i int) int64 { return int64(i % 7) }
	check := func(n int) {
		t.Helper()
		got := findBackend(t, bd.Snapshot(sources(cfg, pools, m), time.Now()), "p", "127.0.0.1:9001").History
		keep := min(n, HistoryLen)
		var want []int64
		for i := n - keep; i < n; i++ {
			want = append(want, value(i))
		}
		if !slices.Equal(got, want) {
			t.Fatalf("after %d samples: history %v, want %v", n, got, want)
		}
	}

	if got := findBackend(t, bd.Snapshot(sources(cfg, pools, m), time.Now()), "p", "127.0.0.1:9001").History; got == nil || len(got) != 0 {
		t.Fatalf("before any sample: %#v, want an empty, non-nil slice (JSON [])", got)
	}
	for i := range HistoryLen + 10 {
		setActive(t, p, b, value(i))
		bd.Sample(pools)
		switch n := i + 1; n {
		case 1, 5, HistoryLen - 1, HistoryLen, HistoryLen + 1, HistoryLen + 10:
			check(n)
		}
	}
	// Far past the ring's first wrap as well.
	for i := HistoryLen + 10; i < 3*HistoryLen+3; i++ {
		setActive(t, p, b, value(i))
		bd.Sample(pools)
	}
	check(3*HistoryLen + 3)

	if s := bd.Snapshot(sources(cfg, pools, m), time.Now()); s.HistoryInterval != 1 {
		t.Fatalf("history_interval_seconds %v, want 1", s.HistoryInterval)
	}
}

// TestForgetRemoved: a backend that a reload removed is dropped at the next
// sample, so its history and error do not come back if it is re-added.
func TestForgetRemoved(t *testing.T) {
	cfg, pools := testSetup(t, testConfig)
	m := metrics.New(prometheus.NewRegistry())
	bd := NewBoard(time.Second)
	now := time.Unix(3000, 0)
	bd.CheckDone("a", "127.0.0.1:9002", errors.New("boom"), now)
	bd.Sample(pools)
	bd.Sample(pools)
	if len(bd.backends) != 3 {
		t.Fatalf("%d records, want one per backend (3)", len(bd.backends))
	}

	// The reload: pool a loses 127.0.0.1:9002, pool b goes entirely.
	cfg2, _ := testSetup(t, `
listeners: [{name: raw, listen: 127.0.0.1:0, mode: l4, pool: a}]
pools:
  - name: a
    backends: [{address: 127.0.0.1:9001, weight: 3}]
    health: {check: none}
`)
	pools2 := map[string]*pool.Pool{"a": pool.Reconcile(pools["a"], cfg2.Pools[0])}
	bd.Sample(pools2)
	want := []metrics.PoolBackend{{Pool: "a", Backend: "127.0.0.1:9001"}}
	var got []metrics.PoolBackend
	for k := range bd.backends {
		got = append(got, k)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("records %v after the reload, want %v", got, want)
	}
	if h := findBackend(t, bd.Snapshot(sources(cfg2, pools2, m), now), "a", "127.0.0.1:9001").History; len(h) != 3 {
		t.Fatalf("the kept backend's history %v, want its 3 samples", h)
	}

	// Re-added: a fresh record.
	pools3 := map[string]*pool.Pool{"a": pool.Reconcile(pools2["a"], cfg.Pools[0])}
	bd.Sample(pools3)
	b := findBackend(t, bd.Snapshot(sources(cfg, pools3, m), now), "a", "127.0.0.1:9002")
	if b.LastError != "" || len(b.History) != 1 {
		t.Fatalf("re-added backend kept old state: error %q history %v", b.LastError, b.History)
	}
}

// TestSnapshotTotals: pool and overall totals are the sums of the backends,
// and the counters are read from the metrics summed over listeners.
func TestSnapshotTotals(t *testing.T) {
	cfg, pools := testSetup(t, testConfig)
	m := metrics.New(prometheus.NewRegistry())
	bd := NewBoard(2 * time.Second)

	// Pool a: least_conn with weights 3 and 1 spreads 8 picks 6 and 2.
	pa, pb := pools["a"], pools["b"]
	for range 8 {
		if _, err := pa.Pick(netip.Addr{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	b3 := pb.Backends()[0]
	setActive(t, pb, b3, 5)
	t.Cleanup(func() {
		for _, b := range pa.Backends() {
			for b.Active() > 0 {
				b.Release()
			}
		}
		setActive(t, pb, b3, 0)
	})
	b3.SetUp(false) // down now, but its conns still count

	counters := []struct {
		listener, pool, backend string
		conns, rx, tx           float64
	}{
		{"web", "a", "127.0.0.1:9001", 10, 100, 1000},
		{"web", "a", "127.0.0.1:9002", 20, 200, 2000},
		{"web", "b", "127.0.0.1:9003", 1, 1, 1},
		{"raw", "b", "127.0.0.1:9003", 2, 2, 2}, // same backend, other listener
	}
	for _, c := range counters {
		m.ConnectionsTotal.WithLabelValues(c.listener, c.pool, c.backend).Add(c.conns)
		m.Bytes.WithLabelValues(c.listener, c.pool, c.backend, metrics.Rx).Add(c.rx)
		m.Bytes.WithLabelValues(c.listener, c.pool, c.backend, metrics.Tx).Add(c.tx)
	}

	now := time.Unix(1090, 0)
	src := sources(cfg, pools, m)
	src.Draining = true
	src.Ready = func() (bool, string) { return false, "draining" }
	s := bd.Snapshot(src, now)

	if s.Uptime != 90 || !s.Started.Equal(time.Unix(1000, 0)) || !s.Now.Equal(now) {
		t.Errorf("uptime %v started %v now %v", s.Uptime, s.Started, s.Now)
	}
	if s.Ready || s.ReadyReason != "draining" || !s.Draining {
		t.Errorf("ready %v %q draining %v", s.Ready, s.ReadyReason, s.Draining)
	}
	if s.HistoryInterval != 2 {
		t.Errorf("history_interval_seconds %v", s.HistoryInterval)
	}

	if len(s.Listeners) != 2 {
		t.Fatalf("listeners %+v", s.Listeners)
	}
	if l := s.Listeners[0]; l.Name != "web" || l.Mode != "l7" || !slices.Equal(l.Pools, []string{"a", "b"}) || l.MaxConnections != 100 || l.Addr != "127.0.0.1:0" {
		t.Errorf("listener web %+v", l)
	}

	if len(s.Pools) != 2 || s.Pools[0].Name != "a" || s.Pools[1].Name != "b" {
		t.Fatalf("pools not in configuration order: %+v", s.Pools)
	}
	a, b := s.Pools[0], s.Pools[1]
	if a.Active != 8 || a.BackendsUp != 2 || a.Balance != "least_conn" || a.Check != "none" {
		t.Errorf("pool a: active %d up %d balance %q check %q", a.Active, a.BackendsUp, a.Balance, a.Check)
	}
	if a.Backends[0].Active+a.Backends[1].Active != 8 || a.Backends[0].Weight != 3 {
		t.Errorf("pool a backends %+v", a.Backends)
	}
	if b.Active != 5 || b.BackendsUp != 0 || b.Backends[0].State != "down" || b.Backends[0].Up {
		t.Errorf("pool b: active %d up %d backend %+v", b.Active, b.BackendsUp, b.Backends[0])
	}
	if got := b.Backends[0]; got.ConnectionsTotal != 3 || got.RxBytes != 3 || got.TxBytes != 3 {
		t.Errorf("backend of two listeners not summed: %+v", got)
	}

	want := Totals{Active: 13, ConnectionsTotal: 33, RxBytes: 303, TxBytes: 3003}
	if s.Totals != want {
		t.Errorf("totals %+v, want %+v", s.Totals, want)
	}
	var sum Totals
	for _, p := range s.Pools {
		var pActive int64
		for _, b := range p.Backends {
			pActive += b.Active
			sum.Active += b.Active
			sum.ConnectionsTotal += b.ConnectionsTotal
			sum.RxBytes += b.RxBytes
			sum.TxBytes += b.TxBytes
		}
		if pActive != p.Active {
			t.Errorf("pool %s active %d, backends sum to %d", p.Name, p.Active, pActive)
		}
	}
	if sum != s.Totals {
		t.Errorf("totals %+v, backends sum to %+v", s.Totals, sum)
	}
}

// TestSnapshotSkipsMissingPool: a configured pool with no running Pool (a
// reload in progress) is left out rather than crashing the page.
func TestSnapshotSkipsMissingPool(t *testing.T) {
	cfg, pools := testSetup(t, testConfig)
	delete(pools, "b")
	s := NewBoard(time.Second).Snapshot(sources(cfg, pools, metrics.New(prometheus.NewRegistry())), time.Now())
	if len(s.Pools) != 1 || s.Pools[0].Name != "a" {
		t.Fatalf("pools %+v", s.Pools)
	}
}
