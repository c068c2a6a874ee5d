package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/loopback"
	"github.com/wslb/wslb/internal/wait"
)

// DESIGN.md "Metrics" end to end: serve runs real listeners in front of real
// loopback backends, and every value is read the way Prometheus reads it,
// from the text exposition of the admin listener's /metrics.

// mFamily is one row of DESIGN.md's metrics table.
type mFamily struct {
	typ    dto.MetricType
	labels []string
}

// mDesignTable is DESIGN.md's metrics table, the contract the exposition is
// held to: a name, its type and exactly these labels.
var mDesignTable = map[string]mFamily{
	"wslb_connections_active":      {dto.MetricType_GAUGE, []string{"listener", "pool", "backend"}},
	"wslb_connections_total":       {dto.MetricType_COUNTER, []string{"listener", "pool", "backend"}},
	"wslb_upgrades_total":          {dto.MetricType_COUNTER, []string{"listener", "pool"}},
	"wslb_http_requests_total":     {dto.MetricType_COUNTER, []string{"listener", "pool", "code"}},
	"wslb_bytes_total":             {dto.MetricType_COUNTER, []string{"listener", "pool", "backend", "direction"}},
	"wslb_backend_up":              {dto.MetricType_GAUGE, []string{"pool", "backend"}},
	"wslb_backend_connect_seconds": {dto.MetricType_HISTOGRAM, []string{"pool", "backend"}},
	"wslb_handshake_seconds":       {dto.MetricType_HISTOGRAM, []string{"listener"}},
	"wslb_idle_connections":        {dto.MetricType_GAUGE, []string{"pool", "backend"}},
	"wslb_tunnel_duration_seconds": {dto.MetricType_HISTOGRAM, []string{"listener", "pool"}},
	"wslb_tunnels_closed_total":    {dto.MetricType_COUNTER, []string{"listener", "pool", "reason"}},
	"wslb_errors_total":            {dto.MetricType_COUNTER, []string{"listener", "reason"}},
	"wslb_health_checks_total":     {dto.MetricType_COUNTER, []string{"pool", "backend", "result"}},
	"wslb_config_reloads_total":    {dto.MetricType_COUNTER, []string{"result"}},
	"wslb_dns_lookups_total":       {dto.MetricType_COUNTER, []string{"pool", "result"}},
	"wslb_backends":                {dto.MetricType_GAUGE, []string{"pool"}},
	"wslb_backend_state":           {dto.MetricType_GAUGE, []string{"pool", "backend", "state"}},
	"wslb_build_info":              {dto.MetricType_GAUGE, []string{"version", "goversion"}},
	// DESIGN.md Part two, "Fleet operations": accept pacing.
	"wslb_connections_accepted_total": {dto.MetricType_COUNTER, []string{"listener"}},
	// The agent check's (README's table; DESIGN.md names no metric for it).
	"wslb_agent_checks_total": {dto.MetricType_COUNTER, []string{"pool", "backend", "result"}},
	"wslb_backend_weight":     {dto.MetricType_GAUGE, []string{"pool", "backend"}},
}

// The fixed reason words of DESIGN.md's table; no other word may appear.
var (
	mErrorReasons  = []string{"no_backend", "dial", "timeout", "bad_request", "bad_handshake", "bad_upgrade_response", "tls", "limit", "proxy_protocol"}
	mClosedReasons = []string{"client", "backend", "idle", "drain", "removed", "error", "max_age", "rebalance", "maint"}
)

// scrapeResult is one scrape of /metrics, parsed.
type scrapeResult struct {
	fams map[string]*dto.MetricFamily
	raw  []byte
}

var scrapeClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// scrapeMetrics fetches and parses the text exposition as Prometheus would.
func scrapeMetrics(t *testing.T, admin string) scrapeResult {
	t.Helper()
	resp, err := scrapeClient.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("scrape: status %d: %s", resp.StatusCode, raw)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("scrape: Content-Type %q, want the text format", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("parse exposition: %v\n%s", err, raw)
	}
	return scrapeResult{fams: fams, raw: raw}
}

func scrapeLabels(m *dto.Metric) map[string]string {
	l := make(map[string]string, len(m.GetLabel()))
	for _, p := range m.GetLabel() {
		l[p.GetName()] = p.GetValue()
	}
	return l
}

// scrapeMatches reports whether m carries every name=value pair of kv.
func scrapeMatches(m *dto.Metric, kv []string) bool {
	l := scrapeLabels(m)
	for i := 0; i+1 < len(kv); i += 2 {
		if v, ok := l[kv[i]]; !ok || v != kv[i+1] {
			return false
		}
	}
	return true
}

