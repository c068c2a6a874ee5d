package config

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// oneListener is five lines that make a valid listener for pool ws; pool cases
// append to it, so their own text starts on line 6.
const oneListener = `
listeners:
  - name: a
    listen: 127.0.0.1:0
    mode: l4
    pool: ws`

func TestValidateTopLevel(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		wants []want
	}{
		{"negative workers", `
workers: -1
shutdown:
  drain_timeout: -1s
  close_spread: -2s` + oneListener + validPools,
			[]want{
				{1, "workers", "must not be negative, got -1"},
				{3, "shutdown.drain_timeout", "must not be negative, got -1s"},
				{4, "shutdown.close_spread", "must not be negative, got -2s"},
			}},
		{"zero shutdown is fine", `
shutdown: {drain_timeout: 0s, close_spread: 0s}` + oneListener + validPools, nil},
		{"admin hostname", `
admin:
  listen: localhost:9090` + oneListener + validPools,
			[]want{{2, "admin.listen", `host "localhost" must be an IP address or a go-sockaddr template; hostnames are not resolved`}}},
		{"no listeners key", validPools, []want{{1, "listeners", "no listeners"}}},
		{"empty listeners", `
listeners: []` + validPools, []want{{1, "listeners", "no listeners"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { expect(t, tc.src, tc.wants...) })
	}
}

func TestValidateListeners(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		wants []want
	}{
		{"name missing", `
listeners:
  - listen: 127.0.0.1:0
    mode: l4
    pool: ws`,
			[]want{{2, "listeners[0].name", "name is required"}}},
		{"duplicate names", `
listeners:
  - name: a
    listen: 127.0.0.1:0
    mode: l4
    pool: ws
  - name: a
    listen: 127.0.0.1:0
    mode: l4
    pool: ws`,
			[]want{{6, "listeners[1].name", `duplicate listener name "a" (first on line 2)`}}},
		{"listen missing", `
listeners:
  - name: a
    mode: l4
    pool: ws`,
			[]want{{2, "listeners[0].listen", "listen is required"}}},
		{"listen without port", `
listeners:
  - name: a
    listen: 127.0.0.1
    mode: l4
    pool: ws`,
			[]want{{3, "listeners[0].listen", `invalid address "127.0.0.1": use ip:port, :port or a go-sockaddr template`}}},
		{"listen bad port", `
listeners:
  - name: a
    listen: :http
    mode: l4
    pool: ws`,
			[]want{{3, "listeners[0].listen", `invalid port "http": use a number from 0 to 65535`}}},
		{"mode missing", `
listeners:
  - name: a
    listen: 127.0.0.1:0
    pool: ws`,
			[]want{{2, "listeners[0].mode", "mode is required: l4 or l7"}}},
		{"mode unknown", `
listeners:
  - name: a
    listen: 127.0.0.1:0
    mode: l5
    pool: ws`,
			[]want{{4, "listeners[0].mode", `unknown mode "l5": use l4 or l7`}}},
		{"l4 without pool", `
listeners:
  - name: a
    listen: 127.0.0.1:0
    mode: l4`,
			[]want{{2, "listeners[0].pool", "an l4 listener needs a pool"}}},
		{"unknown pool", `
listeners:
  - name: a
    listen: 127.0.0.1:0
    mode: l7
    pool: nope`,
			[]want{{5, "listeners[0].pool", `no pool named "nope" (pools: ws)`}}},
		{"l7-only keys on l4", `
listeners:
  - name: a
    listen: 127.0.0.1:0
    mode: l4
    pool: ws
    tls: {cert: c.pem, key: k.pem}
    http: {}
    routes: []`,
			[]want{
				{6, "listeners[0].tls", "only valid on l7 listeners"},
				{7, "listeners[0].http", "only valid on l7 listeners"},
				{8, "listeners[0].routes", "only valid on l7 listeners"},
			}},
		{"l7 without pool or routes is fine", `
listeners:
  - name: a
    listen: 127.0.0.1:0
    mode: l7`, nil},
		{"limits and proxy protocol", `
listeners:
  - name: a
    listen: 127.0.0.1:0
    mode: l4
    pool: ws
    max_connections: -1
    proxy_protocol: v3`,
			[]want{
				{6, "listeners[0].max_connections", "must not be negative, got -1"},
				{7, "listeners[0].proxy_protocol", `unknown value "v3": use "", v1 or v2`},
			}},
		{"max_accept_rate below zero, or not a number", `
listeners:
  - {name: a, listen: 127.0.0.1:0, mode: l4, pool: ws, max_accept_rate: -1}
  - name: b
    listen: 127.0.0.1:0
    mode: l7
    max_accept_rate: .nan
  - {name: c, listen: 127.0.0.1:0, mode: l7, max_accept_rate: -.inf}
  - {name: d, listen: 127.0.0.1:0, mode: l7, max_accept_rate: fast}`,
			[]want{
				{2, "listeners[0].max_accept_rate", "must not be negative, got -1: use new conns per second (e.g. 1000, or 0.5 for one every 2 s), or 0 for unlimited"},
				{6, "listeners[1].max_accept_rate", "must be a number of new conns per second, got NaN"},
				{7, "listeners[2].max_accept_rate", "must be a number of new conns per second, got -Inf"},
				{8, "listeners[3].max_accept_rate", `want a number such as 1000 or 0.5, got "fast"`},
			}},
		{"max_accept_rate: whole, fractional and unlimited are fine", `
listeners:
  - {name: a, listen: 127.0.0.1:0, mode: l4, pool: ws, max_accept_rate: 1000}
  - {name: b, listen: 127.0.0.1:0, mode: l7, max_accept_rate: 0.5}
  - {name: c, listen: 127.0.0.1:0, mode: l7, max_accept_rate: 0}`, nil},
		{"timeouts", `
listeners:
  - name: a
    listen: 127.0.0.1:0
    mode: l4
    pool: ws
    timeouts:
      connect: 0s
      handshake: -1s
      idle: 0
      keepalive: 1ms
      send: 0s
      client_body: -1s`,
			[]want{
				{7, "listeners[0].timeouts.connect", "must be positive, got 0s"},
				{8, "listeners[0].timeouts.handshake", "must be positive, got -1s"},
				{9, "listeners[0].timeouts.idle", "must be positive, got 0s"},
				{11, "listeners[0].timeouts.send", "must be positive, got 0s"},
				{12, "listeners[0].timeouts.client_body", "must be positive, got -1s"},
			}},
		{"tls", `
listeners:
  - name: a
    listen: 127.0.0.1:0
    mode: l7
    tls:
      min_version: "1.1"`,
			[]want{
				{5, "listeners[0].tls.cert", "tls needs a certificate: set cert and key, a certificates list, or acme"},
				{6, "listeners[0].tls.min_version", `unknown value "1.1": use 1.2 or 1.3`},
			}},
		{"tls certificates and acme", `
listeners:
  - name: a
    listen: 127.0.0.1:0
    mode: l7
    tls:
      cert: a.crt
      certificates:
        - {cert: b.crt}
        - {key: c.key}
      acme:
        domains: [chat.example.com, "*.example.com", 10.0.0.1, localhost]
        directory: http://acme.example.com/dir
        cache: ""`,
			[]want{
				{5, "listeners[0].tls.key", "cert needs its key file: set key too"},
				{8, "listeners[0].tls.certificates[0].key", "each certificate needs a key file"},
				{9, "listeners[0].tls.certificates[1].cert", "each certificate needs a cert file"},
				{11, "listeners[0].tls.acme.domains[1]", `invalid domain "*.example.com"`},
				{11, "listeners[0].tls.acme.domains[2]", `invalid domain "10.0.0.1"`},
				{11, "listeners[0].tls.acme.domains[3]", `invalid domain "localhost"`},
				{12, "listeners[0].tls.acme.directory", `must be the https URL of an ACME directory, got "http://acme.example.com/dir"`},
				{13, "listeners[0].tls.acme.cache", "acme needs a cache folder"},
			}},
		{"tls acme alone", `
listeners:
  - name: a
    listen: 127.0.0.1:0
    mode: l7
    tls:
      acme: {domains: [chat.example.com]}`, nil},
		{"acme domain in two blocks", `
listeners:
  - {name: a, listen: 127.0.0.1:0, mode: l7, tls: {acme: {domains: [chat.example.com, www.example.com]}}}
  - {name: b, listen: 127.0.0.1:0, mode: l7, tls: {acme: {domains: [chat.example.com, www.example.com]}}}
  - {name: c, listen: 127.0.0.1:0, mode: l7, tls: {acme: {domains: [api.example.com, WWW.example.com]}}}`,
			[]want{{4, "listeners[2].tls.acme.domains[1]", "www.example.com is also in listeners[0].tls.acme, with other settings"}}},
		{"http", `
listeners:
  - name: a
    listen: 127.0.0.1:0
    mode: l7
    http:
      max_header_bytes: 1023
      max_body_bytes: -1
      https_port: 65536
      trusted_proxies: [10.0.0.0/8, 192.0.2.1, not-an-ip]
      upgrade_protocols:
        - websocket
        - H2C
      min_body_rate: -240`,
			[]want{
				{6, "listeners[0].http.max_header_bytes", "must be at least 1024, got 1023"},
				{7, "listeners[0].http.max_body_bytes", "must not be negative, got -1"},
				{8, "listeners[0].http.https_port", "must be from 1 to 65535, got 65536"},
				{9, "listeners[0].http.trusted_proxies[2]", `invalid trusted proxy "not-an-ip": use a CIDR such as 10.0.0.0/8 or an IP address`},
				{12, "listeners[0].http.upgrade_protocols[1]", "h2c is never tunnelled"},
				{13, "listeners[0].http.min_body_rate", "must not be negative, got -240: use bytes per second, or 0 to turn the check off"},
			}},
		{"https_port zero", `
listeners:
  - name: a
    listen: 127.0.0.1:0
    mode: l7
    http: {https_port: 0}`,
			[]want{{5, "listeners[0].http.https_port", "must be from 1 to 65535, got 0"}}},
		{"route path", `
listeners:
  - name: a
    listen: 127.0.0.1:0
    mode: l7
    routes:
      - pool: ws
      - path: ws
        pool: ws
      - path: /x
        pool: ws
      - path: /x
        static: ./web`,
			[]want{
				{6, "listeners[0].routes[0].path", "path is required"},
				{7, "listeners[0].routes[1].path", `must start with /, got "ws"`},
				{11, "listeners[0].routes[3].path", `duplicate route path "/x" (first on line 9)`},
			}},
		{"route target", `
listeners:
  - name: a
    listen: 127.0.0.1:0
    mode: l7
    routes:
      - path: /both
        pool: ws
        static: ./web
      - path: /neither
      - path: /static
        static: ./web
        strip_prefix: true
      - path: /missing
        pool: nope`,
			[]want{
				{8, "listeners[0].routes[0].static", "a route has either a pool or static, not both"},
				{9, "listeners[0].routes[1]", "a route needs a pool or static"},
				{12, "listeners[0].routes[2].strip_prefix", "only valid on routes with a pool, not static"},
				{14, "listeners[0].routes[3].pool", `no pool named "nope"`},
			}},
		{"same route path on two listeners is fine", `
listeners:
  - name: a
    listen: 127.0.0.1:0
    mode: l7
    routes: [{path: /, pool: ws}]
  - name: b
    listen: 127.0.0.1:0
    mode: l7
    routes: [{path: /, pool: ws}]`, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { expect(t, tc.src+validPools, tc.wants...) })
	}
}

