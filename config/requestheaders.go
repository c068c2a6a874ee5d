package config

import (
	"fmt"
	"net/textproto"
	"slices"
	"strings"
)

// Var is a variable a value of http.request_headers names as ${name}. Its
// value is per request (package header expands it); the names are nginx's.
type Var uint8

// The variables, each with nginx's meaning.
const (
	VarHost       Var = iota + 1 // ${host}: the client's Host without its port, lower case
	VarHTTPHost                  // ${http_host}: the client's Host as sent
	VarServerPort                // ${server_port}: the port of the listener the request came in on
	VarScheme                    // ${scheme}: http, or https on a TLS listener
	VarRemoteAddr                // ${remote_addr}: the address of the conn's peer (or of an accepted PROXY header)
	VarClientIP                  // ${client_ip}: the client, after trusted_proxies (nginx's realip $remote_addr)
)

// String is the name of v as written between ${ and }.
func (v Var) String() string {
	switch v {
	case VarHost:
		return "host"
	case VarHTTPHost:
		return "http_host"
	case VarServerPort:
		return "server_port"
	case VarScheme:
		return "scheme"
	case VarRemoteAddr:
		return "remote_addr"
	case VarClientIP:
		return "client_ip"
	}
	return fmt.Sprintf("Var(%d)", v)
}

// Part is a piece of a header value: the text Text, or, when Var is set, the
// variable's value.
type Part struct {
	Text string
	Var  Var
}

// RequestHeader is one entry of http.request_headers, parsed once at load so
// that no request parses it.
type RequestHeader struct {
	// Name is the canonical header name (X-Forwarded-Server).
	Name string
	// Value is the pieces of the value; none means remove the header.
	Value []Part
}

// refusedRequestHeader reports the names request_headers may not set: wslb
// writes each itself, and a value of the user's would break the request's
// framing, the upgrade or the handshake check. The reason completes
// "wslb sets NAME itself: …".
func refusedRequestHeader(name string) (reason string, refused bool) {
	switch name {
	case "Content-Length", "Transfer-Encoding", "Trailer":
		return "it frames the body wslb forwards, and another value would desynchronise the backend conn", true
	case "Connection", "Upgrade", "Keep-Alive", "Te", "Proxy-Connection":
		return "it is hop-by-hop, and wslb sets Upgrade and Connection on upgrades as nginx's map $http_upgrade does", true
	case "Sec-Websocket-Key", "Sec-Websocket-Version":
		return "the backend's 101 is checked against the client's handshake, which must reach it unchanged", true
	}
	return "", false
}

// requestHeaders checks and parses http.request_headers into h.SetHeaders.
func (v *checker) requestHeaders(h *HTTP, p string) {
	h.SetHeaders = nil
	names := make([]string, 0, len(h.RequestHeaders))
	for name := range h.RequestHeaders {
		names = append(names, name)
	}
	slices.Sort(names)
	first := map[string]string{} // canonical name -> the key that set it first
	for _, name := range names {
		value, q := h.RequestHeaders[name], key(key(p, "request_headers"), name)
		if !isToken(name) {
			v.add(q, "invalid header name %q: use letters, digits and -", name)
			continue
		}
		canon := textproto.CanonicalMIMEHeaderKey(name)
		if other, dup := first[canon]; dup {
			v.add(q, "%s is set twice (also as %q on line %d): keep one", canon, other, v.idx.line(key(key(p, "request_headers"), other)))
			continue
		}
		first[canon] = name
		if reason, refused := refusedRequestHeader(canon); refused {
			v.add(q, "wslb sets %s itself: %s; remove it", name, reason)
			continue
		}
		parts, err := parseHeaderValue(value)
		switch {
		case err != nil:
			v.add(q, "%v", err)
			continue
		case canon == "Host" && len(parts) == 0:
			v.add(q, "Host cannot be removed: HTTP/1.1 requires it; to send the backend's address use preserve_host: false instead")
			continue
		case canon == "Host" && !h.PreserveHost:
			v.add(q, "Host is set here and preserve_host is false: keep one (this value is what Host would be)")
			continue
		}
		h.SetHeaders = append(h.SetHeaders, RequestHeader{Name: canon, Value: parts})
	}
	slices.SortFunc(h.SetHeaders, func(a, b RequestHeader) int { return strings.Compare(a.Name, b.Name) })
}

// parseHeaderValue splits a request_headers value into text and variables.
// A "$" starts ${name}, or is "$$", a literal "$"; anything else after a "$"
// is an error rather than text, since a value copied from nginx ($host)
// would otherwise reach the backend as the four letters "$host".
func parseHeaderValue(s string) ([]Part, error) {
	if strings.ContainsAny(s, "\r\n\x00") {
		return nil, fmt.Errorf("header value must not contain CR, LF or NUL")
	}
	var parts []Part
	var text strings.Builder
	flush := func() {
		if text.Len() > 0 {
			parts = append(parts, Part{Text: text.String()})
			text.Reset()
		}
	}
	for rest := s; rest != ""; {
		i := strings.IndexByte(rest, '$')
		if i < 0 {
			text.WriteString(rest)
			break
		}
		text.WriteString(rest[:i])
		rest = rest[i:]
		switch {
		case strings.HasPrefix(rest, "$$"):
			text.WriteByte('$')
			rest = rest[2:]
		case strings.HasPrefix(rest, "${"):
			end := strings.IndexByte(rest, '}')
			if end < 0 {
				return nil, fmt.Errorf("%q has a ${ without its closing }: write ${name}, or $$ for a literal $", s)
			}
			name := rest[2:end]
			v := varByName(name)
			if v == 0 {
				return nil, fmt.Errorf("unknown variable ${%s}: use %s", name, varList())
			}
			flush()
			parts = append(parts, Part{Var: v})
			rest = rest[end+1:]
		default:
			word := rest[1:]
			if j := strings.IndexFunc(word, func(r rune) bool {
				return r != '_' && (r < 'a' || r > 'z') && (r < '0' || r > '9')
			}); j >= 0 {
				word = word[:j]
			}
			switch {
			case varByName(word) != 0:
				return nil, fmt.Errorf("$%s is not expanded: write ${%s}", word, word)
			case word != "":
				return nil, fmt.Errorf("$%s is not a wslb variable: use %s; $$ is a literal $", word, varList())
			}
			return nil, fmt.Errorf("%q: a $ starts a variable, one of %s; write $$ for a literal $", s, varList())
		}
	}
	flush()
	return parts, nil
}

// varByName returns the Var called name, or 0.
func varByName(name string) Var {
	for v := VarHost; v <= VarClientIP; v++ {
		if v.String() == name {
			return v
		}
	}
	return 0
}

// varList names every variable for a problem message.
func varList() string {
	var vs []string
	for v := VarHost; v <= VarClientIP; v++ {
		vs = append(vs, "${"+v.String()+"}")
	}
	return strings.Join(vs[:len(vs)-1], ", ") + " or " + vs[len(vs)-1]
}
