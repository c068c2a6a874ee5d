package header

import (
	"iter"
	"strings"
)

// tokens yields the elements of the comma-separated lists in values, trimmed of
// optional whitespace, skipping the empty elements that RFC 9110 §5.6.1 tells
// recipients to accept ("a, , b").
func tokens(values []string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for _, v := range values {
			for t := range strings.SplitSeq(v, ",") {
				if t = trimOWS(t); t != "" && !yield(t) {
					return
				}
			}
		}
	}
}

// hasToken reports whether the lists in values contain want, compared without
// regard to ASCII case (RFC 9110 §7.6.1: connection options are case-insensitive).
func hasToken(values []string, want string) bool {
	for t := range tokens(values) {
		if equalFold(t, want) {
			return true
		}
	}
	return false
}

// firstToken returns the first element of the lists in values, or "".
func firstToken(values []string) string {
	for t := range tokens(values) {
		return t
	}
	return ""
}

// trimOWS trims RFC 9110 §5.6.3 optional whitespace (SP and HTAB only).
func trimOWS(s string) string {
	return strings.Trim(s, " \t")
}

// equalFold is strings.EqualFold limited to ASCII. Tokens are ASCII, and Unicode
// folding would let "webſocket" (long s) pass for "websocket".
func equalFold(a, b string) bool { return equalAs(a, b, lower) }

// equalAs reports whether a and b are equal once every byte is mapped by as.
func equalAs(a, b string, as func(byte) byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if as(a[i]) != as(b[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// isToken reports whether s is an RFC 9110 §5.6.2 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTchar(s[i]) {
			return false
		}
	}
	return true
}

func isTchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// validValue reports whether s can be sent as a field value: RFC 9110 §5.5 makes
// CR, LF and NUL invalid anywhere in one, since they would split or end the line.
func validValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '\r' || c == '\n' || c == 0 {
			return false
		}
	}
	return true
}
