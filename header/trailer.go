package header

import (
	"net/http"
	"strings"
)

// FilterTrailer keeps, of the trailer fields a client sent after a chunked
// request body, only those it announced in its Trailer header (announced)
// and that a trailer may carry. net/http's reader keeps every field of the
// trailer section, announced or not, and a backend that merges trailers
// into the head (RFC 9110 §6.5.2 lets it) would then read another Host,
// length or client than the head wslb checked and rewrote. Dropped are
// the fields RFC 9110 §6.5.1 forbids in a trailer (framing, routing,
// request modifiers, authentication, content handling), the hop-by-hop
// ones, and every header wslb sets itself, in any spelling a CGI-style
// backend reads alike.
func FilterTrailer(trailer http.Header, announced func(name string) bool) {
	for name := range trailer {
		if !announced(name) || !trailerAllowed(name) || ownSpelling(name) {
			delete(trailer, name)
		}
	}
}

// trailerAllowed reports whether name, in canonical form, may come in a
// trailer.
func trailerAllowed(name string) bool {
	if isHopByHop(name) || strings.HasPrefix(name, "X-Forwarded-") {
		return false
	}
	switch name {
	case "Host", "Content-Length", "Content-Type", "Content-Encoding", "Content-Range", "Trailer",
		"Authorization", "Cookie", "Expect", "Max-Forwards", "Range", "If-Match", "If-None-Match",
		"If-Modified-Since", "If-Unmodified-Since", "If-Range", "Cache-Control", "Pragma",
		"X-Real-Ip", "Forwarded", "Sec-Websocket-Key", "Sec-Websocket-Version":
		return false
	}
	return true
}
