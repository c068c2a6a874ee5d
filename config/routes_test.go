package config

import "testing"

// TestRewritePrefixAndFallback: rewrite_prefix (nginx's proxy_pass with a
// path) on pool routes, fallback (try_files' last argument) on static ones,
// and each misuse a problem on its line.
func TestRewritePrefixAndFallback(t *testing.T) {
	routes := func(body string) string {
		return `
listeners:
  - name: a
    listen: 127.0.0.1:0
    mode: l7
    routes:
` + body + validPools
	}
	c := mustParse(t, routes(`      - {path: /ws/, pool: ws, rewrite_prefix: /socket/}
      - {path: /a/, pool: ws, strip_prefix: true, rewrite_prefix: ""}
      - {path: /, static: ./web}
      - {path: /plain/, static: ./web, fallback: ""}
      - {path: /app/, static: ./web, fallback: /app/index.html}
`))
	rs := c.Listeners[0].Routes
	for i, want := range []Route{
		{Path: "/ws/", Pool: "ws", RewritePrefix: "/socket/"},
		{Path: "/a/", Pool: "ws", StripPrefix: true},
		{Path: "/", Static: "./web", Fallback: "/index.html"},
		{Path: "/plain/", Static: "./web", Fallback: ""},
		{Path: "/app/", Static: "./web", Fallback: "/app/index.html"},
	} {
		if rs[i] != want {
			t.Errorf("routes[%d] = %+v, want %+v", i, rs[i], want)
		}
	}

	expect(t, routes(`      - {path: /ws/, pool: ws, strip_prefix: true, rewrite_prefix: /socket/}
      - {path: /s/, static: ./web, rewrite_prefix: /x/}
      - {path: /b/, pool: ws, rewrite_prefix: socket/}
      - {path: /c/, pool: ws, rewrite_prefix: /a/../b/}
      - {path: /d/, pool: ws, rewrite_prefix: "/a?b"}
      - {path: /e/, pool: ws, rewrite_prefix: "/a b/"}
      - {path: /f/, pool: ws, fallback: /index.html}
      - {path: /g/, static: ./web, fallback: index.html}
      - {path: /h/, static: ./web, fallback: /../etc/passwd}
`),
		want{6, "listeners[0].routes[0].rewrite_prefix", "set either strip_prefix or rewrite_prefix, not both: strip_prefix: true is rewrite_prefix: /"},
		want{7, "listeners[0].routes[1].rewrite_prefix", "only valid on routes with a pool, not static"},
		want{8, "listeners[0].routes[2].rewrite_prefix", `must be a path such as /socket/`},
		want{9, "listeners[0].routes[3].rewrite_prefix", `got "/a/../b/"`},
		want{10, "listeners[0].routes[4].rewrite_prefix", `got "/a?b"`},
		want{11, "listeners[0].routes[5].rewrite_prefix", `got "/a b/"`},
		want{12, "listeners[0].routes[6].fallback", "only valid on static routes"},
		want{13, "listeners[0].routes[7].fallback", `must be "" (404) or a path inside the folder such as /index.html, got "index.html"`},
		want{14, "listeners[0].routes[8].fallback", `got "/../etc/passwd"`},
	)
}
