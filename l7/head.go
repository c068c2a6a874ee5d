package l7

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
)

// Errors of readRequest, each answered differently by the conn loop.
var (
	errHeadTooLarge = errors.New("request head larger than max_header_bytes")
	errSmuggling    = errors.New("both Content-Length and Transfer-Encoding")
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
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, fmt.Errorf("parse request head: %w", err)
	}
	if te && !req.ProtoAtLeast(1, 1) {
		// net/http drops it and reads no body, so the chunks would be taken
		// for the next request; RFC 9112 §6.1 calls this framing faulty.
		return nil, errors.New("parse request head: Transfer-Encoding in an HTTP/1.0 request")
	}
	return req, nil
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

// excludedFromResponse reports the fields Response.Write leaves out of the
// header map, since it writes them from other fields.
func excludedFromResponse(name string) bool {
	switch name {
	case "Content-Length", "Transfer-Encoding", "Trailer":
		return true
	}
	return false
}

// writeStatusLine writes resp's status line as Response.Write does: the
// backend's reason phrase, or the standard one when it gave none.
func writeStatusLine(bw *bufio.Writer, resp *http.Response) {
	var digits [3]byte
	code := strconv.AppendInt(digits[:0], int64(resp.StatusCode), 10)
	text := resp.Status
	switch {
	case text == "":
		if text = http.StatusText(resp.StatusCode); text == "" {
			text = "status code " + string(code)
		}
	case len(text) > len(code) && text[:len(code)] == string(code) && text[len(code)] == ' ':
		text = text[len(code)+1:]
	}
	bw.WriteString("HTTP/")
	bw.WriteByte('0' + byte(resp.ProtoMajor))
	bw.WriteByte('.')
	bw.WriteByte('0' + byte(resp.ProtoMinor))
	bw.WriteByte(' ')
	bw.Write(code)
	bw.WriteByte(' ')
	bw.WriteString(text)
	bw.WriteString("\r\n")
}

// bodyAllowedForStatus is net/http's: whether a response with this status
// may have a body.
func bodyAllowedForStatus(status int) bool {
	return (status < 100 || status > 199) && status != http.StatusNoContent && status != http.StatusNotModified
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

// writeFields writes the fields of h, but those excluded, as
// Header.WriteSubset does: sorted by name, names that are no token left out,
// each value on a line of its own with CR and LF made spaces and the ends
// trimmed.
func writeFields(bw *bufio.Writer, h http.Header, excluded func(string) bool) {
	var names [32]string // most heads: no allocation
	keys := names[:0]
	for k := range h {
		if !excluded(k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !isFieldName(k) {
			continue
		}
		for _, v := range h[k] {
			writeField(bw, k, v)
		}
	}
}

// writeField writes one header line, its value cleaned as Header.Write does:
// CR and LF made spaces, then the ends trimmed of spaces, tabs, CR and LF.
func writeField(bw *bufio.Writer, name, value string) {
	clean := true
	for i := 0; i < len(value); i++ {
		if c := value[i]; c == '\r' || c == '\n' {
			clean = false
			break
		}
	}
	if !clean {
		b := []byte(value)
		for i, c := range b {
			if c == '\r' || c == '\n' {
				b[i] = ' ' // bytes, not runes: invalid UTF-8 passes as it is
			}
		}
		value = string(b)
	}
	bw.WriteString(name)
	bw.WriteString(": ")
	bw.WriteString(textproto.TrimString(value))
	bw.WriteString("\r\n")
}

// isFieldName reports whether name is an RFC 9110 token, as a field name must
// be (httpguts.ValidHeaderFieldName).
func isFieldName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
