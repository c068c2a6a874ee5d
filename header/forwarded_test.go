package header

import (
	"net/http"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/wslb/wslb/config"
)

// trustedNets is the trusted_proxies of these tests.
func trustedNets() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
}

func TestClientIP(t *testing.T) {
	tests := []struct {
		name string
		peer string
		xff  []string
		want string
	}{
		{"untrusted peer, spoofed XFF", "198.51.100.9", []string{"1.1.1.1"}, "198.51.100.9"},
		{"trusted peer, no XFF", "10.0.0.1", nil, "10.0.0.1"},
		{"trusted peer, empty XFF", "10.0.0.1", []string{" , "}, "10.0.0.1"},
		{"trusted peer, one client", "10.0.0.1", []string{"203.0.113.7"}, "203.0.113.7"},
		{"recursive through trusted", "10.0.0.1", []string{"203.0.113.7, 10.0.0.2, 10.0.0.3"}, "203.0.113.7"},
		{"spoofed entries left of the client", "10.0.0.1", []string{"1.1.1.1, 203.0.113.7, 10.0.0.2"}, "203.0.113.7"},
		{"all trusted: leftmost", "10.0.0.1", []string{"10.0.0.5, 10.0.0.2"}, "10.0.0.5"},
		{"several XFF headers", "10.0.0.1", []string{"198.51.100.1, 203.0.113.7", "10.0.0.2"}, "203.0.113.7"},
		{"empty elements", "10.0.0.1", []string{"203.0.113.7,, 10.0.0.2,"}, "203.0.113.7"},
		{"malformed rightmost: peer", "10.0.0.1", []string{"203.0.113.7, garbage"}, "10.0.0.1"},
		{"malformed in the middle: last good", "10.0.0.1", []string{"203.0.113.7, unknown, 10.0.0.2"}, "10.0.0.2"},
		{"malformed left of trusted", "10.0.0.1", []string{"garbage, 10.0.0.2"}, "10.0.0.2"},
		{"bracketed IPv4 is malformed", "10.0.0.1", []string{"[203.0.113.7]"}, "10.0.0.1"},
		{"port out of range is malformed", "10.0.0.1", []string{"203.0.113.7:99999"}, "10.0.0.1"},
		{"ports", "10.0.0.1", []string{"203.0.113.7:5678, 10.0.0.2:80"}, "203.0.113.7"},
		{"IPv6 with port", "10.0.0.1", []string{"[2001:db8::7]:443"}, "2001:db8::7"},
		{"IPv6 bracketed without port", "10.0.0.1", []string{"[2001:db8::7]"}, "2001:db8::7"},
		{"IPv6 bare", "10.0.0.1", []string{"2001:db8::7"}, "2001:db8::7"},
		{"quoted", "10.0.0.1", []string{`"203.0.113.7", "10.0.0.2:80"`}, "203.0.113.7"},
		{"quoted IPv6 with port", "10.0.0.1", []string{`"[2001:db8::7]:443"`}, "2001:db8::7"},
		{"IPv6 peer trusted", "fd00::1", []string{"2001:db8::7, fd00::2"}, "2001:db8::7"},
		{"IPv6 peer untrusted", "2001:db8::1", []string{"203.0.113.7"}, "2001:db8::1"},
		{"4in6 peer is unmapped and trusted", "::ffff:10.0.0.1", []string{"203.0.113.7"}, "203.0.113.7"},
		{"4in6 entry is unmapped", "10.0.0.1", []string{"::ffff:203.0.113.7"}, "203.0.113.7"},
		{"4in6 entry is trusted once unmapped", "10.0.0.1", []string{"203.0.113.7, ::ffff:10.0.0.2"}, "203.0.113.7"},
		{"zone dropped from peer", "fe80::1%eth0", nil, "fe80::1"},
		{"zone dropped from entry", "10.0.0.1", []string{"fe80::7%eth0"}, "fe80::7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := Forwarding{Peer: netip.MustParseAddr(tt.peer), Trusted: trustedNets()}
			h := http.Header{}
			for _, v := range tt.xff {
				h.Add("X-Forwarded-For", v)
			}
			if got := f.ClientIP(h); got != netip.MustParseAddr(tt.want) {
				t.Errorf("got %v; want %s", got, tt.want)
			}
		})
	}
}