func TestValidatePools(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		wants []want
	}{
		{"no pools", `
pools: []`,
			[]want{{5, "listeners[0].pool", `no pool named "ws": no pools are defined`}}},
		{"name missing and duplicate", `
pools:
  - name: ws
    backends: [{address: 127.0.0.1:9001}]
  - backends: [{address: 127.0.0.1:9001}]
  - name: ws
    backends: [{address: 127.0.0.1:9001}]`,
			[]want{
				{9, "pools[1].name", "name is required"},
				{10, "pools[2].name", `duplicate pool name "ws" (first on line 7)`},
			}},
		{"balance and no backends", `
pools:
  - name: ws
    balance: random
    backends: []`,
			[]want{
				{8, "pools[0].balance", `unknown value "random": use least_conn, round_robin or source_hash`},
				{9, "pools[0].backends", "a pool needs at least one backend or a discovery entry"},
			}},
		{"backends missing", `
pools:
  - name: ws`,
			[]want{{7, "pools[0].backends", "a pool needs at least one backend"}}},
		{"backend addresses", `
pools:
  - name: ws
    backends:
      - weight: 2
      - address: ws1.internal
      - address: 127.0.0.1:0
      - address: :9001
      - address: 127.0.0.1:9001
      - address: "[::ffff:127.0.0.1]:9001"
      - address: ws1.internal:9001
      - address: WS1.internal.:9001
      - address: ws_1!:9001`,
			[]want{
				{9, "pools[0].backends[0].address", "address is required"},
				{10, "pools[0].backends[1].address", `invalid address "ws1.internal": use ip:port, host:port or a go-sockaddr template`},
				{11, "pools[0].backends[2].address", `invalid port "0": use a number from 1 to 65535`},
				{12, "pools[0].backends[3].address", "the host is missing"},
				{14, "pools[0].backends[5].address", `duplicate backend "127.0.0.1:9001" (first on line 13)`},
				{16, "pools[0].backends[7].address", `duplicate backend "ws1.internal:9001" (first on line 15)`},
				{17, "pools[0].backends[8].address", `invalid host "ws_1!"`},
			}},
		{"weights", `
pools:
  - name: ws
    backends:
      - address: 127.0.0.1:9001
        weight: 0
      - address: 127.0.0.1:9002
        weight: 1001
      - address: 127.0.0.1:9003
        weight: 1000`,
			[]want{
				{10, "pools[0].backends[0].weight", "must be from 1 to 1000, got 0"},
				{12, "pools[0].backends[1].weight", "must be from 1 to 1000, got 1001"},
			}},
		{"negative counts", `
pools:
  - name: ws
    backends: [{address: 127.0.0.1:9001}]
    idle_per_worker: -1
    max_connections_per_backend: -1
    slow_start: -1s
    passive:
      max_fails: -1
      fail_timeout: 0s`,
			[]want{
				{9, "pools[0].idle_per_worker", "must not be negative, got -1"},
				{10, "pools[0].max_connections_per_backend", "must not be negative, got -1"},
				{11, "pools[0].slow_start", "must not be negative, got -1s"},
				{13, "pools[0].passive.max_fails", "must not be negative, got -1"},
				{14, "pools[0].passive.fail_timeout", "must be positive, got 0s"},
			}},
		{"max age and rebalance", `
pools:
  - name: ws
    backends: [{address: 127.0.0.1:9001}]
    max_connection_age: -5m
    rebalance:
      enabled: true
      tolerance: -0.1
      rate: 0`,
			[]want{
				{9, "pools[0].max_connection_age", "must not be negative, got -5m0s"},
				{12, "pools[0].rebalance.tolerance", "must be a number >= 0 (0.2 = act above 120% of the share), got -0.1"},
				{13, "pools[0].rebalance.rate", "must be at least 1, got 0"},
			}},
		{"rebalance tolerance not a number", `
pools:
  - name: ws
    backends: [{address: 127.0.0.1:9001}]
    rebalance: {tolerance: .nan}`,
			[]want{{9, "pools[0].rebalance.tolerance", "must be a number >= 0 (0.2 = act above 120% of the share), got NaN"}}},
		{"health", `
pools:
  - name: ws
    backends: [{address: 127.0.0.1:9001}]
    health:
      check: udp
      expect_status: 99
      interval: 0s
      timeout: -1s
      rise: 0
      fall: 0`,
			[]want{
				{10, "pools[0].health.check", `unknown value "udp": use tcp, http, websocket or none`},
				{11, "pools[0].health.expect_status", "must be from 100 to 599, got 99"},
				{12, "pools[0].health.interval", "must be positive, got 0s"},
				{13, "pools[0].health.timeout", "must be positive, got -1s"},
				{14, "pools[0].health.rise", "must be at least 1, got 0"},
				{15, "pools[0].health.fall", "must be at least 1, got 0"},
			}},
		{"http check path and status", `
pools:
  - name: ws
    backends: [{address: 127.0.0.1:9001}]
    health:
      check: http
      path: healthz
      expect_status: 600`,
			[]want{
				{11, "pools[0].health.path", `must start with /, got "healthz"`},
				{12, "pools[0].health.expect_status", "must be from 100 to 599, got 600"},
			}},
		{"timeout not shorter than interval", `
pools:
  - name: ws
    backends: [{address: 127.0.0.1:9001}]
    health:
      interval: 1s`,
			// timeout is absent (default 1s), so the problem sits on the health line.
			[]want{{9, "pools[0].health.timeout", "timeout 1s must be shorter than interval 1s"}}},
		{"agent port, interval and send", `
pools:
  - name: ws
    backends: [{address: 127.0.0.1:9001}]
    health:
      agent:
        port: 70000
        interval: 0s
        send: "a\nb"`,
			[]want{
				{11, "pools[0].health.agent.port", "must be from 1 to 65535, or 0 to turn the agent check off, got 70000"},
				{12, "pools[0].health.agent.interval", "must be positive, got 0s"},
				{13, "pools[0].health.agent.send", `must be one line without CR, LF or NUL (a newline is appended when sent), got "a\nb"`},
			}},
		{"agent negative port and CR", `
pools:
  - name: ws
    backends: [{address: 127.0.0.1:9001}]
    health:
      agent: {port: -1, interval: -5s, send: "x\r"}`,
			[]want{
				{10, "pools[0].health.agent.port", "must be from 1 to 65535, or 0 to turn the agent check off, got -1"},
				{10, "pools[0].health.agent.interval", "must be positive, got -5s"},
				{10, "pools[0].health.agent.send", `must be one line without CR, LF or NUL (a newline is appended when sent), got "x\r"`},
			}},
		{"agent valid", `
pools:
  - name: ws
    backends: [{address: 127.0.0.1:9001}]
    health:
      agent: {port: 9777, interval: 1s, send: "hello wslb"}`, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { expect(t, oneListener+tc.src, tc.wants...) })
	}
}

