// Package header holds the pure header logic of the l7 proxy: hop-by-hop removal,
// Upgrade detection, X-Forwarded-*/Forwarded rewriting and the WebSocket handshake
// checks of RFC 6455. It works on http.Header values parsed by net/http and never
// touches a socket; read l7/ next to see the order in which the proxy calls it.
package header

import "net/http"

// RemoveHopByHop deletes the hop-by-hop headers from h, which is a request head
// about to go to a backend or a response head about to go to a client.
//
// Removed are every header named in a Connection token (RFC 9110 §7.6.1; tokens
// in any case, with any spacing, across all Connection lines) and a fixed list:
// Connection, Proxy-Connection (non-standard, still sent by libcurl), Keep-Alive,
// TE, Trailer, Transfer-Encoding and Upgrade (§7.6.1, §7.6.2, §7.8), plus
// Proxy-Authenticate and Proxy-Authorization. RFC 9110 §11.7 says the last two
// apply to the next hop only; wslb is a gateway that does no proxy
// authentication, so a client's proxy credentials must not leak to a backend and a
// backend's proxy challenge means nothing to a client. This is the same list as
// net/http/httputil.ReverseProxy's.
//
// Call it before adding headers of wslb's own (SetForwarded, the Upgrade pair
// for a tunnel): a client can name any header in Connection, and a header added
// afterwards cannot be removed that way. Call UpgradeToken before it, since it
// reads the Connection and Upgrade headers this deletes.
func RemoveHopByHop(h http.Header) {
	for name := range tokens(h.Values("Connection")) {
		h.Del(name)
	}
	for name := range h {
		if isHopByHop(name) {
			delete(h, name)
		}
	}
}

// isHopByHop reports whether the canonical header name is always hop-by-hop.
func isHopByHop(name string) bool {
	switch name {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Te", "Trailer",
		"Transfer-Encoding", "Upgrade", "Proxy-Authenticate", "Proxy-Authorization":
		return true
	}
	return false
}
