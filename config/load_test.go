package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// testdata/design.yaml is the config block of DESIGN.md, copied verbatim.
func TestLoadDesignExample(t *testing.T) {
	c, err := parseFile("testdata/design.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	wantCfg := &Config{
		Workers:  0,
		Shutdown: Shutdown{DrainTimeout: 30 * time.Second, CloseSpread: 5 * time.Second},
		Admin:    Admin{Listen: "127.0.0.1:9090"},
		Resolver: Resolver{Servers: []string{}, Interval: 5 * time.Second, Timeout: 2 * time.Second, Hold: 30 * time.Second},
		Listeners: []Listener{{
			Name:   "public",
			Listen: Addrs{"0.0.0.0:8080"},
			Mode:   ModeL7,
			Pool:   "ws",
			Timeouts: Timeouts{Connect: 5 * time.Second, Handshake: 10 * time.Second, Idle: time.Hour, Keepalive: 75 * time.Second,
				Send: time.Minute, ClientBody: time.Minute},
			TLS: &TLS{Cert: "certs/server.crt", Key: "certs/server.key", MinVersion: "1.2", RedirectHTTP: true, HTTP2: true},
			HTTP: HTTP{
				MaxHeaderBytes:   32768,
				MaxBodyBytes:     1073741824,
				ForwardedHeaders: true,
				TrustedProxies:   []string{},
				PreserveHost:     true,
				HTTPSPort:        443,
				RedirectCode:     308,
				RequestHeaders:   map[string]string{},
				ResponseHeaders:  map[string]string{},
				UpgradeProtocols: []string{"websocket"},
				MinBodyRate:      240,
			},
			Routes: []Route{
				{Path: "/websocket/", Pool: "ws", StripPrefix: true},
				{Path: "/", Static: "./web", Fallback: "/index.html"},
			},
		}},
		Pools: []Pool{{
			Name:    "ws",
			Balance: BalanceLeastConn,
			Backends: []Backend{
				{Address: "127.0.0.1:9001", Weight: 1, Addr: netip.MustParseAddrPort("127.0.0.1:9001")},
				{Address: "127.0.0.1:9002", Weight: 1, Addr: netip.MustParseAddrPort("127.0.0.1:9002")},
			},
			IdlePerWorker: 32,
			Health: Health{Check: CheckTCP, Path: "/healthz", ExpectStatus: 200,
				Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3,
				Agent: Agent{Interval: 5 * time.Second}},
			Rebalance: Rebalance{Tolerance: 0.2, Rate: 10},
			Passive:   Passive{MaxFails: 3, FailTimeout: 10 * time.Second},
		}},
		File: "testdata/design.yaml",
	}
	if !reflect.DeepEqual(c, wantCfg) {
		t.Errorf("got  %+v\nwant %+v", c, wantCfg)
	}
}