func TestTrustedPrefixes(t *testing.T) {
	c := mustParse(t, `
listeners:
  - name: a
    listen: 127.0.0.1:0
    mode: l7
    http:
      trusted_proxies: [10.1.2.3/8, 192.0.2.7, "2001:db8::1", "::ffff:198.51.100.1", "2001:db8::/32"]
`)
	got := c.Listeners[0].HTTP.TrustedPrefixes
	wantPfx := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("192.0.2.7/32"),
		netip.MustParsePrefix("2001:db8::1/128"),
		netip.MustParsePrefix("198.51.100.1/32"),
		netip.MustParsePrefix("2001:db8::/32"),
	}
	if !reflect.DeepEqual(got, wantPfx) {
		t.Errorf("TrustedPrefixes = %v, want %v", got, wantPfx)
	}
}

func TestValidateResolver(t *testing.T) {
	expect(t, `
resolver:
  servers: [10.0.0.2:53, 10.0.0.3, dns.internal:53, "[fd00::2]:53"]
  interval: 0s
  timeout: -1s
  hold: 0s
`+strings.TrimPrefix(oneListener, "\n")+`
pools:
  - name: ws
    backends: [{address: 127.0.0.1:9001}]`,
		want{2, "resolver.servers[1]", `invalid DNS server "10.0.0.3": use ip:port, such as 10.0.0.2:53`},
		want{2, "resolver.servers[2]", `invalid DNS server "dns.internal:53"`},
		want{3, "resolver.interval", "must be positive, got 0s"},
		want{4, "resolver.timeout", "must be positive, got -1s"},
		want{5, "resolver.hold", "must be positive, got 0s"},
	)
}

