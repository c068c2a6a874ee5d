package route

import (
	"net/url"
	"testing"

	"github.com/wslb/wslb/config"
)

func testRoutes() []config.Route {
	return []config.Route{
		{Path: "/", Static: "./web"},
		{Path: "/websocket/", Pool: "ws", StripPrefix: true},
		{Path: "/ws", Pool: "short", StripPrefix: true},
		{Path: "/api/", Pool: "api"},
		{Path: "/api/v2/", Pool: "api2"},
		{Path: "/exact", Pool: "exact"},
		{Path: "/exact/", Pool: "exactslash"},
		{Path: "/assets/", Static: "./assets", StripPrefix: true},
		{Path: "/docs/", Static: "./site"},
	}
}

// rewriteRoutes are routes with rewrite_prefix, each a translation of an
// nginx location whose proxy_pass has a path.
func rewriteRoutes() []config.Route {
	return []config.Route{
		{Path: "/ws/", Pool: "ws", RewritePrefix: "/socket/"},
		{Path: "/root/", Pool: "ws", RewritePrefix: "/"},
		{Path: "/v1", Pool: "ws", RewritePrefix: "/v2"},
		{Path: "/p", Pool: "ws", RewritePrefix: "/q/"},
		{Path: "/e/", Pool: "ws", RewritePrefix: "/é/"},
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		name     string
		routes   []config.Route // nil: testRoutes()
		def      string
		uri      string // request-target as sent
		kind     Kind
		pool     string
		dir      string
		prefix   string
		path     string // Result.URL.Path
		rawPath  string // Result.URL.RawPath
		query    string // Result.URL.RawQuery
		location string
	}{
		{name: "root static", uri: "/index.html", kind: Static, dir: "./web", prefix: "/", path: "/index.html"},
		{name: "longest prefix wins", uri: "/api/v2/users", kind: Pool, pool: "api2", prefix: "/api/v2/", path: "/api/v2/users"},
		{name: "shorter prefix", uri: "/api/v1/users", kind: Pool, pool: "api", prefix: "/api/", path: "/api/v1/users"},
		{name: "ws catches wsx", uri: "/wsx", kind: Pool, pool: "short", prefix: "/ws", path: "/x"},
		{name: "ws stripped", uri: "/ws/chat", kind: Pool, pool: "short", prefix: "/ws", path: "/chat"},
		{name: "websocket strip", uri: "/websocket/chat?room=1", kind: Pool, pool: "ws", prefix: "/websocket/", path: "/chat", query: "room=1"},
		{name: "strip equal to prefix", uri: "/websocket/", kind: Pool, pool: "ws", prefix: "/websocket/", path: "/"},
		{name: "strip bare ws", uri: "/ws", kind: Pool, pool: "short", prefix: "/ws", path: "/"},
		{name: "bare prefix redirect", uri: "/websocket", kind: Redirect, prefix: "/websocket/", location: "/websocket/"},
		{name: "bare prefix redirect keeps query", uri: "/websocket?a=1&b=%20", kind: Redirect, prefix: "/websocket/", location: "/websocket/?a=1&b=%20"},
		{name: "bare prefix redirect keeps empty query", uri: "/websocket?", kind: Redirect, prefix: "/websocket/", location: "/websocket/?"},
		{name: "bare prefix redirect beats shorter prefix", uri: "/api", kind: Redirect, prefix: "/api/", location: "/api/"},
		{name: "exact route beats redirect", uri: "/exact", kind: Pool, pool: "exact", prefix: "/exact", path: "/exact"},
		{name: "slash route below exact", uri: "/exact/x", kind: Pool, pool: "exactslash", prefix: "/exact/", path: "/exact/x"},
		{name: "no redirect for longer path", uri: "/websocketx", kind: Static, dir: "./web", prefix: "/", path: "/websocketx"},
		{name: "no redirect for shorter path", uri: "/websocke", kind: Static, dir: "./web", prefix: "/", path: "/websocke"},
		{name: "static strip", uri: "/assets/app.js", kind: Static, dir: "./assets", prefix: "/assets/", path: "/app.js"},
		{name: "static no strip", uri: "/docs/a.html", kind: Static, dir: "./site", prefix: "/docs/", path: "/docs/a.html"},
		{name: "static strip equal", uri: "/assets/", kind: Static, dir: "./assets", prefix: "/assets/", path: "/"},
		{
			name: "escaped slash survives strip", uri: "/websocket/a%2Fb?x=1",
			kind: Pool, pool: "ws", prefix: "/websocket/", path: "/a/b", rawPath: "/a%2Fb", query: "x=1",
		},
		{
			name: "escaped slash right after prefix", uri: "/ws%2Fchat",
			kind: Pool, pool: "short", prefix: "/ws", path: "//chat", rawPath: "/%2Fchat",
		},
		{
			name: "escaped prefix chars", uri: "/web%73ocket/a%2Fb",
			kind: Pool, pool: "ws", prefix: "/websocket/", path: "/a/b", rawPath: "/a%2Fb",
		},
		{
			name: "escaped prefix, plain rest", uri: "/web%73ocket/chat",
			kind: Pool, pool: "ws", prefix: "/websocket/", path: "/chat",
		},
		{
			name: "raw path kept without strip", uri: "/api/a%2Fb",
			kind: Pool, pool: "api", prefix: "/api/", path: "/api/a/b", rawPath: "/api/a%2Fb",
		},
		{name: "dot segments", uri: "/docs/../websocket/chat", kind: Pool, pool: "ws", prefix: "/websocket/", path: "/chat"},
		{name: "dot dot out of static", uri: "/assets/../api/x", kind: Pool, pool: "api", prefix: "/api/", path: "/api/x"},
		{name: "encoded dot dot", uri: "/assets/%2e%2e/api/x", kind: Pool, pool: "api", prefix: "/api/", path: "/api/x"},
		{name: "encoded slash dot dot", uri: "/assets%2F..%2Fapi/x", kind: Pool, pool: "api", prefix: "/api/", path: "/api/x"},
		{name: "single dot and trailing slash", uri: "/api/./v2/./", kind: Pool, pool: "api2", prefix: "/api/v2/", path: "/api/v2/"},
		{name: "trailing dot dot keeps slash", uri: "/api/v2/x/..", kind: Pool, pool: "api2", prefix: "/api/v2/", path: "/api/v2/"},
		{name: "merged slashes", uri: "//api//v2///u", kind: Pool, pool: "api2", prefix: "/api/v2/", path: "/api/v2/u"},
		{name: "clean to bare redirect", uri: "/x/../websocket?q", kind: Redirect, prefix: "/websocket/", location: "/websocket/?q"},
		{name: "dot dot to root", uri: "/api/..", kind: Static, dir: "./web", prefix: "/", path: "/"},
		{name: "climb above root", uri: "/../etc/passwd", kind: BadPath},
		{name: "climb above root later", uri: "/a/../../b", kind: BadPath},
		{name: "climb encoded", uri: "/%2e%2e/x", kind: BadPath},
		// rewrite_prefix: nginx `location /ws/ { proxy_pass http://up/socket/; }`.
		{name: "rewrite", routes: rewriteRoutes(), uri: "/ws/chat?room=1", kind: Pool, pool: "ws", prefix: "/ws/", path: "/socket/chat", query: "room=1"},
		{name: "rewrite equal to prefix", routes: rewriteRoutes(), uri: "/ws/", kind: Pool, pool: "ws", prefix: "/ws/", path: "/socket/"},
		{name: "rewrite bare prefix redirects", routes: rewriteRoutes(), uri: "/ws", kind: Redirect, prefix: "/ws/", location: "/ws/"},
		{name: "rewrite to root", routes: rewriteRoutes(), uri: "/root/a/b", kind: Pool, pool: "ws", prefix: "/root/", path: "/a/b"},
		{name: "rewrite without slashes", routes: rewriteRoutes(), uri: "/v1x/y", kind: Pool, pool: "ws", prefix: "/v1", path: "/v2x/y"},
		{name: "rewrite slash to slash", routes: rewriteRoutes(), uri: "/v1/y", kind: Pool, pool: "ws", prefix: "/v1", path: "/v2/y"},
		{name: "rewrite with slash, rest with slash", routes: rewriteRoutes(), uri: "/p/a", kind: Pool, pool: "ws", prefix: "/p", path: "/q/a"},
		{name: "rewrite with slash, rest without", routes: rewriteRoutes(), uri: "/pa", kind: Pool, pool: "ws", prefix: "/p", path: "/q/a"},
		{name: "rewrite keeps escaped rest", routes: rewriteRoutes(), uri: "/ws/a%2Fb", kind: Pool, pool: "ws", prefix: "/ws/", path: "/socket/a/b", rawPath: "/socket/a%2Fb"},
		{name: "rewrite escapes its own bytes", routes: rewriteRoutes(), uri: "/e/x", kind: Pool, pool: "ws", prefix: "/e/", path: "/é/x"},
		{name: "rewrite escaped slash right after prefix", routes: rewriteRoutes(), uri: "/p%2Fa", kind: Pool, pool: "ws", prefix: "/p", path: "/q//a", rawPath: "/q/%2Fa"},
		{name: "rewrite after dot segments", routes: rewriteRoutes(), uri: "/x/../ws/./chat", kind: Pool, pool: "ws", prefix: "/ws/", path: "/socket/chat"},
		{name: "default pool", routes: []config.Route{{Path: "/api/", Pool: "api"}}, def: "main", uri: "/other?x=1", kind: Pool, pool: "main", path: "/other", query: "x=1"},
		{name: "default pool keeps raw path", routes: []config.Route{{Path: "/api/", Pool: "api"}}, def: "main", uri: "/a%2Fb", kind: Pool, pool: "main", path: "/a/b", rawPath: "/a%2Fb"},
		{name: "no routes default pool", routes: []config.Route{}, def: "main", uri: "/x", kind: Pool, pool: "main", path: "/x"},
		{name: "no default", routes: []config.Route{{Path: "/api/", Pool: "api"}}, uri: "/other", kind: NotFound},
		{name: "options star default", def: "main", uri: "*", kind: Pool, pool: "main", path: "*"},
		{name: "options star no default", uri: "*", kind: NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			routes := tt.routes
			if routes == nil {
				routes = testRoutes()
			}
			u, err := url.ParseRequestURI(tt.uri)
			if err != nil {
				t.Fatalf("ParseRequestURI(%q): %v", tt.uri, err)
			}
			before := *u
			got := New(routes, tt.def).Match(u)
			if *u != before {
				t.Errorf("request URL changed to %#v", u)
			}
			if got.Kind != tt.kind || got.Pool != tt.pool || got.Dir != tt.dir || got.Prefix != tt.prefix || got.Location != tt.location {
				t.Errorf("Match(%q) = {%v pool=%q dir=%q prefix=%q location=%q}; want {%v pool=%q dir=%q prefix=%q location=%q}",
					tt.uri, got.Kind, got.Pool, got.Dir, got.Prefix, got.Location, tt.kind, tt.pool, tt.dir, tt.prefix, tt.location)
			}
			if tt.kind != Pool && tt.kind != Static {
				if got.URL != nil {
					t.Errorf("URL = %v; want nil", got.URL)
				}
				return
			}
			if got.URL == nil {
				t.Fatal("URL is nil")
			}
			if got.URL == u {
				t.Error("URL is the request's own URL, not a copy")
			}
			if got.URL.Path != tt.path || got.URL.RawPath != tt.rawPath || got.URL.RawQuery != tt.query {
				t.Errorf("URL path=%q raw=%q query=%q; want path=%q raw=%q query=%q",
					got.URL.Path, got.URL.RawPath, got.URL.RawQuery, tt.path, tt.rawPath, tt.query)
			}
		})
	}
}