// sum adds up the series of name that match kv (name, value pairs); for a
// histogram it adds up sample counts.
func (s scrapeResult) sum(name string, kv ...string) float64 {
	var total float64
	for _, m := range s.fams[name].GetMetric() {
		if !scrapeMatches(m, kv) {
			continue
		}
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		case m.Histogram != nil:
			total += float64(m.Histogram.GetSampleCount())
		case m.Untyped != nil:
			total += m.Untyped.GetValue()
		}
	}
	return total
}

// has reports whether a series of name with exactly the labels kv exists.
func (s scrapeResult) has(name string, kv ...string) bool {
	for _, m := range s.fams[name].GetMetric() {
		if len(m.GetLabel())*2 == len(kv) && scrapeMatches(m, kv) {
			return true
		}
	}
	return false
}

// lines is the exposition's lines of name, for failure messages.
func (s scrapeResult) lines(name string) string {
	var out []string
	for _, l := range strings.Split(string(s.raw), "\n") {
		if strings.HasPrefix(l, name) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// scrapeUntil scrapes until cond holds, at most 5 s, and returns the last
// scrape; what and the last scrape's lines of show explain a timeout.
func scrapeUntil(t *testing.T, admin, what string, cond func(s scrapeResult) bool, show ...string) scrapeResult {
	t.Helper()
	var s scrapeResult
	if wait.Until(wait.Timeout, func() bool {
		s = scrapeMetrics(t, admin)
		return cond(s)
	}) {
		return s
	}
	var detail []string
	for _, name := range show {
		detail = append(detail, s.lines(name))
	}
	t.Fatalf("timed out waiting for %s:\n%s", what, strings.Join(detail, "\n"))
	return s
}

// mWSBackend is a WebSocket echo server. On a path ending in /quarter it
// answers each message with its first quarter, so that the two directions
// carry different byte counts and a swapped rx/tx shows.
func mWSBackend(t *testing.T) string {
	t.Helper()
	return echo.WS(t, echo.WSOptions{Reply: func(r *http.Request, msg []byte) []byte {
		if strings.HasSuffix(r.URL.Path, "/quarter") {
			return msg[:len(msg)/4]
		}
		return msg
	}})
}

// mHTTPBackend answers a POST with the first third of its body and anything
// else with "ok", always with a Content-Length, so keep-alive conns are reused.
func mHTTPBackend(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method == http.MethodPost {
			b = b[:len(b)/3]
		} else {
			b = []byte("ok")
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// mDialWS opens an uncompressed WebSocket, so byte counts are predictable,
// that takes large messages.
func mDialWS(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	c := dialWS(t.Context(), t, url, &websocket.DialOptions{CompressionMode: websocket.CompressionDisabled})
	c.SetReadLimit(16 << 20)
	return c
}

// mExchange sends msg and returns the length of the answer.
func mExchange(t *testing.T, c *websocket.Conn, msg []byte) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	_, got, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return len(got)
}

// mRig is serve running an l7 listener "web" (routes only, no default pool)
// and an l4 listener "tcp", in front of a WebSocket backend (pool ws), a
// plain HTTP backend (pool plain) and a dead one (pool down).
type mRig struct {
	r                *running
	admin, web, tcp  string
	ws, plain, down  string
	wsURL, tcpWSURL  string
	plainURL, webURL string
}

func mStartRig(t *testing.T) *mRig {
	t.Helper()
	g := &mRig{ws: mWSBackend(t), plain: mHTTPBackend(t), down: loopback.DeadAddr(t)}
	// drain_timeout 0: a conn a failed test leaves open must not hold the
	// cleanup. The down pool's checks are fast so that it is known down soon.
	g.r = startServe(t, fmt.Sprintf(`
workers: 2
shutdown: {drain_timeout: 0s, close_spread: 0s}
admin: {listen: 127.0.0.1:0}
listeners:
  - name: web
    listen: 127.0.0.1:0
    mode: l7
    routes:
      - {path: /ws/, pool: ws}
      - {path: /http/, pool: plain}
      - {path: /down/, pool: down}
  - {name: tcp, listen: 127.0.0.1:0, mode: l4, pool: ws}
pools:
  - {name: ws, backends: [{address: %s}], health: {check: none}}
  - {name: plain, backends: [{address: %s}], health: {check: none}}
  - name: down
    backends: [{address: %s}]
    health: {check: tcp, interval: 50ms, timeout: 40ms, rise: 1, fall: 1}
`, g.ws, g.plain, g.down))
	g.admin = g.r.in.adminLn.Addr().String()
	g.web = g.r.in.addr(0)
	g.tcp = g.r.in.addr(1)
	g.wsURL = "ws://" + g.web + "/ws/"
	g.tcpWSURL = "ws://" + g.tcp + "/"
	g.webURL = "http://" + g.web
	g.plainURL = g.webURL + "/http/"
	return g
}

// TestMetricsContract: before any traffic every backend's wslb_backend_up
// and wslb_connections_active series exist (and every listener's error
// reasons, at 0); after one of each kind of traffic every family of
// DESIGN.md's table is exposed with exactly its type and labels, only fixed
// reason words appear, the Go and process collectors are there, and the
// whole exposition passes promlint.
func TestMetricsContract(t *testing.T) {
	g := mStartRig(t)

	s := scrapeMetrics(t, g.admin)
	for _, pb := range [][2]string{{"ws", g.ws}, {"plain", g.plain}, {"down", g.down}} {
		if !s.has("wslb_backend_up", "pool", pb[0], "backend", pb[1]) {
			t.Errorf("no wslb_backend_up for %s %s at start:\n%s", pb[0], pb[1], s.lines("wslb_backend_up"))
		}
		if !s.has("wslb_idle_connections", "pool", pb[0], "backend", pb[1]) {
			t.Errorf("no wslb_idle_connections for %s %s at start", pb[0], pb[1])
		}
	}
	for _, lpb := range [][3]string{{"web", "ws", g.ws}, {"web", "plain", g.plain}, {"web", "down", g.down}, {"tcp", "ws", g.ws}} {
		if !s.has("wslb_connections_active", "listener", lpb[0], "pool", lpb[1], "backend", lpb[2]) {
			t.Errorf("no wslb_connections_active for %v at start:\n%s", lpb, s.lines("wslb_connections_active"))
		} else if v := s.sum("wslb_connections_active", "listener", lpb[0], "pool", lpb[1], "backend", lpb[2]); v != 0 {
			t.Errorf("wslb_connections_active%v = %v before any traffic", lpb, v)
		}
	}
	if !s.has("wslb_connections_active", "listener", "tcp", "pool", "ws", "backend", g.ws) ||
		s.has("wslb_connections_active", "listener", "tcp", "pool", "plain", "backend", g.plain) {
		t.Errorf("an l4 listener has series only for its own pool:\n%s", s.lines("wslb_connections_active"))
	}
	for _, l := range []string{"web", "tcp"} {
		for _, r := range mErrorReasons {
			if !s.has("wslb_errors_total", "listener", l, "reason", r) {
				t.Errorf("no wslb_errors_total{listener=%s,reason=%s} at start", l, r)
			}
		}
	}
	// The Prometheus convention: one series, 1, naming the build.
	if !s.has("wslb_build_info", "version", buildVersion(), "goversion", runtime.Version()) || s.sum("wslb_build_info") != 1 {
		t.Errorf("wslb_build_info is not 1 with version %q and goversion %q:\n%s", buildVersion(), runtime.Version(), s.lines("wslb_build_info"))
	}
	// The ws and plain pools have checks off: up from the start.
	if s.sum("wslb_backend_up", "pool", "ws") != 1 || s.sum("wslb_backend_up", "pool", "plain") != 1 {
		t.Errorf("backends with check none not up:\n%s", s.lines("wslb_backend_up"))
	}

	// One of everything, so that every vector has a series to expose.
	c := mDialWS(t, g.wsURL)
	mExchange(t, c, []byte("hi"))
	c.CloseNow()
	c4 := mDialWS(t, g.tcpWSURL)
	mExchange(t, c4, []byte("hi"))
	c4.CloseNow()
	resp, err := scrapeClient.Get(g.plainURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	s = scrapeUntil(t, g.admin, "both tunnels closed and a failed check", func(s scrapeResult) bool {
		return s.sum("wslb_tunnels_closed_total") == 2 && s.sum("wslb_health_checks_total", "result", "fail") > 0
	}, "wslb_tunnels_closed_total", "wslb_health_checks_total")

	names := make([]string, 0, len(mDesignTable))
	for name := range mDesignTable {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		want := mDesignTable[name]
		t.Run(name, func(t *testing.T) {
			mf := s.fams[name]
			if mf == nil {
				// A vector is exposed only once it has a child: series with
				// fixed label values must be created at 0 up front.
				t.Fatalf("%s is not in the exposition", name)
			}
			if mf.GetType() != want.typ {
				t.Errorf("type %v, want %v", mf.GetType(), want.typ)
			}
			for _, m := range mf.GetMetric() {
				var got []string
				for _, p := range m.GetLabel() {
					got = append(got, p.GetName())
				}
				sort.Strings(got)
				wantLabels := slices.Sorted(slices.Values(want.labels))
				if !slices.Equal(got, wantLabels) {
					t.Errorf("series %v has labels %v, want %v", scrapeLabels(m), got, wantLabels)
				}
			}
		})
	}
	var wslb int
	for name := range s.fams {
		if strings.HasPrefix(name, "wslb_") {
			wslb++
			if _, ok := mDesignTable[name]; !ok {
				t.Errorf("%s is not in DESIGN.md's table", name)
			}
		}
	}
	for _, m := range s.fams["wslb_errors_total"].GetMetric() {
		if r := scrapeLabels(m)["reason"]; !slices.Contains(mErrorReasons, r) {
			t.Errorf("wslb_errors_total reason %q is not one of DESIGN.md's words", r)
		}
	}
	for _, m := range s.fams["wslb_tunnels_closed_total"].GetMetric() {
		if r := scrapeLabels(m)["reason"]; !slices.Contains(mClosedReasons, r) {
			t.Errorf("wslb_tunnels_closed_total reason %q is not one of DESIGN.md's words", r)
		}
	}
	for _, m := range s.fams["wslb_bytes_total"].GetMetric() {
		if d := scrapeLabels(m)["direction"]; d != "rx" && d != "tx" {
			t.Errorf("wslb_bytes_total direction %q", d)
		}
	}
	// The backend label is the resolved ip:port, never a client address.
	for _, name := range names {
		for _, m := range s.fams[name].GetMetric() {
			if b, ok := scrapeLabels(m)["backend"]; ok && b != g.ws && b != g.plain && b != g.down {
				t.Errorf("%s: backend label %q is not a configured backend's ip:port", name, b)
			}
		}
	}
	for _, prefix := range []string{"go_goroutines", "go_memstats_", "process_cpu_seconds_total", "process_open_fds"} {
		found := false
		for name := range s.fams {
			found = found || strings.HasPrefix(name, prefix)
		}
		if !found {
			t.Errorf("no %s* family: the Go and process collectors are missing", prefix)
		}
	}

	problems, err := promlint.New(bytes.NewReader(s.raw)).Lint()
	if err != nil {
		t.Fatalf("promlint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// TestMetricsTunnelsCounted holds N WebSocket tunnels through the l7
// listener and M WebSocket conns through the l4 listener open at once: the
// gauges show exactly them, the counters count them, and once the clients
// drop them every gauge is back to 0 and each close is counted as the
// client's.
func TestMetricsTunnelsCounted(t *testing.T) {
	const n, m = 3, 2
	g := mStartRig(t)
	before := scrapeMetrics(t, g.admin)

	var conns []*websocket.Conn
	for range n {
		c := mDialWS(t, g.wsURL)
		mExchange(t, c, []byte("l7"))
		conns = append(conns, c)
	}
	for range m {
		c := mDialWS(t, g.tcpWSURL)
		mExchange(t, c, []byte("l4"))
		conns = append(conns, c)
	}
	s := scrapeUntil(t, g.admin, "every conn active", func(s scrapeResult) bool {
		return s.sum("wslb_connections_active", "listener", "web") == n && s.sum("wslb_connections_active", "listener", "tcp") == m
	}, "wslb_connections_active")
	for _, tc := range []struct {
		what      string
		got, want float64
	}{
		{"connections_active{web,ws,backend}", s.sum("wslb_connections_active", "listener", "web", "pool", "ws", "backend", g.ws), n},
		{"connections_active{tcp,ws,backend}", s.sum("wslb_connections_active", "listener", "tcp", "pool", "ws", "backend", g.ws), m},
		{"connections_active{web, other pools}", s.sum("wslb_connections_active", "listener", "web") - s.sum("wslb_connections_active", "listener", "web", "pool", "ws"), 0},
		{"connections_total{web,ws}", s.sum("wslb_connections_total", "listener", "web", "pool", "ws", "backend", g.ws), n},
		{"connections_total{tcp,ws}", s.sum("wslb_connections_total", "listener", "tcp", "pool", "ws", "backend", g.ws), m},
		{"upgrades_total{web,ws}", s.sum("wslb_upgrades_total", "listener", "web", "pool", "ws"), n},
		{"upgrades_total{tcp}", s.sum("wslb_upgrades_total", "listener", "tcp"), 0},
		{"http_requests_total{web,ws,101}", s.sum("wslb_http_requests_total", "listener", "web", "pool", "ws", "code", "101"), n},
		{"http_requests_total{web} all codes", s.sum("wslb_http_requests_total", "listener", "web"), n},
		{"tunnels_closed_total while open", s.sum("wslb_tunnels_closed_total"), 0},
		{"errors_total", s.sum("wslb_errors_total") - before.sum("wslb_errors_total"), 0},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.what, tc.got, tc.want)
		}
	}
	// One handshake per l7 client conn; one dial per conn of either listener.
	if got := s.sum("wslb_handshake_seconds", "listener", "web") - before.sum("wslb_handshake_seconds", "listener", "web"); got != n {
		t.Errorf("handshake_seconds_count{web} went up by %v, want %d", got, n)
	}
	if got := s.sum("wslb_backend_connect_seconds", "pool", "ws", "backend", g.ws) - before.sum("wslb_backend_connect_seconds", "pool", "ws", "backend", g.ws); got != n+m {
		t.Errorf("backend_connect_seconds_count{ws} went up by %v, want %d", got, n+m)
	}

	for _, c := range conns {
		c.CloseNow() // the client goes away: no close handshake the backend could finish first
	}
	// One scrape gathers the families one after another, so a tunnel that
	// ends meanwhile may be in one and not yet in another: wait for all.
	s = scrapeUntil(t, g.admin, "active back to 0", func(s scrapeResult) bool {
		return s.sum("wslb_connections_active") == 0 && s.sum("wslb_tunnels_closed_total") == n+m &&
			s.sum("wslb_tunnel_duration_seconds") == n+m
	}, "wslb_connections_active", "wslb_tunnels_closed_total", "wslb_tunnel_duration_seconds")
	for _, tc := range []struct {
		what      string
		got, want float64
	}{
		{"tunnels_closed_total{web,ws,client}", s.sum("wslb_tunnels_closed_total", "listener", "web", "pool", "ws", "reason", "client"), n},
		{"tunnels_closed_total{tcp,ws,client}", s.sum("wslb_tunnels_closed_total", "listener", "tcp", "pool", "ws", "reason", "client"), m},
		{"tunnel_duration_seconds_count{web,ws}", s.sum("wslb_tunnel_duration_seconds", "listener", "web", "pool", "ws"), n},
		{"tunnel_duration_seconds_count{tcp,ws}", s.sum("wslb_tunnel_duration_seconds", "listener", "tcp", "pool", "ws"), m},
		{"connections_total{web,ws} after close", s.sum("wslb_connections_total", "listener", "web", "pool", "ws"), n},
		{"errors_total after close", s.sum("wslb_errors_total") - before.sum("wslb_errors_total"), 0},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.what, tc.got, tc.want)
		}
	}
}

// mWithin asserts got is at least want and at most want plus an allowance
// for what a WebSocket conn sends besides payloads: 1% and 1 KiB.
func mWithin(t *testing.T, what string, got, want float64) {
	t.Helper()
	if got < want || got > want*1.01+1024 {
		t.Errorf("%s = %v, want %v (+1%% +1 KiB at most)", what, got, want)
	}
}

// mFrameHead is the size of a WebSocket frame header for an n-byte payload
// (RFC 6455 §5.2): 2 bytes, a 2- or 8-byte extended length, and the 4-byte
// mask a client adds.
func mFrameHead(n int, masked bool) int {
	h := 2
	switch {
	case n > 65535:
		h += 8
	case n > 125:
		h += 2
	}
	if masked {
		h += 4
	}
	return h
}

// TestMetricsBytes sends known payloads through each kind of path and checks
// wslb_bytes_total both ways. The backend answers with a quarter of what it
// gets, so a swapped rx and tx would show. Through an l7 tunnel exactly what
// follows the heads counts: payloads and frame headers (coder/websocket sends
// a message as one frame). Through l4 the whole stream counts, the HTTP
// handshake included, which the 1% + 1 KiB allowance covers. A plain request
// counts its bodies, exactly.
func TestMetricsBytes(t *testing.T) {
	const size, k = 100 << 10, 4
	g := mStartRig(t)
	payload := make([]byte, size)
	rand.Read(payload)

	for _, tc := range []struct {
		listener, url string
		exact         bool
	}{
		{"web", g.wsURL + "quarter", true},
		{"tcp", g.tcpWSURL + "quarter", false},
	} {
		t.Run(tc.listener, func(t *testing.T) {
			c := mDialWS(t, tc.url)
			for range k {
				if got := mExchange(t, c, payload); got != size/4 {
					t.Fatalf("answer of %d bytes, want %d", got, size/4)
				}
			}
			c.CloseNow()
			// Bytes are certain once the tunnel has ended.
			s := scrapeUntil(t, g.admin, "tunnel closed", func(s scrapeResult) bool {
				return s.sum("wslb_tunnels_closed_total", "listener", tc.listener) == 1
			}, "wslb_tunnels_closed_total")
			rx := s.sum("wslb_bytes_total", "listener", tc.listener, "pool", "ws", "backend", g.ws, "direction", "rx")
			tx := s.sum("wslb_bytes_total", "listener", tc.listener, "pool", "ws", "backend", g.ws, "direction", "tx")
			if tc.exact {
				wantRx, wantTx := k*(size+mFrameHead(size, true)), k*(size/4+mFrameHead(size/4, false))
				if rx != float64(wantRx) || tx != float64(wantTx) {
					t.Errorf("bytes_total rx=%v tx=%v, want payloads and frame headers: rx=%d tx=%d", rx, tx, wantRx, wantTx)
				}
			}
			mWithin(t, "bytes_total{rx}", rx, k*size)
			mWithin(t, "bytes_total{tx}", tx, k*size/4)
		})
	}

	t.Run("plain", func(t *testing.T) {
		cl := &http.Client{Timeout: 10 * time.Second}
		defer cl.CloseIdleConnections()
		for range k {
			resp, err := cl.Post(g.plainURL+"echo", "application/octet-stream", bytes.NewReader(payload))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || len(b) != size/3 {
				t.Fatalf("status %d, %d bytes", resp.StatusCode, len(b))
			}
		}
		s := scrapeUntil(t, g.admin, "requests done", func(s scrapeResult) bool {
			return s.sum("wslb_connections_active", "pool", "plain") == 0 && s.sum("wslb_connections_total", "pool", "plain") == k
		}, "wslb_connections_active", "wslb_connections_total")
		rx := s.sum("wslb_bytes_total", "listener", "web", "pool", "plain", "backend", g.plain, "direction", "rx")
		tx := s.sum("wslb_bytes_total", "listener", "web", "pool", "plain", "backend", g.plain, "direction", "tx")
		if rx != k*size || tx != k*(size/3) {
			t.Errorf("bytes_total rx=%v tx=%v, want the body bytes: rx=%d tx=%d", rx, tx, k*size, k*(size/3))
		}
	})
}

// TestMetricsBytesWhileOpen: wslb_bytes_total moves while a tunnel is open,
// not only at its close, so that rate() over a long-lived tunnel means
// something. 300 KiB each way, well under the relay's 1 MiB copy chunk, must
// show up within a few seconds through either kind of listener.
func TestMetricsBytesWhileOpen(t *testing.T) {
	const size, k = 100 << 10, 3
	g := mStartRig(t)
	payload := make([]byte, size)
	listeners := map[string]string{"web": g.wsURL, "tcp": g.tcpWSURL}
	for _, url := range listeners {
		c := mDialWS(t, url)
		for range k {
			mExchange(t, c, payload)
		}
	}
	scrapeUntil(t, g.admin, "bytes counted while the tunnels are open", func(s scrapeResult) bool {
		for l := range listeners {
			if s.sum("wslb_bytes_total", "listener", l, "direction", "rx") < k*size ||
				s.sum("wslb_bytes_total", "listener", l, "direction", "tx") < k*size {
				return false
			}
		}
		return s.sum("wslb_tunnels_closed_total") == 0
	}, "wslb_bytes_total", "wslb_tunnels_closed_total")
}

// TestMetricsPlainHTTP counts plain requests by code, the pool that served
// them, and what they leave behind: cached keep-alive backend conns and no
// active ones.
func TestMetricsPlainHTTP(t *testing.T) {
	const reqs = 5
	g := mStartRig(t)
	before := scrapeMetrics(t, g.admin)
	cl := &http.Client{Timeout: 10 * time.Second}
	defer cl.CloseIdleConnections()
	status := func(url string) int {
		t.Helper()
		resp, err := cl.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := range reqs {
		if code := status(g.plainURL + strconv.Itoa(i)); code != 200 {
			t.Fatalf("GET /http/: %d", code)
		}
	}
	// The listener has routes and no pool: any other path is a 404.
	if code := status(g.webURL + "/nowhere"); code != 404 {
		t.Fatalf("GET /nowhere: %d, want 404", code)
	}
	// The down pool's only backend is dead; once its check says so, 503.
	scrapeUntil(t, g.admin, "the dead backend reported down", func(s scrapeResult) bool {
		return s.has("wslb_backend_up", "pool", "down", "backend", g.down) && s.sum("wslb_backend_up", "pool", "down") == 0
	}, "wslb_backend_up")
	if code := status(g.webURL + "/down/x"); code != 503 {
		t.Fatalf("GET /down/x: %d, want 503", code)
	}

	s := scrapeMetrics(t, g.admin)
	for _, tc := range []struct {
		what      string
		got, want float64
	}{
		{"http_requests_total{web,plain,200}", s.sum("wslb_http_requests_total", "listener", "web", "pool", "plain", "code", "200"), reqs},
		{"http_requests_total{web,\"\",404}", s.sum("wslb_http_requests_total", "listener", "web", "pool", "", "code", "404"), 1},
		{"http_requests_total{web,down,503}", s.sum("wslb_http_requests_total", "listener", "web", "pool", "down", "code", "503"), 1},
		{"http_requests_total{web} all", s.sum("wslb_http_requests_total", "listener", "web"), reqs + 2},
		{"errors_total{web,no_backend}", s.sum("wslb_errors_total", "listener", "web", "reason", "no_backend") - before.sum("wslb_errors_total", "listener", "web", "reason", "no_backend"), 1},
		{"errors_total{web} all", s.sum("wslb_errors_total", "listener", "web") - before.sum("wslb_errors_total", "listener", "web"), 1},
		{"connections_total{web,plain}", s.sum("wslb_connections_total", "listener", "web", "pool", "plain", "backend", g.plain), reqs},
		{"connections_active (none in flight)", s.sum("wslb_connections_active"), 0},
		{"connections_total{web,down} (never dialed)", s.sum("wslb_connections_total", "pool", "down"), 0},
		{"upgrades_total", s.sum("wslb_upgrades_total"), 0},
		{"tunnels_closed_total", s.sum("wslb_tunnels_closed_total"), 0},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.what, tc.got, tc.want)
		}
	}
	// Sequential requests reuse backend conns: at least one dial, at most
	// one per worker (2), and what was dialed is now cached, idle.
	dials := s.sum("wslb_backend_connect_seconds", "pool", "plain", "backend", g.plain)
	if dials < 1 || dials > 2 {
		t.Errorf("backend_connect_seconds_count{plain} = %v, want 1 or 2 (keep-alive reuse)", dials)
	}
	if idle := s.sum("wslb_idle_connections", "pool", "plain", "backend", g.plain); idle < 1 || idle > dials {
		t.Errorf("idle_connections{plain} = %v after %v dials, want the dialed conns cached", idle, dials)
	}
	if got := s.sum("wslb_handshake_seconds", "listener", "web") - before.sum("wslb_handshake_seconds", "listener", "web"); got < 1 {
		t.Errorf("handshake_seconds_count{web} went up by %v", got)
	}
}

// mReasons is wslb_tunnels_closed_total by reason, for failure messages.
func mReasons(s scrapeResult) map[string]float64 {
	out := map[string]float64{}
	for _, m := range s.fams["wslb_tunnels_closed_total"].GetMetric() {
		out[scrapeLabels(m)["reason"]] += m.GetCounter().GetValue()
	}
	return out
}

// mStatusDraining reads the top-level "draining" of /status.json.
func mStatusDraining(t *testing.T, admin string) bool {
	t.Helper()
	resp, err := scrapeClient.Get("http://" + admin + "/status.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Draining *bool `json:"draining"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || st.Draining == nil {
		t.Fatalf("/status.json: no top-level draining (%v)", err)
	}
	return *st.Draining
}

// TestReadyzFlipsDuringDrain: /readyz is 200 while serving and 503 as soon as
// the drain starts, while the admin listener keeps serving /metrics and
// /status.json for as long as conns remain. Of two open tunnels, the one its
// client closes counts as "client"; the drain ends the other at drain_timeout.
func TestReadyzFlipsDuringDrain(t *testing.T) {
	ws := mWSBackend(t)
	r := startServe(t, fmt.Sprintf(`
workers: 1
shutdown: {drain_timeout: 1s, close_spread: 0s}
admin: {listen: 127.0.0.1:0}
listeners:
  - {name: web, listen: 127.0.0.1:0, mode: l7, pool: ws}
pools:
  - {name: ws, backends: [{address: %s}], health: {check: none}}
`, ws))
	admin := r.in.adminLn.Addr().String()
	url := "ws://" + r.in.addr(0) + "/"
	if code := get(t, "http://"+admin+"/readyz"); code != 200 {
		t.Fatalf("/readyz %d while serving", code)
	}
	if mStatusDraining(t, admin) {
		t.Fatal("/status.json says draining before the drain")
	}
	leaves, stays := mDialWS(t, url), mDialWS(t, url)
	mExchange(t, leaves, []byte("a"))
	mExchange(t, stays, []byte("b"))
	scrapeUntil(t, admin, "both tunnels active", func(s scrapeResult) bool {
		return s.sum("wslb_connections_active") == 2
	}, "wslb_connections_active")

	r.cancel() // as SIGTERM does
	if !wait.Until(wait.Timeout, func() bool { return get(t, "http://"+admin+"/readyz") == 503 }) {
		t.Fatal("/readyz never turned 503 during the drain")
	}
	if !mStatusDraining(t, admin) {
		t.Error("/status.json does not say draining during the drain")
	}
	if s := scrapeMetrics(t, admin); s.sum("wslb_connections_active") != 2 {
		t.Errorf("connections_active = %v during the drain, want the 2 still open", s.sum("wslb_connections_active"))
	}
	leaves.CloseNow()
	scrapeUntil(t, admin, "the client-closed tunnel counted", func(s scrapeResult) bool {
		return s.sum("wslb_connections_active") == 1 && s.sum("wslb_tunnels_closed_total", "reason", "client") == 1
	}, "wslb_connections_active", "wslb_tunnels_closed_total")
	if code := get(t, "http://"+admin+"/readyz"); code != 503 {
		t.Errorf("/readyz %d later in the drain", code)
	}

	if code := r.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	// The admin listener is gone with the process; read the registry itself.
	// (Which reason the drained tunnel gets is TestMetricsDrainReason's.)
	s := mGathered(t, r)
	if got := s.sum("wslb_tunnels_closed_total", "listener", "web", "pool", "ws", "reason", "client"); got != 1 {
		t.Errorf("tunnels_closed_total{client} = %v, want 1; by reason: %v", got, mReasons(s))
	}
	if got := s.sum("wslb_tunnels_closed_total"); got != 2 {
		t.Errorf("tunnels_closed_total = %v, want 2; by reason: %v", got, mReasons(s))
	}
	if got := s.sum("wslb_connections_active"); got != 0 {
		t.Errorf("connections_active = %v after the drain", got)
	}
	if _, _, err := stays.Read(t.Context()); err == nil {
		t.Error("the tunnel outlived the drain")
	}
}

// mGathered reads serve's registry directly, for after serve has returned
// and its admin listener with it.
func mGathered(t *testing.T, r *running) scrapeResult {
	t.Helper()
	mfs, err := r.in.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	s := scrapeResult{fams: map[string]*dto.MetricFamily{}}
	for _, mf := range mfs {
		s.fams[mf.GetName()] = mf
	}
	return s
}

// TestMetricsDrainReason: every tunnel and l4 conn still open when
// drain_timeout ends is counted under reason "drain", however many are cut
// at once. An l7 conn is closed on cancel by its own context hook as well as
// by the relay's, so the relay can see its copies fail before it learns of
// the cancel; the reason must come from the context all the same.
func TestMetricsDrainReason(t *testing.T) {
	const n = 40
	ws := mWSBackend(t)
	r := startServe(t, fmt.Sprintf(`
workers: 2
shutdown: {drain_timeout: 0s, close_spread: 0s}
admin: {listen: ""}
listeners:
  - {name: web, listen: 127.0.0.1:0, mode: l7, pool: ws}
  - {name: tcp, listen: 127.0.0.1:0, mode: l4, pool: ws}
pools:
  - {name: ws, backends: [{address: %s}], health: {check: none}}
`, ws))
	for range n {
		for i := range r.in.gen.Load().listeners {
			mExchange(t, mDialWS(t, "ws://"+r.in.addr(i)+"/"), []byte("x"))
		}
	}
	r.cancel()
	r.exitCode(t, 10*time.Second)
	s := mGathered(t, r)
	for _, l := range []string{"web", "tcp"} {
		if got := s.sum("wslb_tunnels_closed_total", "listener", l, "reason", "drain"); got != n {
			by := map[string]float64{}
			for _, m := range s.fams["wslb_tunnels_closed_total"].GetMetric() {
				if lb := scrapeLabels(m); lb["listener"] == l {
					by[lb["reason"]] += m.GetCounter().GetValue()
				}
			}
			t.Errorf("listener %s: %v of %d drained tunnels counted as drain; by reason: %v", l, got, n, by)
		}
	}
}