func TestValidateDiscovery(t *testing.T) {
	expect(t, oneListener+`
pools:
  - name: ws
    discovery:
      - {srv: _ws._tcp.chat.service.consul, name: chat.internal, port: 9001}
      - {port: 9001}
      - {name: chat.internal}
      - {srv: _ws._tcp.chat.service.consul, port: 9001}
      - {name: chat.internal, port: 0}
      - {name: "chat internal", port: 9001}
      - {srv: _ws._tcp.chat.service.consul}
      - {name: chat.internal, port: 9001}
      - {name: CHAT.internal, port: 9001}
  - name: empty
    discovery: []`,
		want{9, "pools[0].discovery[0]", "an entry has either srv or name, not both"},
		want{10, "pools[0].discovery[1]", "an entry needs srv (an SRV name) or name and port (A/AAAA)"},
		want{11, "pools[0].discovery[2]", "a name entry needs a port"},
		want{12, "pools[0].discovery[3].port", "an srv entry takes each port from its SRV records: remove port"},
		want{13, "pools[0].discovery[4].port", "must be from 1 to 65535, got 0"},
		want{14, "pools[0].discovery[5].name", `invalid name "chat internal": use a DNS name such as chat.default.svc.cluster.local`},
		want{15, "pools[0].discovery[6].srv", `duplicate discovery entry "_ws._tcp.chat.service.consul:0" (first on line 12)`},
		want{17, "pools[0].discovery[8].name", `duplicate discovery entry "chat.internal:9001" (first on line 16)`},
		want{18, "pools[1].backends", "a pool needs at least one backend or a discovery entry"},
	)
}

