package header

import (
	"net/http"
	"net/netip"
	"reflect"
	"testing"

	"github.com/wslb/wslb/config"
)

func TestSetRequestHeaders(t *testing.T) {
	v := func(x config.Var) config.Part { return config.Part{Var: x} }
	text := func(s string) config.Part { return config.Part{Text: s} }
	set := []config.RequestHeader{
		{Name: "Host", Value: []config.Part{text("api."), v(config.VarHost)}},
		{Name: "X-Host", Value: []config.Part{v(config.VarHost)}},
		{Name: "X-Http-Host", Value: []config.Part{v(config.VarHTTPHost)}},
		{Name: "X-Port", Value: []config.Part{v(config.VarServerPort)}},
		{Name: "X-Scheme", Value: []config.Part{v(config.VarScheme)}},
		{Name: "X-Peer", Value: []config.Part{v(config.VarRemoteAddr), text(" "), v(config.VarClientIP)}},
		{Name: "X-Const", Value: []config.Part{text("on")}},
		{Name: "X-Gone"},
		{Name: "X-Empty", Value: []config.Part{v(config.VarHost)}}, // expands to "" below: removed
	}
	tests := []struct {
		name string
		vars Vars
		in   http.Header
		want http.Header
		host string
	}{
		{
			name: "every variable",
			vars: Vars{Host: "Chat.Example.COM:8443", Port: 443, Scheme: "https",
				Peer: netip.MustParseAddr("::ffff:10.0.0.1"), Client: netip.MustParseAddr("203.0.113.9")},
			in: http.Header{"X-Gone": {"a", "b"}, "X-Const": {"client's"}, "X-Kept": {"k"}},
			want: http.Header{"X-Host": {"chat.example.com"}, "X-Http-Host": {"Chat.Example.COM:8443"}, "X-Port": {"443"},
				"X-Scheme": {"https"}, "X-Peer": {"10.0.0.1 203.0.113.9"}, "X-Const": {"on"}, "X-Kept": {"k"},
				"X-Empty": {"chat.example.com"}},
			host: "api.chat.example.com",
		},
		{
			name: "IPv6 host keeps its brackets",
			vars: Vars{Host: "[2001:db8::1]:80", Peer: netip.MustParseAddr("fe80::1%eth0")},
			in:   http.Header{"X-Empty": {"client's"}},
			want: http.Header{"X-Host": {"[2001:db8::1]"}, "X-Http-Host": {"[2001:db8::1]:80"}, "X-Peer": {"fe80::1 "},
				"X-Const": {"on"}, "X-Empty": {"[2001:db8::1]"}},
			host: "api.[2001:db8::1]",
		},
		{
			name: "no Host, no addresses: empty values remove",
			in:   http.Header{"X-Empty": {"client's"}, "X-Host": {"client's"}},
			want: http.Header{"X-Const": {"on"}, "X-Peer": {" "}},
			host: "api.",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.in.Clone()
			if host := SetRequestHeaders(h, set, tc.vars); host != tc.host {
				t.Errorf("host %q, want %q", host, tc.host)
			}
			if !reflect.DeepEqual(h, tc.want) {
				t.Errorf("headers\n %v\nwant\n %v", h, tc.want)
			}
		})
	}
}

func TestHostWithoutPort(t *testing.T) {
	for in, want := range map[string]string{
		"example.com": "example.com", "example.com:80": "example.com", "[::1]": "[::1]", "[::1]:8080": "[::1]",
		"10.0.0.1:1": "10.0.0.1", "": "", "[broken": "[broken",
	} {
		if got := hostWithoutPort(in); got != want {
			t.Errorf("hostWithoutPort(%q) = %q, want %q", in, got, want)
		}
	}
}