// A minimal file gets every documented default: the same values as the full
// example, which spells them all out.
func TestDefaults(t *testing.T) {
	c := mustParse(t, `
listeners:
  - name: web
    listen: 127.0.0.1:0
    mode: l7
    tls: {cert: c.pem, key: k.pem}
    routes:
      - path: /
        pool: ws
  - name: raw
    listen: :0
    mode: l4
    pool: ws
pools:
  - name: ws
    backends:
      - address: 127.0.0.1:9001
`)
	full, err := parseFile("testdata/design.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	fl, fp := full.Listeners[0], full.Pools[0]
	web, raw, ws := c.Listeners[0], c.Listeners[1], c.Pools[0]

	if c.Workers != full.Workers || c.Shutdown != full.Shutdown || c.Admin != full.Admin {
		t.Errorf("top level = %d %+v %+v, want %d %+v %+v", c.Workers, c.Shutdown, c.Admin, full.Workers, full.Shutdown, full.Admin)
	}
	for _, l := range []Listener{web, raw} {
		if l.Timeouts != fl.Timeouts || l.MaxConnections != 0 || l.ProxyProtocol != "" || l.AcceptProxyProtocol {
			t.Errorf("listener %s = %+v, want the documented defaults", l.Name, l)
		}
	}
	if !reflect.DeepEqual(*web.TLS, TLS{Cert: "c.pem", Key: "k.pem", MinVersion: "1.2", RedirectHTTP: true, HTTP2: true}) {
		t.Errorf("tls = %+v", *web.TLS)
	}
	if !reflect.DeepEqual(web.HTTP, fl.HTTP) {
		t.Errorf("l7 http = %+v\nwant %+v", web.HTTP, fl.HTTP)
	}
	if raw.TLS != nil || !reflect.DeepEqual(raw.HTTP, HTTP{}) {
		t.Errorf("l4 listener got l7 defaults: tls %v, http %+v", raw.TLS, raw.HTTP)
	}
	if web.Routes[0].StripPrefix {
		t.Error("strip_prefix defaults to true, want false")
	}
	if ws.Balance != fp.Balance || ws.IdlePerWorker != fp.IdlePerWorker || ws.MaxConnectionsPerBackend != 0 ||
		ws.SlowStart != 0 || ws.Health != fp.Health || ws.Passive != fp.Passive || ws.Backends[0].Weight != 1 {
		t.Errorf("pool = %+v\nwant the defaults of %+v", ws, fp)
	}
}

// A key that is present keeps its value even when it is the zero value; only
// absent (or null) keys get defaults.
func TestPresentZeroIsKept(t *testing.T) {
	c := mustParse(t, `
shutdown:
  close_spread: 0
admin:
  listen: ""
listeners:
  - name: web
    listen: 127.0.0.1:0
    mode: l7
    tls: {cert: c.pem, key: k.pem, redirect_http: false}
    http:
      forwarded_headers: false
      preserve_host: false
      upgrade_protocols: []
      max_body_bytes: 0
    timeouts:
      connect: ~
pools:
  - name: ws
    idle_per_worker: 0
    slow_start: 0
    health: {check: none}
    backends:
      - address: 127.0.0.1:9001
`)
	l, p := c.Listeners[0], c.Pools[0]
	checks := []struct {
		name      string
		got, want any
	}{
		{"close_spread", c.Shutdown.CloseSpread, time.Duration(0)},
		{"drain_timeout default", c.Shutdown.DrainTimeout, 30 * time.Second},
		{"admin.listen", c.Admin.Listen, ""},
		{"redirect_http", l.TLS.RedirectHTTP, false},
		{"forwarded_headers", l.HTTP.ForwardedHeaders, false},
		{"preserve_host", l.HTTP.PreserveHost, false},
		{"upgrade_protocols", len(l.HTTP.UpgradeProtocols), 0},
		{"max_body_bytes", l.HTTP.MaxBodyBytes, Size(0)},
		{"null connect gets default", l.Timeouts.Connect, 5 * time.Second},
		{"idle_per_worker", p.IdlePerWorker, 0},
		{"slow_start", p.SlowStart, time.Duration(0)},
		{"check", p.Health.Check, CheckNone},
		{"health.interval default", p.Health.Interval, 2 * time.Second},
	}
	for _, tc := range checks {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %v, want %v", tc.got, tc.want)
			}
		})
	}
}

func TestAliases(t *testing.T) {
	c := mustParse(t, `
listeners:
  - name: a
    listen: 127.0.0.1:0
    mode: l4
    pool: ws
    timeouts: &fast {connect: 1s, idle: 2m}
  - name: b
    listen: 127.0.0.1:0
    mode: l4
    pool: ws
    timeouts: *fast
pools:
  - name: ws
    backends:
      - address: 127.0.0.1:9001
`)
	b := c.Listeners[1].Timeouts
	if b.Connect != time.Second || b.Idle != 2*time.Minute || b.Keepalive != 75*time.Second {
		t.Errorf("aliased timeouts = %+v", b)
	}
}

const validPools = `
pools:
  - name: ws
    backends:
      - address: 127.0.0.1:9001
`

