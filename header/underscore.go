package header

import (
	"net/http"
	"strings"

	"github.com/wslb/wslb/config"
)

// removeUnderscored deletes from h, a request head going to a backend, the
// underscore spellings (X_Real_IP, x_forwarded_for, X-Forwarded_Host…) of the
// headers wslb sets or removes itself, and of those named in also
// (http.request_headers). CGI (RFC 3875 §4.1.18) gives a backend each
// header as HTTP_ and its name in upper case with '-' as '_', so PHP, WSGI
// and other CGI-style backends read X_Real_IP as the X-Real-IP that wslb
// vouches for, and which of the two they keep is up to them. nginx drops
// every name with an underscore (underscores_in_headers off); wslb drops
// only these, and other such names still reach backends that use them.
//
// Only names holding '_' are looked at, so an ordinary head costs a scan of
// its names and no allocation.
func removeUnderscored(h http.Header, also []config.RequestHeader) {
	for name := range h {
		if strings.IndexByte(name, '_') < 0 {
			continue
		}
		if ownSpelling(name) || configuredSpelling(name, also) {
			delete(h, name)
		}
	}
}

// ownSpelling reports whether a CGI-style backend reads name as a header
// wslb sets (X-Real-IP, X-Forwarded-*, the framing of the body) or removes
// as hop-by-hop (those of them a '-' is in: the others have no other
// spelling).
func ownSpelling(name string) bool {
	for _, own := range [...]string{
		"X-Real-Ip", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Port",
		"Content-Length", "Transfer-Encoding",
		"Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	} {
		if sameToCGI(name, own) {
			return true
		}
	}
	return false
}

// configuredSpelling reports whether a CGI-style backend reads name as one
// of the headers of set.
func configuredSpelling(name string, set []config.RequestHeader) bool {
	for _, rh := range set {
		if sameToCGI(name, rh.Name) {
			return true
		}
	}
	return false
}

// sameToCGI reports whether header names a and b make the same CGI
// variable: equal but for case and '_' for '-'.
func sameToCGI(a, b string) bool { return equalAs(a, b, cgiByte) }

// cgiByte is c as CGI writes it in a variable name: upper case, '-' as '_'.
func cgiByte(c byte) byte {
	switch {
	case c == '-':
		return '_'
	case 'a' <= c && c <= 'z':
		return c - ('a' - 'A')
	}
	return c
}