// The empty path of an absolute-form target (GET http://host HTTP/1.1) is not
// a path any prefix matches.
func TestMatchEmptyPath(t *testing.T) {
	u := &url.URL{Scheme: "http", Host: "example.com"}
	if got := New(testRoutes(), "").Match(u); got.Kind != NotFound {
		t.Errorf("Kind = %v; want NotFound", got.Kind)
	}
	if got := New(testRoutes(), "main").Match(u); got.Kind != Pool || got.Pool != "main" || got.URL.Host != "example.com" {
		t.Errorf("got %v pool %q url %v; want Pool main http://example.com", got.Kind, got.Pool, got.URL)
	}
}

// New copies the routes, so a caller reusing its slice cannot change a table.
func TestNewCopiesRoutes(t *testing.T) {
	routes := []config.Route{{Path: "/a/", Pool: "a"}}
	tb := New(routes, "")
	routes[0].Pool = "changed"
	if got := tb.Match(&url.URL{Path: "/a/x"}); got.Pool != "a" {
		t.Errorf("Pool = %q; want a", got.Pool)
	}
}

// Two routes with the same path: the first in the config wins.
func TestMatchDuplicatePath(t *testing.T) {
	tb := New([]config.Route{{Path: "/x", Pool: "first"}, {Path: "/x", Pool: "second"}}, "")
	if got := tb.Match(&url.URL{Path: "/x"}); got.Pool != "first" {
		t.Errorf("Pool = %q; want first", got.Pool)
	}
}
