// Package route picks what serves an l7 request: the route with the longest
// matching path prefix (nginx `location` prefix semantics), or the listener's
// default pool. It decides and rewrites the URL; l7 answers.
//
// Read route.go (New, Match), then path.go for dot segments and prefix rewriting.
package route

import (
	"cmp"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/wslb/wslb/config"
)

// Kind says how the caller answers a request.
type Kind int

// Kinds of Result. NotFound is the zero value so that a Result nobody filled in
// never sends traffic anywhere.
const (
	NotFound Kind = iota // no route and no default pool: 404
	Pool                 // forward to Result.Pool
	Static               // serve Result.URL.Path from the folder Result.Dir
	Redirect             // 308 to Result.Location, for every method
	BadPath              // the path climbs above the root: 400
)

// String returns the kind's name, for logs and test messages.
func (k Kind) String() string {
	switch k {
	case NotFound:
		return "NotFound"
	case Pool:
		return "Pool"
	case Static:
		return "Static"
	case Redirect:
		return "Redirect"
	case BadPath:
		return "BadPath"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Result is the outcome of Table.Match.
//
// URL (Kind Pool or Static) is a copy of the request URL carrying the path to
// use: normalised, and with the route's path replaced by rewrite_prefix (or
// stripped, by strip_prefix). For Static it is the path inside Dir, always
// starting with "/": without strip_prefix the whole request path (nginx
// `root`), with it the rest after the prefix (nginx `alias`).
type Result struct {
	Kind     Kind
	Pool     string   // Kind Pool: the route's pool, or the default pool when no route matched
	Dir      string   // Kind Static: the route's folder
	Fallback string   // Kind Static: the route's fallback file, "" for none
	Prefix   string   // the matched route's path; "" when the default pool serves
	URL      *url.URL // Kind Pool or Static; nil otherwise
	Location string   // Kind Redirect: the path with "/" appended, query kept
}

// Table holds one listener's routes. It is immutable once built and safe for
// concurrent use.
type Table struct {
	routes      []config.Route // longest path first
	defaultPool string
}

// New builds the table for routes (validated by config: each path starts with
// "/" and has exactly one of pool and static). defaultPool serves requests no
// route matches; "" means those get NotFound.
func New(routes []config.Route, defaultPool string) *Table {
	rs := slices.Clone(routes)
	// Longest first, so the first prefix that matches is the longest one. The
	// stable sort lets the first of two equal paths win, as in the config file.
	slices.SortStableFunc(rs, func(a, b config.Route) int {
		return cmp.Compare(len(b.Path), len(a.Path))
	})
	return &Table{routes: rs, defaultPool: defaultPool}
}

// Match routes the request URL u. It never modifies u: Result.URL is a copy.
//
// A path with dot segments or repeated slashes is normalised first and the
// normalised path is used both for matching and in Result.URL, so that
// /public/../admin is routed, and forwarded, as /admin.
//
// A route /p/ also catches the bare path /p with a Redirect, unless a route
// whose path is exactly /p exists: that route matches the same characters and
// serves the request, as it does in nginx. A redirect beats a shorter prefix
// (with routes /web and /websocket/, /websocket is redirected).
func (t *Table) Match(u *url.URL) Result {
	c := *u // url.URL has no mutable shared parts apart from the read-only *Userinfo
	if !strings.HasPrefix(c.Path, "/") {
		// "*" (OPTIONS *) and empty paths name no resource a prefix could match.
		return t.fallback(&c)
	}
	if needsClean(c.Path) {
		p, ok := cleanPath(c.Path)
		if !ok {
			return Result{Kind: BadPath}
		}
		// RawPath was the escaped form of the old path; the new one has none.
		c.Path, c.RawPath = p, ""
	}

	r, ok := t.longest(c.Path)
	if !ok || len(r.Path) < len(c.Path) {
		// No route equals the path itself, so a route path+"/" may claim it.
		if s, ok := t.withSlash(c.Path); ok {
			return Result{Kind: Redirect, Prefix: s.Path, Location: location(&c)}
		}
	}
	if !ok {
		return t.fallback(&c)
	}
	if with, ok := rewrite(r); ok {
		replacePrefix(&c, len(r.Path), with)
	}
	if r.Static != "" {
		return Result{Kind: Static, Dir: r.Static, Fallback: r.Fallback, Prefix: r.Path, URL: &c}
	}
	return Result{Kind: Pool, Pool: r.Pool, Prefix: r.Path, URL: &c}
}

// rewrite returns what replaces the matched prefix of r, if anything.
func rewrite(r config.Route) (string, bool) {
	switch {
	case r.RewritePrefix != "":
		return r.RewritePrefix, true
	case r.StripPrefix:
		return "/", true
	}
	return "", false
}

// longest returns the route with the longest path that is a prefix of p.
func (t *Table) longest(p string) (config.Route, bool) {
	for _, r := range t.routes {
		if strings.HasPrefix(p, r.Path) {
			return r, true
		}
	}
	return config.Route{}, false
}

// withSlash returns the route whose path is p+"/", if any.
func (t *Table) withSlash(p string) (config.Route, bool) {
	for _, r := range t.routes {
		if len(r.Path) == len(p)+1 && strings.HasSuffix(r.Path, "/") && strings.HasPrefix(r.Path, p) {
			return r, true
		}
	}
	return config.Route{}, false
}

// fallback is the answer when no route matches.
func (t *Table) fallback(c *url.URL) Result {
	if t.defaultPool == "" {
		return Result{Kind: NotFound}
	}
	return Result{Kind: Pool, Pool: t.defaultPool, URL: c}
}

// location is the redirect target for the bare prefix path in c: the path with
// "/" appended and the query kept.
func location(c *url.URL) string {
	l := url.URL{Path: c.Path + "/", RawQuery: c.RawQuery, ForceQuery: c.ForceQuery}
	return l.RequestURI()
}
