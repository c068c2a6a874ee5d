package config

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

// loIPv4 resolves to 127.0.0.1 through the loopback interface, which every
// Linux host has.
const loIPv4 = `{{ GetAllInterfaces | include "name" "^lo$" | include "type" "IPv4" | attr "address" }}`

func TestListenAddr(t *testing.T) {
	tests := []struct {
		name, in, want, err string
	}{
		{name: "ip and port", in: "127.0.0.1:8080", want: "127.0.0.1:8080"},
		{name: "kernel picks the port", in: "127.0.0.1:0", want: "127.0.0.1:0"},
		{name: "all interfaces", in: ":8080", want: ":8080"},
		{name: "ipv6", in: "[::1]:8080", want: "[::1]:8080"},
		{name: "template", in: loIPv4 + ":9001", want: "127.0.0.1:9001"},
		{name: "hostname", in: "localhost:80", err: "hostnames are not resolved"},
		{name: "no port", in: "127.0.0.1", err: "invalid address"},
		{name: "named port", in: "127.0.0.1:http", err: `invalid port "http"`},
		{name: "port too big", in: "127.0.0.1:65536", err: `invalid port "65536"`},
		{name: "template matching nothing", in: `{{ GetAllInterfaces | include "name" "^nope$" | attr "address" }}:80`, err: "template resolved to no address"},
		{name: "template giving two addresses", in: `{{ "127.0.0.1 127.0.0.2" }}:80`, err: "template resolved to several addresses"},
		{name: "broken template", in: `{{ GetNothing }}:80`, err: "bad go-sockaddr template"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := listenAddr(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("listenAddr(%q) = %q, %v; want error containing %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("listenAddr(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestBackendAddr(t *testing.T) {
	tests := []struct {
		name, in, want, host, err string
	}{
		{name: "ipv4", in: "10.0.0.1:9001", want: "10.0.0.1:9001"},
		{name: "ipv6", in: "[2001:db8::1]:9001", want: "[2001:db8::1]:9001"},
		{name: "4-in-6 is unmapped", in: "[::ffff:10.0.0.1]:9001", want: "10.0.0.1:9001"},
		{name: "template", in: loIPv4 + ":9001", want: "127.0.0.1:9001"},
		{name: "hostname", in: "chat-1.internal:9001", host: "chat-1.internal", want: ":9001"},
		{name: "one-label hostname", in: "localhost:4000", host: "localhost", want: ":4000"},
		{name: "absolute hostname", in: "chat.internal.:9001", host: "chat.internal.", want: ":9001"},
		{name: "hostname without port", in: "chat-1.internal", err: "use ip:port, host:port"},
		{name: "hostname with a bad character", in: "chat!1.internal:9001", err: "invalid host"},
		{name: "empty label", in: "chat..internal:9001", err: "invalid host"},
		{name: "mistyped IPv4", in: "10.0.0.256:9001", err: "does not end in a number"},
		{name: "no host", in: ":9001", err: "the host is missing"},
		{name: "port zero", in: "10.0.0.1:0", err: "use a number from 1 to 65535"},
		{name: "template matching nothing", in: `{{ GetAllInterfaces | include "name" "^nope$" | attr "address" }}:9001`, err: "template resolved to no address"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, host, err := backendAddr(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("backendAddr(%q) = %v, %q, %v; want error containing %q", tc.in, got, host, err, tc.err)
				}
				return
			}
			if tc.host != "" {
				if err != nil || host != tc.host || got.IsValid() || ":"+strconv.Itoa(int(got.Port())) != tc.want {
					t.Fatalf("backendAddr(%q) = %v, %q, %v; want host %q port %s", tc.in, got, host, err, tc.host, tc.want)
				}
				return
			}
			if err != nil || host != "" || got != netip.MustParseAddrPort(tc.want) {
				t.Fatalf("backendAddr(%q) = %v, %q, %v; want %s", tc.in, got, host, err, tc.want)
			}
		})
	}
}

// Templates in a whole file: resolved values are stored, problems carry lines.
func TestTemplatesInConfig(t *testing.T) {
	c := mustParse(t, `
admin:
  listen: '`+loIPv4+`:0'
listeners:
  - name: a
    listen: '`+loIPv4+`:9001'
    mode: l4
    pool: ws
pools:
  - name: ws
    backends:
      - address: '`+loIPv4+`:9002'
`)
	if c.Admin.Listen != "127.0.0.1:0" || len(c.Listeners[0].Listen) != 1 || c.Listeners[0].Listen[0] != "127.0.0.1:9001" {
		t.Errorf("admin %q, listener %q; want 127.0.0.1:0 and 127.0.0.1:9001", c.Admin.Listen, c.Listeners[0].Listen)
	}
	b := c.Pools[0].Backends[0]
	if b.Addr != netip.MustParseAddrPort("127.0.0.1:9002") || b.Address != loIPv4+":9002" {
		t.Errorf("backend = %+v, want Addr 127.0.0.1:9002 and Address as written", b)
	}

	nowhere := `{{ GetAllInterfaces | include "name" "^no-such-if$" | attr "address" }}`
	expect(t, `
listeners:
  - name: a
    listen: '`+nowhere+`:9001'
    mode: l4
    pool: ws
pools:
  - name: ws
    backends:
      - address: '`+nowhere+`:9002'
`,
		want{3, "listeners[0].listen", "template resolved to no address"},
		want{9, "pools[0].backends[0].address", "template resolved to no address"},
	)
}
