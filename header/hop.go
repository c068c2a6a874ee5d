// Package header holds the pure header logic of the l7 proxy: hop-by-hop removal,
// Upgrade detection, X-Forwarded-*/Forwarded rewriting and the WebSocket handshake
// checks of RFC 6455. It works on http.Header values parsed by net/http and never
// touches a socket; read l7/ next to see the order in which the proxy calls it.
package header

import "net/http"

// RemoveHopByHop deletes the hop-by-hop headers from h, which is a request head
// about to go to a backend or a response head about to go to a client.
//
// Removed are Connection and every header named in its tokens (RFC 9110 §7.6.1;
// tokens in any case, with any spacing, across all Connection lines), and the
// headers §7.6.1 lists as needing removal whether or not they are named:
// Proxy-Connection, Keep-Alive, TE, Transfer-Encoding and Upgrade. Also removed,
// as net/http/httputil.ReverseProxy does, are Trailer (it announces the trailers
// of this hop's chunked framing, which the proxy redoes) and Proxy-Authenticate
// and Proxy-Authorization: §11.7.1 and §11.7.2 make those concern the next hop
// only, and wslb is a gateway that does no proxy authentication, so a client's
// proxy credentials must not leak to a backend and a backend's proxy challenge
// means nothing to a client.
//
// The caller frames bodies from the parsed message (ContentLength,
// TransferEncoding), never from these headers. Call UpgradeToken and
// CheckWebSocketRequest first, since they read headers this may delete, and add
// wslb's own headers (SetForwarded, the Upgrade pair of a tunnel) afterwards:
// a client can name any header in Connection, and one added later cannot be
// removed that way.
func RemoveHopByHop(h http.Header) {
	if conn := h["Connection"]; len(conn) > 0 {
		for name := range tokens(conn) {
			del(h, name)
		}
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

// del is h.Del(name) without an allocation for a name not in canonical
// form, such as the "keep-alive" most clients list in Connection: its
// canonical form is built on the stack and looked up first.
func del(h http.Header, name string) {
	var buf [64]byte
	if len(name) > len(buf) {
		h.Del(name)
		return
	}
	key := buf[:len(name)]
	upper := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !isTchar(c) {
			// textproto leaves such a name as it is.
			delete(h, name)
			return
		}
		switch {
		case upper && 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		case !upper && 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		key[i] = c
		upper = c == '-'
	}
	if _, ok := h[string(key)]; ok {
		delete(h, string(key))
	}
}
