package config

import "strings"

// The rules of an l7 listener's routes: a path, exactly one of pool and
// static, and the keys that only one of them takes.

func (v *checker) routes(routes []Route, p string, pools map[string]bool) {
	paths := v.unique("route path")
	for i, r := range routes {
		q := item(p, i)
		switch {
		case r.Path == "":
			v.add(key(q, "path"), "path is required: a prefix starting with /")
		case !strings.HasPrefix(r.Path, "/"):
			v.add(key(q, "path"), "must start with /, got %q", r.Path)
		default:
			paths.check(key(q, "path"), r.Path)
		}
		switch {
		case r.Pool != "" && r.Static != "":
			v.add(key(q, "static"), "a route has either a pool or static, not both")
		case r.Pool == "" && r.Static == "":
			v.add(q, "a route needs a pool or static")
		case r.Static != "":
			v.staticRoute(r, q)
		default:
			v.poolRoute(r, q)
		}
		v.poolRef(key(q, "pool"), r.Pool, pools)
	}
}

// staticRoute checks the keys of a route that serves a folder.
func (v *checker) staticRoute(r Route, q string) {
	if r.StripPrefix {
		v.add(key(q, "strip_prefix"), "only valid on routes with a pool, not static")
	}
	if r.RewritePrefix != "" {
		v.add(key(q, "rewrite_prefix"), "only valid on routes with a pool, not static")
	}
	if r.Fallback != "" && !isCleanPath(r.Fallback) {
		v.add(key(q, "fallback"), "must be \"\" (404) or a path inside the folder such as /index.html, got %q", r.Fallback)
	}
}

// poolRoute checks the keys of a route that forwards to a pool.
func (v *checker) poolRoute(r Route, q string) {
	if v.idx.isSet(key(q, "fallback")) {
		v.add(key(q, "fallback"), "only valid on static routes")
	}
	switch {
	case r.RewritePrefix == "": // none
	case r.StripPrefix:
		v.add(key(q, "rewrite_prefix"), "set either strip_prefix or rewrite_prefix, not both: strip_prefix: true is rewrite_prefix: /")
	case !isCleanPath(r.RewritePrefix):
		v.add(key(q, "rewrite_prefix"), "must be a path such as /socket/: starting with /, without query, spaces, control characters, // or . and .. segments; got %q", r.RewritePrefix)
	}
}

// isCleanPath reports whether p is an absolute path as a normalised request
// path would be: no "." or ".." segment, no "//", no query or fragment, and
// nothing a request target could not carry as it is.
func isCleanPath(p string) bool {
	if !strings.HasPrefix(p, "/") || strings.Contains(p, "//") {
		return false
	}
	for _, c := range []byte(p) {
		if c <= ' ' || c == 0x7f || c == '?' || c == '#' || c == '%' {
			return false
		}
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return false
		}
	}
	return true
}
