package l7

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
)

// Errors of readRequest, each answered differently by the conn loop.
var (
	errHeadTooLarge = errors.New("request head larger than max_header_bytes")
	// errHeadGrow: the head does not fit br, which is smaller than
	// max_header_bytes; the caller gives it a larger reader (growReader).
	errHeadGrow  = errors.New("request head larger than the reader")
	errSmuggling = errors.New("both Content-Length and Transfer-Encoding")
	errNoHost    = errors.New("absolute-form target without a Host header")
)

// readRequest reads one request head from br, whose buffer must be at least
// maxHead bytes. The whole head is buffered before net/http parses it, for two
// reasons: max_header_bytes is then exact (the request line and every header
// line, nothing else), and the raw lines can be checked for a Content-Length
// beside a Transfer-Encoding, which net/http would quietly resolve by dropping
// Content-Length. DESIGN answers that conflict with 400, because two hops that
// resolve it differently is how request smuggling works.
func readRequest(br *bufio.Reader, maxHead int) (*http.Request, error) {
	n, err := bufferHead(br, maxHead)
	if err != nil {
		return nil, err
	}
	head, _ := br.Peek(n)
	te := hasField(head, "transfer-encoding")
	if te && hasField(head, "content-length") {
		return nil, errSmuggling
	}
	// net/http takes Host from an absolute-form target and deletes the
	// header, so whether there was one can only be read here.
	noHost := !originForm(head) && !hasField(head, "host")
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, fmt.Errorf("parse request head: %w", err)
	}
	if te && !req.ProtoAtLeast(1, 1) {
		// net/http drops it and reads no body, so the chunks would be taken
		// for the next request; RFC 9112 §6.1 calls this framing faulty.
		return nil, errors.New("parse request head: Transfer-Encoding in an HTTP/1.0 request")
	}
	if noHost && req.URL.Host != "" {
		// RFC 9112 §3.2: a client sends Host even then. HTTP/1.0 gets the
		// same answer: only a client of a forward proxy sends an
		// absolute-form target without one, and wslb is none.
		return nil, errNoHost
	}
	return req, nil
}

// originForm reports whether the request line of head has an origin-form
// target ("/path") or "*", the forms that get their host from a Host header
// alone.
func originForm(head []byte) bool {
	i := bytes.IndexByte(head, ' ')
	return i >= 0 && i+1 < len(head) && (head[i+1] == '/' || head[i+1] == '*')
}

// bufferHead waits until br holds a complete head (up to and including the
// empty line) and returns its length, without consuming anything. It never
// reads past maxHead bytes of head.
func bufferHead(br *bufio.Reader, maxHead int) (int, error) {
	scanned := 0
	for {
		buf, _ := br.Peek(br.Buffered())
		if i := headEnd(buf, scanned); i >= 0 {
			if i > maxHead {
				return 0, errHeadTooLarge
			}
			return i, nil
		}
		if len(buf) >= maxHead {
			return 0, errHeadTooLarge
		}
		// The terminator may straddle the last read: rescan its last 3 bytes.
		scanned = max(0, len(buf)-3)
		if _, err := br.Peek(len(buf) + 1); err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				if br.Size() < maxHead {
					return 0, errHeadGrow
				}
				return 0, errHeadTooLarge
			}
			return 0, err
		}
	}
}

// headEnd returns the length of the head in buf (through "\n\r\n" or "\n\n":
// net/textproto accepts bare LF line ends, so the end must be found the same
// way), or -1. Scanning starts at from.
func headEnd(buf []byte, from int) int {
	for i := from; i < len(buf); i++ {
		if buf[i] != '\n' {
			continue
		}
		if i+1 < len(buf) && buf[i+1] == '\n' {
			return i + 2
		}
		if i+2 < len(buf) && buf[i+1] == '\r' && buf[i+2] == '\n' {
			return i + 3
		}
	}
	return -1
}

// hasField reports whether a header line of head (after the request line) is
// named name, compared without case. Only names are compared: parsing the
// values is net/http's job.
func hasField(head []byte, name string) bool {
	// Skip the request line, then look at each line's start; no allocation,
	// since this runs for every request.
	for i := bytes.IndexByte(head, '\n') + 1; i > 0 && i < len(head); {
		line := head[i:]
		if len(line) > len(name) && line[len(name)] == ':' && strings.EqualFold(string(line[:len(name)]), name) {
			return true
		}
		next := bytes.IndexByte(line, '\n')
		if next < 0 {
			break
		}
		i += next + 1
	}
	return false
}