// Hostname backends and discovery entries become the pool's Names, with
// their paths and lines; Load does no DNS.
func TestPoolNames(t *testing.T) {
	c := mustParse(t, oneListener+`
pools:
  - name: ws
    backends:
      - address: 127.0.0.1:9001
      - address: chat-1.internal:9001
        weight: 3
    discovery:
      - srv: _ws._tcp.chat.service.consul
      - name: chat.default.svc.cluster.local
        port: 9002`)
	got := c.Pools[0].Names
	wantNames := []Name{
		{Path: "pools[0].backends[1].address", Line: 10, Host: "chat-1.internal", Port: 9001, Weight: 3},
		{Path: "pools[0].discovery[0].srv", Line: 13, SRV: true, Host: "_ws._tcp.chat.service.consul", Weight: 1},
		{Path: "pools[0].discovery[1].name", Line: 14, Host: "chat.default.svc.cluster.local", Port: 9002, Weight: 1},
	}
	if !reflect.DeepEqual(got, wantNames) {
		t.Errorf("Names =\n%+v\nwant\n%+v", got, wantNames)
	}
	if b := c.Pools[0].Backends[1]; b.Addr.IsValid() {
		t.Errorf("a hostname backend has Addr %v; want it unset", b.Addr)
	}
	if s := c.Summary(); !strings.HasSuffix(s, "1 pool, 2 backends, 3 DNS names looked up") {
		t.Errorf("summary %q", s)
	}
}
