package header

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func TestRemoveHopByHop(t *testing.T) {
	tests := []struct {
		name string
		in   http.Header
		want http.Header
	}{
		{
			name: "fixed list",
			in: http.Header{
				"Connection":          {"keep-alive"},
				"Proxy-Connection":    {"keep-alive"},
				"Keep-Alive":          {"timeout=5"},
				"Te":                  {"trailers"},
				"Trailer":             {"Expires"},
				"Transfer-Encoding":   {"chunked"},
				"Upgrade":             {"websocket"},
				"Proxy-Authenticate":  {"Basic"},
				"Proxy-Authorization": {"Basic Zm9vOmJhcg=="},
				"Authorization":       {"Bearer x"},
				"Accept":              {"*/*"},
			},
			want: http.Header{"Authorization": {"Bearer x"}, "Accept": {"*/*"}},
		},
		{
			name: "connection-named headers, odd spacing and case",
			in: http.Header{
				"Connection": {" x-foo ,\tX-BAR,,  close  "},
				"X-Foo":      {"1"},
				"X-Bar":      {"2"},
				"X-Baz":      {"3"},
			},
			want: http.Header{"X-Baz": {"3"}},
		},
		{
			name: "several Connection headers",
			in: http.Header{
				"Connection": {"upgrade", "x-one", "X-Two, keep-alive"},
				"X-One":      {"1"},
				"X-Two":      {"2"},
				"X-Three":    {"3"},
				"Upgrade":    {"websocket"},
			},
			want: http.Header{"X-Three": {"3"}},
		},
		{
			name: "nothing to remove",
			in:   http.Header{"Host-Ish": {"a"}},
			want: http.Header{"Host-Ish": {"a"}},
		},
		{
			name: "empty",
			in:   http.Header{},
			want: http.Header{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			RemoveHopByHop(tt.in)
			if !reflect.DeepEqual(tt.in, tt.want) {
				t.Errorf("got %v; want %v", tt.in, tt.want)
			}
		})
	}
}

func TestSetResponseHeaders(t *testing.T) {
	h := http.Header{
		"Strict-Transport-Security": {"max-age=1", "max-age=2"},
		"Content-Type":              {"text/plain"},
	}
	SetResponseHeaders(h, map[string]string{
		"strict-transport-security": "max-age=63072000",
		"X-Frame-Options":           "DENY",
		"X-Split":                   "a\r\nSet-Cookie: evil=1",
		"Bad Name":                  "x",
	})
	want := http.Header{
		"Strict-Transport-Security": {"max-age=63072000"},
		"Content-Type":              {"text/plain"},
		"X-Frame-Options":           {"DENY"},
	}
	if !reflect.DeepEqual(h, want) {
		t.Errorf("got %v; want %v", h, want)
	}
}

// TestDelIsHeaderDel checks del, RemoveHopByHop's allocation-free
// Header.Del, against Header.Del.
func TestDelIsHeaderDel(t *testing.T) {
	names := []string{"keep-alive", "KEEP-ALIVE", "Keep-Alive", "x-foo", "X-FOO-bar", "x_foo", "a b", "ünï", "-x-",
		"x--y", "9p", "te", strings.Repeat("x-", 40), "close", ""}
	for _, name := range names {
		h := http.Header{}
		for _, n := range names {
			h[n] = []string{"raw"}
			h[http.CanonicalHeaderKey(n)] = []string{"canonical"}
		}
		want := h.Clone()
		want.Del(name)
		del(h, name)
		if !reflect.DeepEqual(h, want) {
			t.Errorf("del(%q) left %v; Header.Del leaves %v", name, h, want)
		}
	}
}