// Decoding problems: unknown keys, bad values and wrong kinds, each with the
// line of the key and the full path.
func TestDecodeProblems(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		wants []want
	}{
		{"unknown top-level key", `
workers: 1
listen: :80
` + validPools + `listeners: [{name: a, listen: ":0", mode: l4, pool: ws}]`,
			[]want{{2, "listen", "unknown key (known: admin, listeners, pools, resolver, shutdown, workers)"}}},
		{"unknown listener key", `
listeners:
  - name: a
    listen: :0
    mode: l4
    pol: ws
    pool: ws
` + validPools,
			[]want{{5, "listeners[0].pol", "unknown key (known: accept_proxy_protocol, "}}},
		{"unknown nested timeouts key", `
listeners:
  - name: a
    listen: :0
    mode: l4
    pool: ws
    timeouts:
      conect: 1s
` + validPools,
			[]want{{7, "listeners[0].timeouts.conect", "unknown key (known: client_body, connect, handshake, idle, keepalive, send)"}}},
		{"unknown backend key", `
listeners: [{name: a, listen: ":0", mode: l4, pool: ws}]
pools:
  - name: ws
    backends:
      - address: 127.0.0.1:9001
        wieght: 2
`,
			[]want{{6, "pools[0].backends[0].wieght", "unknown key (known: address, weight)"}}},
		{"bad duration", `
shutdown:
  drain_timeout: 5 seconds
listeners: [{name: a, listen: ":0", mode: l4, pool: ws}]
` + validPools,
			[]want{{2, "shutdown.drain_timeout", `want a duration such as 300ms, 5s or 1h, got "5 seconds"`}}},
		{"duration without unit", `
listeners: [{name: a, listen: ":0", mode: l4, pool: ws, timeouts: {idle: 30}}]
` + validPools,
			[]want{{1, "listeners[0].timeouts.idle", `got "30"`}}},
		{"bad int", `
workers: many
listeners: [{name: a, listen: ":0", mode: l4, pool: ws}]
` + validPools,
			[]want{{1, "workers", `want a whole number, got "many"`}}},
		{"fraction is not an int", `
workers: 1.5
listeners: [{name: a, listen: ":0", mode: l4, pool: ws}]
` + validPools,
			[]want{{1, "workers", `want a whole number, got "1.5"`}}},
		{"bad bool", `
listeners: [{name: a, listen: ":0", mode: l4, pool: ws, accept_proxy_protocol: maybe}]
` + validPools,
			[]want{{1, "listeners[0].accept_proxy_protocol", `want true or false, got "maybe"`}}},
		{"mapping where a list belongs", `
listeners:
  name: a
  mode: l4
` + validPools,
			[]want{{2, "listeners", "want a list, got a mapping"}}},
		{"value where a mapping belongs", `
listeners:
  - name: a
    listen: :0
    mode: l4
    pool: ws
    timeouts: 5s
` + validPools,
			[]want{{6, "listeners[0].timeouts", `want a mapping, got "5s"`}}},
		{"list where a value belongs", `
listeners:
  - name: [a, b]
    listen: :0
    mode: l4
    pool: ws
` + validPools,
			[]want{{2, "listeners[0].name", "want a string, got a list"}}},
		{"duplicate key", `
listeners:
  - name: a
    listen: :0
    mode: l4
    pool: ws
    mode: l7
` + validPools,
			[]want{{6, "listeners[0].mode", "duplicate key (first on line 4)"}}},
		{"merge key", `
base: &base {mode: l4, pool: ws}
listeners:
  - name: a
    listen: :0
    <<: *base
` + validPools,
			[]want{
				{1, "base", "unknown key"},
				{3, "listeners[0].mode", "mode is required"},
				{5, "listeners[0].<<", "merge keys are not supported"},
			}},
		{"empty keys", `
"": 1
listeners:
  - name: a
    ? 
    listen: :0
    mode: l4
    pool: ws
` + validPools,
			[]want{{1, `""`, "empty key"}, {4, `listeners[0].""`, "empty key"}}},
		{"second document", `
listeners: [{name: a, listen: ":0", mode: l4, pool: ws}]
` + validPools + `---
workers: 2
`,
			[]want{{7, "", "only one YAML document is allowed"}}},
		{"syntax error", `
workers: 1
shutdown:
  drain_timeout: 1s
    close_spread: 2s
`,
			[]want{{4, "", "invalid YAML: mapping values are not allowed in this context"}}},
		{"syntax error without a line", `
workers: *nope
`,
			[]want{{0, "", "invalid YAML: unknown anchor 'nope' referenced"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { expect(t, tc.src, tc.wants...) })
	}
}

// One file with many problems reports all of them, in line order.
func TestAllProblemsReported(t *testing.T) {
	expect(t, `
listeners:
  - name: a
    listen: :0
    mode: l4
    pool: ws
    timeouts:
      conect: 1s
      idle: 5 seconds
    http: {}
  - name: a
    listen: nowhere:80
    mode: l7
    extra: 1
pools:
  - name: ws
    balance: fastest
    backends:
      - address: 127.0.0.1:9001
        weight: 0
`,
		want{7, "listeners[0].timeouts.conect", "unknown key"},
		want{8, "listeners[0].timeouts.idle", "want a duration"},
		want{9, "listeners[0].http", "only valid on l7 listeners"},
		want{10, "listeners[1].name", `duplicate listener name "a" (first on line 2)`},
		want{11, "listeners[1].listen", "hostnames are not resolved"},
		want{13, "listeners[1].extra", "unknown key"},
		want{16, "pools[0].balance", "unknown value"},
		want{19, "pools[0].backends[0].weight", "must be from 1 to 1000, got 0"},
	)
}

func TestEmptyFile(t *testing.T) {
	expect(t, "", want{1, "listeners", "no listeners"})
	expect(t, "# nothing here\n", want{1, "listeners", "no listeners"})
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	src := "listeners: [{name: a, listen: \":0\", mode: l4}]\n"
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 1 {
		t.Fatalf("Load = %v, want one problem", err)
	}
	if want := path + ":1: listeners[0].pool: an l4 listener needs a pool"; ps[0].String() != want {
		t.Errorf("got %q, want %q", ps[0], want)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want ErrNotExist", err)
	}
}
