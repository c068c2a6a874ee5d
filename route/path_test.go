package route

import "testing"

func TestCleanPath(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // "" means climbs above the root
	}{
		{name: "plain", in: "/a/b", want: "/a/b"},
		{name: "root", in: "/", want: "/"},
		{name: "double slash", in: "//", want: "/"},
		{name: "merge", in: "/a//b///c", want: "/a/b/c"},
		{name: "trailing slash kept", in: "/a//b/", want: "/a/b/"},
		{name: "dot", in: "/a/./b", want: "/a/b"},
		{name: "trailing dot", in: "/a/.", want: "/a/"},
		{name: "dot dot", in: "/a/b/../c", want: "/a/c"},
		{name: "trailing dot dot", in: "/a/b/..", want: "/a/"},
		{name: "back to root", in: "/a/..", want: "/"},
		{name: "root dot", in: "/.", want: "/"},
		{name: "dots in names", in: "/a/..b/.c/...", want: "/a/..b/.c/..."},
		{name: "climb", in: "/..", want: ""},
		{name: "climb later", in: "/a/../../b", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := cleanPath(tt.in)
			if tt.want == "" {
				if ok {
					t.Errorf("cleanPath(%q) = %q; want climb error", tt.in, got)
				}
				return
			}
			if !ok || got != tt.want {
				t.Errorf("cleanPath(%q) = %q, %v; want %q", tt.in, got, ok, tt.want)
			}
		})
	}
}

func TestNeedsClean(t *testing.T) {
	for _, p := range []string{"/a/b", "/", "/a/", "/a/..b", "/.well-known/x", "/a/b..", "/..."} {
		if needsClean(p) {
			t.Errorf("needsClean(%q) = true; want false", p)
		}
	}
	for _, p := range []string{"//", "/a//b", "/./a", "/a/.", "/a/..", "/../a", "/a/../b"} {
		if !needsClean(p) {
			t.Errorf("needsClean(%q) = false; want true", p)
		}
	}
}
