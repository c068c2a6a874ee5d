package l7

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"net/netip"

	"github.com/wslb/wslb/header"
	"github.com/wslb/wslb/route"
)

// outgoing builds the request for the backend from the client's: the URL the
// route chose, hop-by-hop headers removed (RFC 9110 §7.6.1), forwarding
// headers set, then http.request_headers. It takes over req's header map and rewrites it in place
// (cloning it costs every request a map and its slices): req.Header must not
// be read after this, which only the upgrade checks do, before it.
//
// It also returns the client's address (what source_hash hashes and X-Real-IP
// says), read from the headers after the hop-by-hop removal, so that a client
// naming X-Forwarded-For in Connection cannot make the two disagree.
func outgoing(cc *clientConn, req *http.Request, res route.Result) (*http.Request, netip.Addr) {
	h := cc.st.l.HTTP
	out := &http.Request{
		Method:           req.Method,
		URL:              res.URL,
		Proto:            "HTTP/1.1",
		ProtoMajor:       1,
		ProtoMinor:       1,
		Header:           req.Header,
		ContentLength:    req.ContentLength,
		TransferEncoding: req.TransferEncoding,
		Host:             req.Host,
		Trailer:          req.Trailer,
	}
	header.RemoveHopByHop(out.Header)
	proto := "http"
	if cc.tls {
		proto = "https"
	}
	fwd := header.Forwarding{
		Peer: cc.peer.Addr(), Trusted: h.TrustedPrefixes, Host: req.Host, Proto: proto,
		Port: int(cc.local.Port()), XForwarded: h.ForwardedHeaders, RFC7239: h.Forwarded, RequestHeaders: h.SetHeaders,
	}
	client := fwd.SetForwarded(out.Header)
	if client != cc.peer.Addr() {
		cc.e.RealIP = client // the access line names both
	}
	if len(h.SetHeaders) > 0 {
		// After SetForwarded: as with nginx's proxy_set_header, the user's
		// value wins. (config refuses the names wslb must set itself.)
		vars := header.Vars{Host: req.Host, Port: fwd.Port, Scheme: proto, Peer: fwd.Peer, Client: client}
		if host := header.SetRequestHeaders(out.Header, h.SetHeaders, vars); host != "" {
			out.Host = host
		}
	}
	if req.Body != nil && req.Body != http.NoBody {
		src, stream := cc.bodySource()
		body := newClientBody(req, int64(h.MaxBodyBytes), src, cc.br)
		body.stream = stream
		body.limit(cc.st.l.Timeouts.ClientBody, h.MinBodyRate, cc.rateGrace)
		out.Body = body
		// Request.Write, which writes requests with a body, adds a Go
		// User-Agent to requests without one; an empty value tells it to
		// send none, so the backend sees what the client sent.
		if _, ok := out.Header["User-Agent"]; !ok {
			out.Header["User-Agent"] = []string{""}
		}
	}
	return out, client
}

// writeRequestHead writes out, a request for a backend, as out.Write does,
// byte for byte (head_write_test.go checks), when it has no body: the common
// case of a plain request, and every upgrade. It skips what makes
// Request.Write cost: fmt, a pooled sorter, an allocated transfer writer.
// Requests with a body, trailers or an unusual Host go to out.Write, which
// then gets an empty User-Agent when there is none: it would add Go's own,
// and the backend must see what the client sent.
func writeRequestHead(bw *bufio.Writer, out *http.Request) error {
	host := out.Host
	if host == "" && out.URL != nil {
		host = out.URL.Host
	}
	if out.Body != nil || out.ContentLength != 0 || len(out.TransferEncoding) > 0 || out.Trailer != nil ||
		out.Close || out.URL == nil || out.Method == http.MethodConnect || !plainHost(host) {
		if _, ok := out.Header["User-Agent"]; !ok {
			out.Header["User-Agent"] = []string{""}
		}
		return out.Write(bw)
	}
	uri := out.URL.RequestURI()
	if containsCTL(uri) {
		return errors.New("net/http: can't write control character in Request.URL")
	}
	method := out.Method
	if method == "" {
		method = http.MethodGet
	}
	bw.WriteString(method)
	bw.WriteByte(' ')
	bw.WriteString(uri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	if ua := out.Header["User-Agent"]; len(ua) > 0 && ua[0] != "" {
		writeField(bw, "User-Agent", ua[0])
	}
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
		// What transferWriter sends for a bodiless request of these methods.
		bw.WriteString("Content-Length: 0\r\n")
	}
	writeFields(bw, out.Header, excludedFromRequest)
	_, err := bw.WriteString("\r\n")
	return err
}

// sendHead writes out, a request without a body, to w: in one write when it
// fits a buffer.
func sendHead(w io.Writer, out *http.Request) error {
	bw := getWriter(w)
	defer putWriter(bw)
	if err := writeRequestHead(bw, out); err != nil {
		return err
	}
	return bw.Flush()
}

// excludedFromRequest reports the fields Request.Write leaves out of the
// header map, since it writes them from other fields.
func excludedFromRequest(name string) bool {
	switch name {
	case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
		return true
	}
	return false
}

// plainHost reports whether out.Write would send host unchanged: it is
// ASCII (no punycode conversion), has only the bytes of a valid Host (so it is
// not blanked), and has no "%" (so no IPv6 zone to remove).
func plainHost(host string) bool {
	for i := 0; i < len(host); i++ {
		switch c := host[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '-', c == ':', c == '[', c == ']', c == '_':
		default:
			return false
		}
	}
	return true
}

// containsCTL reports whether s holds an ASCII control character, which
// Request.Write refuses in a request target.
func containsCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c == 0x7f {
			return true
		}
	}
	return false
}
