package header

import (
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/wslb/wslb/config"
)

// Forwarding describes one hop, the client conn a request arrived on, for
// ClientIP and SetForwarded. The zero value trusts nobody and sets nothing;
// it still removes what only a trusted peer may send.
type Forwarding struct {
	Peer       netip.Addr     // the conn's remote address, or the one an accepted PROXY header gave
	Trusted    []netip.Prefix // http.trusted_proxies: peers whose X-Forwarded-For and Forwarded are kept
	Host       string         // the client's Host as sent, port included if present
	Proto      string         // "https" on TLS listeners, else "http"
	Port       int            // the port of the listener the request arrived on
	XForwarded bool           // http.forwarded_headers: X-Real-IP, X-Forwarded-For/-Host/-Proto/-Port
	RFC7239    bool           // http.forwarded: also the standard Forwarded header
	// RequestHeaders are http.request_headers, set later (SetRequestHeaders):
	// headers wslb sets too, whose underscore spellings SetForwarded removes.
	RequestHeaders []config.RequestHeader
}

// ClientIP returns the client address for this hop.
//
// It is Peer, unless Peer is trusted and the request carries X-Forwarded-For.
// Then the entries of all X-Forwarded-For headers, read as one comma-separated
// list, are walked from the right, the end the trusted proxies appended to, and
// the first entry that is not itself trusted is the client (nginx's real_ip
// with real_ip_recursive on). If every entry is trusted, the leftmost is. A
// malformed entry stops the walk, since nothing left of it can be vouched for:
// the last good address is returned, or Peer if there was none.
//
// Entries may be quoted and may carry a port ("1.2.3.4:5678", "[::1]:80").
// Addresses are returned unmapped (::ffff:1.2.3.4 becomes 1.2.3.4) and without
// an IPv6 zone, which names an interface of some other host.
func (f Forwarding) ClientIP(h http.Header) netip.Addr {
	peer := clean(f.Peer)
	return f.clientIP(h, peer, f.trusted(peer))
}

// clientIP is ClientIP for peer, cleaned, and whether it is trusted.
func (f Forwarding) clientIP(h http.Header, peer netip.Addr, trusted bool) netip.Addr {
	if !trusted {
		return peer
	}
	good := peer
	xff := h["X-Forwarded-For"]
	for i := len(xff) - 1; i >= 0; i-- {
		for rest := xff[i]; rest != ""; {
			var entry string
			if c := strings.LastIndexByte(rest, ','); c >= 0 {
				rest, entry = rest[:c], rest[c+1:]
			} else {
				rest, entry = "", rest
			}
			if entry = trimOWS(entry); entry == "" {
				continue // an empty list element (RFC 9110 §5.6.1)
			}
			a, ok := parseNode(entry)
			if !ok {
				return good
			}
			if good = a; !f.trusted(a) {
				return a
			}
		}
	}
	return good
}

// SetForwarded rewrites h, a request head going to a backend, to say who the
// client is (DESIGN.md, "Headers to the backend"), and returns the client's
// address, ClientIP as it was before the rewrite:
//
//   - X-Real-IP is ClientIP.
//   - X-Forwarded-For is the incoming list (all headers, joined by ", ") with Peer
//     appended when Peer is trusted, and Peer alone otherwise, so that a client
//     cannot plant addresses a backend would believe.
//   - X-Forwarded-Host is Host, X-Forwarded-Port is Port, X-Forwarded-Proto is
//     Proto.
//   - With RFC7239, Forwarded gets the element
//     for=<Peer>;host=<Host>;proto=<Proto> (RFC 7239 §4), appended to the
//     incoming elements when Peer is trusted and replacing them otherwise.
//     Without it, Forwarded is kept as sent from a trusted Peer and removed
//     from any other.
//   - The underscore spellings of the headers wslb sets or removes, and of
//     RequestHeaders, are removed, whatever the options (removeUnderscored).
//
// Every header it writes replaces what the client sent; one whose value would be
// empty (no Host on an HTTP/1.0 request, no Peer) is removed instead.
//
// With XForwarded false no X- header is touched: what the client sent passes
// as it is. That is what the user asked for by turning the option off (a
// backend that does its own forwarding logic, or another proxy behind wslb
// that does); it also means a backend must not believe those headers.
// http.forwarded is off by default, so there turning it off asks for nothing:
// an untrusted client's Forwarded goes, as its X-Forwarded-For would.
func (f Forwarding) SetForwarded(h http.Header) netip.Addr {
	peer := clean(f.Peer)
	trusted := f.trusted(peer)
	client := f.clientIP(h, peer, trusted)
	fs := fields{h: h}
	if f.XForwarded {
		peerText, clientText, port := f.texts(peer, client)
		fs.set("X-Real-Ip", clientText)
		xff := peerText
		if trusted {
			if in := joinList(h["X-Forwarded-For"]); in != "" {
				xff = in + ", " + xff
			}
		}
		fs.set("X-Forwarded-For", xff)
		fs.set("X-Forwarded-Host", f.Host)
		fs.set("X-Forwarded-Port", port)
		fs.set("X-Forwarded-Proto", f.Proto)
	}
	switch {
	case f.RFC7239:
		fwd := f.element(peer)
		if trusted {
			if in := joinList(h["Forwarded"]); in != "" {
				fwd = in + ", " + fwd
			}
		}
		fs.set("Forwarded", fwd)
	case !trusted:
		delete(h, "Forwarded")
	}
	removeUnderscored(h, f.RequestHeaders)
	return client
}

