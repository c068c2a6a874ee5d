package route

import (
	"net/url"
	"strings"
)

// needsClean reports whether p (starting with "/") has a "." or ".." segment
// or an empty one (a doubled slash).
func needsClean(p string) bool {
	return strings.Contains(p, "//") ||
		strings.Contains(p, "/./") || strings.Contains(p, "/../") ||
		strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..")
}

// cleanPath normalises p (starting with "/") as nginx does before it matches a
// location: dot segments are resolved, runs of slashes merged, and a trailing
// slash kept (a last "." or ".." segment names a directory, so it gets one
// too). It returns false when ".." would climb above the root, which nginx
// answers with 400.
func cleanPath(p string) (string, bool) {
	var segs []string
	for s := range strings.SplitSeq(p[1:], "/") {
		switch s {
		case "", ".":
		case "..":
			if len(segs) == 0 {
				return "", false
			}
			segs = segs[:len(segs)-1]
		default:
			segs = append(segs, s)
		}
	}
	out := "/" + strings.Join(segs, "/")
	last := p[strings.LastIndexByte(p, '/')+1:]
	if len(segs) > 0 && (last == "" || last == "." || last == "..") {
		out += "/"
	}
	return out, true
}

// replacePrefix replaces the first n bytes of u.Path (a matched route path)
// with with (rewrite_prefix: a clean path starting with "/"; strip_prefix
// is "/"). Where with ends in "/" and the rest starts with one, one of them
// goes, so "/" strips /ws from /ws/chat to /chat (nginx, replacing /ws with
// /, would send //chat). It cuts the escaped path at the same place, so an
// escaped byte in the rest (%2F above all) reaches the backend as it was
// sent; RawPath stays set only when the result is not in the default
// encoding.
func replacePrefix(u *url.URL, n int, with string) {
	rest := u.Path[n:]
	esc := u.EscapedPath()
	i := escapedLen(esc, n)
	if i < 0 {
		// Cannot happen (EscapedPath always decodes to Path); serve the
		// decoded path rather than a wrong escaped one.
		if strings.HasSuffix(with, "/") {
			rest = strings.TrimPrefix(rest, "/")
		}
		u.Path, u.RawPath = with+rest, ""
		return
	}
	erest := esc[i:]
	// Decide on the escaped rest: after route /ws, /ws%2Fx must become
	// /%2Fx, not /x, or the encoded slash would be lost.
	if strings.HasSuffix(with, "/") && strings.HasPrefix(erest, "/") {
		rest, erest = rest[1:], erest[1:]
	}
	u.Path, u.RawPath = with+rest, (&url.URL{Path: with}).EscapedPath()+erest
	if (&url.URL{Path: u.Path}).EscapedPath() == u.RawPath {
		u.RawPath = ""
	}
}

// escapedLen returns how many bytes of the escaped path esc decode to its
// first n bytes, or -1 if esc is shorter than that.
func escapedLen(esc string, n int) int {
	i := 0
	for range n {
		if i >= len(esc) {
			return -1
		}
		if esc[i] == '%' {
			i += 3
		} else {
			i++
		}
	}
	if i > len(esc) {
		return -1
	}
	return i
}
