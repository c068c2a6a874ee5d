package header

import (
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/wslb/wslb/config"
)

// Vars are what the ${variables} of http.request_headers stand for in one
// request (config.Var has their names).
type Vars struct {
	Host   string     // the client's Host as sent, port included if present
	Port   int        // the port of the listener the request arrived on
	Scheme string     // "https" on TLS listeners, else "http"
	Peer   netip.Addr // the conn's remote address, or the one an accepted PROXY header gave
	Client netip.Addr // the client after trusted_proxies (SetForwarded's answer)
}

// SetRequestHeaders sets every header of set (http.request_headers, parsed
// by config) on h, a request head going to a backend, replacing what the
// client sent, as nginx's proxy_set_header does. Call it after
// SetForwarded, so that a value of the user's wins over wslb's own. A value
// that expands to "" removes the header (nginx passes no empty header
// either); one that could not be written as a header line is left out
// rather than let it split the head.
//
// Host is not in h (the request line's Host field is): its value is
// returned, "" when set does not name it.
func SetRequestHeaders(h http.Header, set []config.RequestHeader, v Vars) (host string) {
	fs := fields{h: h}
	for _, rh := range set {
		value := v.expand(rh.Value)
		if rh.Name == "Host" {
			host = value
			continue
		}
		fs.set(rh.Name, value)
	}
	return host
}

// expand writes out parts with the variables' values. A value that is one
// piece of text or of the request's own strings is returned as it is; any
// other is built on the stack and copied once.
func (v Vars) expand(parts []config.Part) string {
	if len(parts) == 1 {
		if s, ok := v.whole(parts[0]); ok {
			return s
		}
	}
	var buf [128]byte
	b := buf[:0]
	for _, p := range parts {
		b = v.append(b, p)
	}
	return string(b)
}

// whole returns the value of p when it exists as a string already.
func (v Vars) whole(p config.Part) (string, bool) {
	switch p.Var {
	case 0:
		return p.Text, true
	case config.VarHTTPHost:
		return v.Host, true
	case config.VarScheme:
		return v.Scheme, true
	case config.VarHost:
		h := hostWithoutPort(v.Host)
		return h, strings.IndexFunc(h, func(r rune) bool { return 'A' <= r && r <= 'Z' }) < 0
	}
	return "", false
}

// append appends the value of p to b.
func (v Vars) append(b []byte, p config.Part) []byte {
	switch p.Var {
	case 0:
		return append(b, p.Text...)
	case config.VarHost:
		// Host names are case-insensitive, and nginx's $host is lower case.
		for _, c := range []byte(hostWithoutPort(v.Host)) {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			b = append(b, c)
		}
		return b
	case config.VarHTTPHost:
		return append(b, v.Host...)
	case config.VarServerPort:
		if v.Port > 0 {
			b = strconv.AppendInt(b, int64(v.Port), 10)
		}
		return b
	case config.VarScheme:
		return append(b, v.Scheme...)
	case config.VarRemoteAddr:
		return appendAddr(b, v.Peer)
	case config.VarClientIP:
		return appendAddr(b, v.Client)
	}
	return b
}

// appendAddr appends a as SetForwarded writes it (unmapped, no zone);
// nothing when it is not valid.
func appendAddr(b []byte, a netip.Addr) []byte {
	if !a.IsValid() {
		return b
	}
	return clean(a).AppendTo(b)
}

// hostWithoutPort is nginx's $host taken from a Host header: the name, or
// the bracketed IPv6 literal, without ":port".
func hostWithoutPort(host string) string {
	if strings.HasPrefix(host, "[") {
		if i := strings.IndexByte(host, ']'); i >= 0 {
			return host[:i+1]
		}
		return host
	}
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		return host[:i]
	}
	return host
}