// checkRequest returns why a parsed request must get a 400, or "".
// http.ReadRequest leaves these checks to net/http's server, which wslb does
// not use.
func checkRequest(req *http.Request) string { return checkRequestOf(req, 1) }

// checkRequestOf is checkRequest for a conn that speaks HTTP/major: 1, or
// 2 for a stream of an HTTP/2 conn.
func checkRequestOf(req *http.Request, major int) string {
	if req.ProtoAtLeast(1, 1) && req.Host == "" {
		return "missing Host header" // RFC 9112 §3.2
	}
	if req.Method == http.MethodConnect {
		return "CONNECT is not supported"
	}
	if req.ProtoMajor != major {
		// net/http parses any HTTP/x.y; wslb would forward it as HTTP/1.1.
		return "unsupported HTTP version"
	}
	if !validTarget(req) {
		return "invalid request target"
	}
	if req.URL.User != nil {
		// RFC 9110 §4.2.4: userinfo in an http(s) URI is an error; it is a
		// phishing device, and what a next hop makes of it is anyone's guess.
		return "userinfo in the request target"
	}
	for k, vv := range req.Header {
		if strings.IndexByte(k, ' ') >= 0 {
			// net/textproto keeps "Name :" as a header named "Name "
			// (go.dev/issue/34540); RFC 9112 §5.1 makes it a 400, since a
			// next hop that trims the space reads another header.
			return "whitespace in a header name"
		}
		for _, v := range vv {
			if !validFieldValue(v) {
				return "invalid byte in header " + k
			}
		}
	}
	if !validHost(req.Host) {
		return "invalid Host" // RFC 9112 §3.2
	}
	return ""
}

// validTarget reports whether the request target has a form RFC 9112 §3.2
// allows for a request wslb forwards: origin-form, absolute-form with an http
// or https URI (sent on as origin-form), or "*" for OPTIONS. Any other
// target (an opaque "a:b", "*" for GET) would reach the backend as a request
// line it cannot parse, or one it reads differently.
func validTarget(req *http.Request) bool {
	switch u := req.URL; {
	case req.RequestURI == "*":
		return req.Method == http.MethodOptions
	case strings.HasPrefix(req.RequestURI, "/"):
		return true
	default:
		return (strings.EqualFold(u.Scheme, "http") || strings.EqualFold(u.Scheme, "https")) && u.Opaque == "" && u.Host != ""
	}
}

// validHost reports whether h can be a Host value: the bytes of a uri-host
// and port (RFC 3986 §3.2.2), as net/http's server accepts. net/http's
// Request.Write silently sends an empty Host in place of any other.
func validHost(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!$%&'()*+,-.:;=[]_~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validFieldValue rejects control characters other than tab (RFC 9110 §5.5):
// a NUL or a lone CR passed on to a backend is a classic smuggling vector.
func validFieldValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// badHead answers a head that could not be read, or just closes the conn
// when there is nobody to answer or nothing worth saying.
func (w *worker) badHead(cc *clientConn, err error) {
	st := cc.st
	switch {
	case errors.Is(err, errHeadTooLarge):
		st.errs.BadRequest.Inc()
		cc.respondError(nil, http.StatusRequestHeaderFieldsTooLarge, "request head too large")
	case errors.Is(err, os.ErrDeadlineExceeded):
		// A slow head is closed without an answer: answering would only
		// tell a slowloris client that it has our attention.
		st.errs.Timeout.Inc()
	case errors.Is(err, io.EOF) && cc.br.Buffered() == 0, errors.Is(err, net.ErrClosed):
		// The client closed between requests, or drain closed the conn.
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		// It closed in the middle of a head: nobody is left to answer.
	default:
		st.errs.BadRequest.Inc()
		cc.respondError(nil, http.StatusBadRequest, badRequestText(err))
	}
}

func badRequestText(err error) string {
	switch {
	case errors.Is(err, errSmuggling), errors.Is(err, errNoHost):
		return err.Error()
	}
	return "malformed request"
}