// texts returns peer, client and Port as text ("" for an invalid address
// or no port), all cut from one allocated string.
func (f Forwarding) texts(peer, client netip.Addr) (peerText, clientText, port string) {
	var buf [2*len("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255") + 8]byte
	b := buf[:0]
	if peer.IsValid() {
		b = peer.AppendTo(b)
	}
	p := len(b)
	if client != peer && client.IsValid() {
		b = client.AppendTo(b)
	}
	c := len(b)
	if f.Port > 0 {
		b = strconv.AppendInt(b, int64(f.Port), 10)
	}
	all := string(b)
	peerText, clientText, port = all[:p], all[p:c], all[c:]
	if client == peer {
		clientText = peerText
	}
	return peerText, clientText, port
}

// fields sets header values, all in one backing array, since a request gets
// several: one allocation rather than one per header.
type fields struct {
	h    http.Header
	vals []string
}

// set replaces every h[name] with value, or removes them when value is empty
// or is not a valid field value. name must be canonical.
func (fs *fields) set(name, value string) {
	if value == "" || !validValue(value) {
		delete(fs.h, name)
		return
	}
	if len(fs.vals) == cap(fs.vals) {
		fs.vals = make([]string, 0, 6)
	}
	fs.vals = append(fs.vals, value)
	n := len(fs.vals)
	// Capped, so that an append to one header cannot write over the next.
	fs.h[name] = fs.vals[n-1 : n : n]
}

// element is this hop's forwarded-element (RFC 7239 §4). A parameter whose value
// cannot be written even as a quoted-string is left out rather than sent broken.
func (f Forwarding) element(peer netip.Addr) string {
	var b strings.Builder
	b.WriteString("for=")
	switch {
	case !peer.IsValid():
		b.WriteString("unknown") // §6.2: the client is not known
	case peer.Is6():
		// §6: an IPv6 node is bracketed, and ":" is not a token character, so it
		// must be quoted: for="[2001:db8::1]".
		b.WriteString(`"[` + peer.String() + `]"`)
	default:
		b.WriteString(peer.String())
	}
	for _, p := range [...]struct{ name, value string }{{"host", f.Host}, {"proto", f.Proto}} {
		if v, ok := paramValue(p.value); ok && p.value != "" {
			b.WriteString(";" + p.name + "=" + v)
		}
	}
	return b.String()
}

// paramValue writes s as an RFC 7239 §4 value: a token if it is one, else a
// quoted-string (RFC 9110 §5.6.4), as a Host with a port needs since ":" is not a
// token character. ok is false if s holds a byte no quoted-string may carry.
func paramValue(s string) (string, bool) {
	if isToken(s) {
		return s, true
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '\t' || c >= 0x20 && c != 0x7f:
			b.WriteByte(c)
		default:
			return "", false
		}
	}
	b.WriteByte('"')
	return b.String(), true
}

// trusted reports whether a is inside one of the trusted prefixes.
func (f Forwarding) trusted(a netip.Addr) bool {
	for _, p := range f.Trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parseNode parses one X-Forwarded-For entry: an address, maybe with a port,
// maybe quoted (some proxies write RFC 7239 style node values there).
func parseNode(s string) (netip.Addr, bool) {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return clean(ap.Addr()), true
	}
	if len(s) >= 2 && s[0] == '[' && s[len(s)-1] == ']' {
		a, err := netip.ParseAddr(s[1 : len(s)-1])
		return clean(a), err == nil && a.Is6()
	}
	a, err := netip.ParseAddr(s)
	return clean(a), err == nil
}

// clean unmaps a (4in6 becomes 4) and drops its zone, so that it compares
// equal to the prefixes in Trusted and means the same on the backend's host.
func clean(a netip.Addr) netip.Addr {
	return a.Unmap().WithZone("")
}

// joinList joins the non-empty values of a list header with ", " (RFC 9110 §5.3
// makes several lines of a list header equal to one joined line).
func joinList(values []string) string {
	var b strings.Builder
	for _, v := range values {
		if v = trimOWS(v); v != "" {
			if b.Len() > 0 {
				b.WriteString(", ")
			}
			b.WriteString(v)
		}
	}
	return b.String()
}
