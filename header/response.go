package header

import "net/http"

// SetResponseHeaders sets each header of extra (http.response_headers) on the
// response head h. It sets rather than adds, replacing whatever the backend sent
// under that name, so a backend that already sends Strict-Transport-Security does
// not end up with two. Names and values that could not be written as one header
// line (not a token, or CR, LF or NUL in the value) are skipped rather than let
// a configured value split the response head (RFC 9110 §5.5).
func SetResponseHeaders(h http.Header, extra map[string]string) {
	for name, value := range extra {
		if isToken(name) && validValue(value) {
			h.Set(name, value)
		}
	}
}