func TestSetForwarded(t *testing.T) {
	spoofed := http.Header{
		"X-Forwarded-For":   {"1.1.1.1", "2.2.2.2"},
		"X-Real-Ip":         {"1.1.1.1"},
		"X-Forwarded-Host":  {"evil.example"},
		"X-Forwarded-Proto": {"https"},
		"X-Forwarded-Port":  {"1"},
		"Forwarded":         {"for=1.1.1.1"},
		"Accept":            {"*/*"},
	}
	tests := []struct {
		name string
		f    Forwarding
		in   http.Header
		want http.Header
	}{
		{
			name: "untrusted peer: spoofed headers replaced",
			f:    Forwarding{Peer: netip.MustParseAddr("198.51.100.9"), Trusted: trustedNets(), Host: "example.com:8080", Proto: "http", Port: 8080, XForwarded: true, RFC7239: true},
			in:   spoofed,
			want: http.Header{
				"X-Forwarded-For":   {"198.51.100.9"},
				"X-Real-Ip":         {"198.51.100.9"},
				"X-Forwarded-Host":  {"example.com:8080"},
				"X-Forwarded-Proto": {"http"},
				"X-Forwarded-Port":  {"8080"},
				"Forwarded":         {`for=198.51.100.9;host="example.com:8080";proto=http`},
				"Accept":            {"*/*"},
			},
		},
		{
			name: "trusted peer: appended",
			f:    Forwarding{Peer: netip.MustParseAddr("10.0.0.1"), Trusted: trustedNets(), Host: "example.com", Proto: "https", Port: 443, XForwarded: true, RFC7239: true},
			in: http.Header{
				"X-Forwarded-For":   {"203.0.113.7", "10.0.0.2"},
				"X-Forwarded-Proto": {"http"},
				"Forwarded":         {"for=203.0.113.7;proto=https", "for=10.0.0.2"},
			},
			want: http.Header{
				"X-Forwarded-For":   {"203.0.113.7, 10.0.0.2, 10.0.0.1"},
				"X-Real-Ip":         {"203.0.113.7"},
				"X-Forwarded-Host":  {"example.com"},
				"X-Forwarded-Proto": {"https"},
				"X-Forwarded-Port":  {"443"},
				"Forwarded":         {"for=203.0.113.7;proto=https, for=10.0.0.2, for=10.0.0.1;host=example.com;proto=https"},
			},
		},
		{
			name: "trusted peer without incoming list",
			f:    Forwarding{Peer: netip.MustParseAddr("10.0.0.1"), Trusted: trustedNets(), Host: "example.com", Proto: "http", Port: 80, XForwarded: true},
			in:   http.Header{},
			want: http.Header{
				"X-Forwarded-For":   {"10.0.0.1"},
				"X-Real-Ip":         {"10.0.0.1"},
				"X-Forwarded-Host":  {"example.com"},
				"X-Forwarded-Proto": {"http"},
				"X-Forwarded-Port":  {"80"},
			},
		},
		{
			name: "IPv6 peer",
			f:    Forwarding{Peer: netip.MustParseAddr("2001:db8::1"), Host: "[2001:db8::80]:8443", Proto: "https", Port: 8443, XForwarded: true, RFC7239: true},
			in:   http.Header{"X-Forwarded-For": {"::1"}},
			want: http.Header{
				"X-Forwarded-For":   {"2001:db8::1"},
				"X-Real-Ip":         {"2001:db8::1"},
				"X-Forwarded-Host":  {"[2001:db8::80]:8443"},
				"X-Forwarded-Proto": {"https"},
				"X-Forwarded-Port":  {"8443"},
				"Forwarded":         {`for="[2001:db8::1]";host="[2001:db8::80]:8443";proto=https`},
			},
		},
		{
			name: "X- headers off: passed as sent",
			f:    Forwarding{Peer: netip.MustParseAddr("198.51.100.9"), Host: "example.com", Proto: "http", Port: 80, RFC7239: true},
			in:   spoofed,
			want: http.Header{
				"X-Forwarded-For":   {"1.1.1.1", "2.2.2.2"},
				"X-Real-Ip":         {"1.1.1.1"},
				"X-Forwarded-Host":  {"evil.example"},
				"X-Forwarded-Proto": {"https"},
				"X-Forwarded-Port":  {"1"},
				"Forwarded":         {"for=198.51.100.9;host=example.com;proto=http"},
				"Accept":            {"*/*"},
			},
		},
		{
			name: "both off: X- headers as sent, an untrusted peer's Forwarded removed",
			f:    Forwarding{Peer: netip.MustParseAddr("198.51.100.9"), Trusted: trustedNets(), Host: "example.com", Proto: "http", Port: 80},
			in:   spoofed,
			want: without(spoofed, "Forwarded"),
		},
		{
			name: "Forwarded off, untrusted peer: removed",
			f:    Forwarding{Peer: netip.MustParseAddr("198.51.100.9"), Trusted: trustedNets(), Host: "example.com", Proto: "http", Port: 80, XForwarded: true},
			in:   http.Header{"Forwarded": {"for=1.1.1.1", "for=2.2.2.2"}, "Accept": {"*/*"}},
			want: http.Header{
				"X-Forwarded-For":   {"198.51.100.9"},
				"X-Real-Ip":         {"198.51.100.9"},
				"X-Forwarded-Host":  {"example.com"},
				"X-Forwarded-Proto": {"http"},
				"X-Forwarded-Port":  {"80"},
				"Accept":            {"*/*"},
			},
		},
		{
			name: "Forwarded off, trusted peer: kept as sent",
			f:    Forwarding{Peer: netip.MustParseAddr("10.0.0.1"), Trusted: trustedNets(), Host: "example.com", Proto: "http", Port: 80},
			in:   spoofed,
			want: spoofed,
		},
		{
			name: "no Host, no port, no proto",
			f:    Forwarding{Peer: netip.MustParseAddr("198.51.100.9"), XForwarded: true, RFC7239: true},
			in:   spoofed,
			want: http.Header{
				"X-Forwarded-For": {"198.51.100.9"},
				"X-Real-Ip":       {"198.51.100.9"},
				"Forwarded":       {"for=198.51.100.9"},
				"Accept":          {"*/*"},
			},
		},
		{
			name: "no peer: for=unknown, nothing claimed",
			f:    Forwarding{Host: "example.com", Proto: "http", Port: 80, XForwarded: true, RFC7239: true},
			in:   http.Header{"X-Forwarded-For": {"1.1.1.1"}, "X-Real-Ip": {"1.1.1.1"}},
			want: http.Header{
				"X-Forwarded-Host":  {"example.com"},
				"X-Forwarded-Proto": {"http"},
				"X-Forwarded-Port":  {"80"},
				"Forwarded":         {"for=unknown;host=example.com;proto=http"},
			},
		},
		{
			name: "Host needing quoted-pairs, and one that cannot be sent",
			f:    Forwarding{Peer: netip.MustParseAddr("198.51.100.9"), Host: `a"b\c`, Proto: "ht\x01tp", RFC7239: true},
			in:   http.Header{},
			want: http.Header{"Forwarded": {`for=198.51.100.9;host="a\"b\\c"`}},
		},
		{
			name: "Host with CR LF is not written",
			f:    Forwarding{Peer: netip.MustParseAddr("198.51.100.9"), Host: "a\r\nX-Evil: 1", Proto: "http", Port: 80, XForwarded: true, RFC7239: true},
			in:   http.Header{"X-Forwarded-Host": {"evil.example"}},
			want: http.Header{
				"X-Forwarded-For":   {"198.51.100.9"},
				"X-Real-Ip":         {"198.51.100.9"},
				"X-Forwarded-Proto": {"http"},
				"X-Forwarded-Port":  {"80"},
				"Forwarded":         {"for=198.51.100.9;proto=http"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.in.Clone()
			tt.f.SetForwarded(h)
			if !reflect.DeepEqual(h, tt.want) {
				t.Errorf("got %v\nwant %v", h, tt.want)
			}
		})
	}
}

// without returns a copy of h without the headers names.
func without(h http.Header, names ...string) http.Header {
	h = h.Clone()
	for _, n := range names {
		delete(h, n)
	}
	return h
}

// TestUnderscoreSpellingsRemoved: CGI, PHP and WSGI read X_Real_IP as
// X-Real-IP (both become HTTP_X_REAL_IP), so the underscore spellings of the
// headers wslb sets or removes go, in any case and any mix of '_' and '-',
// whatever the options and however trusted the peer; other names with an
// underscore pass.
func TestUnderscoreSpellingsRemoved(t *testing.T) {
	in := http.Header{
		"X_forwarded_for":     {"6.6.6.6"},
		"X_real_ip":           {"6.6.6.6"},
		"X-Forwarded_host":    {"evil.example"},
		"X_forwarded-proto":   {"https"},
		"X_forwarded_port":    {"1"},
		"Proxy_authorization": {"Basic eDp5"},
		"Proxy_connection":    {"keep-alive"},
		"Keep_alive":          {"timeout=5"},
		"Transfer_encoding":   {"chunked"},
		"Content_length":      {"5"},
		"X_forwarded_server":  {"evil.example"},
		"X_request_id":        {"abc"},
		"X_forwarded_for_me":  {"kept"},
		"Accept":              {"*/*"},
	}
	owned := []string{"X_forwarded_for", "X_real_ip", "X-Forwarded_host", "X_forwarded-proto", "X_forwarded_port",
		"Proxy_authorization", "Proxy_connection", "Keep_alive", "Transfer_encoding", "Content_length"}
	peer, trusted := netip.MustParseAddr("198.51.100.9"), netip.MustParseAddr("10.0.0.1")
	set := []config.RequestHeader{{Name: "X-Forwarded-Server"}, {Name: "X-Request-Id"}}
	for _, tc := range []struct {
		name string
		f    Forwarding
		gone []string // besides owned
	}{
		{"all on", Forwarding{Peer: peer, XForwarded: true, RFC7239: true}, nil},
		{"all off", Forwarding{Peer: peer}, nil},
		{"trusted peer", Forwarding{Peer: trusted, Trusted: trustedNets(), XForwarded: true}, nil},
		{"request_headers", Forwarding{Peer: peer, RequestHeaders: set}, []string{"X_forwarded_server", "X_request_id"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := in.Clone()
			tc.f.SetForwarded(h)
			for name := range in {
				gone := slices.Contains(owned, name) || slices.Contains(tc.gone, name)
				if _, kept := h[name]; kept == gone {
					t.Errorf("%s: kept %v, want %v", name, kept, !gone)
				}
			}
		})
	}
}
