package l7

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/wslb/wslb/header"
)

// relayResponse writes resp to the client, streaming its body, and reports
// whether the client conn may go on and whether the backend conn may be
// reused (its body was read to the end and it did not ask to close).
func (cc *clientConn) relayResponse(req *http.Request, resp *http.Response, poolName string, bc *backendConn, idle time.Duration) (keep, reusable bool, err error) {
	backendClose := resp.Close
	body := &backendBody{r: resp.Body, conn: bc.conn, br: bc.br, length: resp.ContentLength,
		chunked: len(resp.TransferEncoding) > 0, whole: bc.whole, idle: idle, bw: cc.bw, count: cc.txBytes}
	if cc.stream != nil {
		body.flushed = cc.stream.out.flush
	}
	cc.txBytes = nil
	header.RemoveHopByHop(resp.Header)
	header.SetResponseHeaders(resp.Header, cc.st.l.HTTP.ResponseHeaders)
	if cc.stream != nil {
		return cc.relayH2(req, resp, poolName, body)
	}
	keep = !req.Close
	client11 := req.ProtoAtLeast(1, 1)
	resp.ProtoMajor, resp.ProtoMinor = 1, 1
	if !client11 {
		resp.ProtoMinor = 0
	}
	if bodyAllowed(req, resp) && resp.ContentLength < 0 {
		// An unknown length goes to an HTTP/1.1 client chunked; an HTTP/1.0
		// client never gets chunked, so the end of the body is the close.
		if client11 {
			resp.TransferEncoding = []string{"chunked"}
		} else {
			resp.TransferEncoding, keep = nil, false
		}
	}
	if keep && !client11 {
		resp.Header.Set("Connection", "keep-alive")
	}
	resp.Close = !keep
	resp.Body = body
	cc.count(req, poolName, resp.StatusCode)
	cc.firstByte()
	if identityResponse(resp, body) {
		err = writeIdentityResponse(cc.bw, resp, body)
	} else {
		err = resp.Write(writerOnly{cc.bw})
	}
	if err == nil {
		err = cc.bw.Flush()
	}
	cc.e.Tx += body.n
	if err != nil {
		// The rest of the answer is not drained: both conns close.
		cc.relayFailed(body, err)
		return false, false, err
	}
	done := body.eof || !bodyAllowed(req, resp)
	return keep, done && !backendClose, nil
}

// relayFailed notes in the access line why relaying an answer failed with
// err, and reports whether the backend broke it off: the body's own read
// error means the backend failed the stream; any other error is the
// client's side.
func (cc *clientConn) relayFailed(body *backendBody, err error) (backend bool) {
	switch {
	case errors.Is(body.err, os.ErrDeadlineExceeded):
		cc.e.Reason = "idle"
	case body.err != nil:
		cc.e.Reason = "backend"
	default:
		cc.clientWriteFailed(err)
		return false
	}
	return true
}

// bodyAllowed reports whether a response to req carries a body.
func bodyAllowed(req *http.Request, resp *http.Response) bool {
	s := resp.StatusCode
	return req.Method != http.MethodHead && s != http.StatusNoContent && s != http.StatusNotModified && s >= 200
}

// identityResponse reports whether writeIdentityResponse writes resp, whose
// body is body: a known length, no chunks and no trailers, the usual
// response of an API or a file.
func identityResponse(resp *http.Response, body *backendBody) bool {
	return resp.ContentLength >= 0 && len(resp.TransferEncoding) == 0 && resp.Trailer == nil &&
		(resp.ContentLength > 0 || body.r == http.NoBody) &&
		(!resp.Close || len(resp.Header["Connection"]) == 0) &&
		resp.StatusCode >= 100 && resp.StatusCode <= 999 &&
		resp.ProtoMajor >= 0 && resp.ProtoMajor <= 9 && resp.ProtoMinor >= 0 && resp.ProtoMinor <= 9
}

// writeIdentityResponse writes resp, for which identityResponse holds, to bw
// as resp.Write does, byte for byte and error for error (head_write_test.go
// checks), without fmt, a copy of resp, a transfer writer, a header sorter
// and a 32 KiB copy buffer: the body goes from the backend's reader straight
// into bw.
func writeIdentityResponse(bw *bufio.Writer, resp *http.Response, body *backendBody) error {
	method := ""
	if resp.Request != nil {
		method = resp.Request.Method
	}
	head := method == http.MethodHead
	n := resp.ContentLength
	if n == 0 {
		// Response.Write probes a body of length 0 (which is NoBody here),
		// and body notes its end.
		if _, err := body.Read(body.scratch[:1]); err != nil && err != io.EOF {
			return err
		}
	}
	writeStatusLine(bw, resp)
	if resp.Close {
		bw.WriteString("Connection: close\r\n")
	}
	sentLength := n > 0 || method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch
	if sentLength {
		var digits [20]byte
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(digits[:0], n, 10))
		bw.WriteString("\r\n")
	}
	writeFields(bw, resp.Header, excludedFromResponse)
	if n == 0 && !sentLength && bodyAllowedForStatus(resp.StatusCode) {
		bw.WriteString("Content-Length: 0\r\n")
	}
	if _, err := bw.WriteString("\r\n"); err != nil {
		return err
	}
	if head {
		return body.Close()
	}
	copied, err := copyBody(bw, body, n)
	if err != nil {
		return err
	}
	// What follows the length is read and dropped, as Response.Write does;
	// net/http's reader stops at the length, so this is its EOF.
	for {
		m, err := body.Read(body.scratch[:])
		copied += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if err := body.Close(); err != nil {
		return err
	}
	if copied != n {
		return fmt.Errorf("http: ContentLength=%d with Body length %d", n, copied)
	}
	return nil
}

// copyBody copies up to n bytes of body into bw, reading them straight into
// bw's free space, and returns how many it copied. body may flush bw while it
// reads, which moves the free space: the bytes read are then written to where
// it is now, as bw.Write does.
func copyBody(bw *bufio.Writer, body io.Reader, n int64) (int64, error) {
	var copied int64
	for copied < n {
		if bw.Available() < bw.Size()/8 {
			if err := bw.Flush(); err != nil {
				return copied, err
			}
		}
		p := bw.AvailableBuffer()
		p = p[:min(int64(cap(p)), n-copied)]
		m, err := body.Read(p)
		if m > 0 {
			if _, werr := bw.Write(p[:m]); werr != nil {
				return copied, werr
			}
			copied += int64(m)
		}
		switch {
		case err == io.EOF:
			return copied, nil
		case err != nil:
			return copied, err
		}
	}
	return copied, nil
}

// writerOnly hides bufio.Writer's ReadFrom. Given a *bufio.Writer, io.Copy
// would read the body straight into the writer's buffer, and backendBody's
// flush inside Read would then send stale bytes from under it.
type writerOnly struct{ io.Writer }

// backendBody streams a response body: every read of the backend may wait up
// to the idle timeout, and what was read is flushed to the client before the
// next read blocks, so server-sent events and long polls arrive as sent. A
// read that cannot block (the bytes are in br already, or the body is at its
// end) does neither, so that a response that came in one piece leaves in
// one write, and costs no deadline.
type backendBody struct {
	r       io.ReadCloser
	conn    net.Conn
	br      *bufio.Reader // the backend conn's, which r reads from
	length  int64         // the Content-Length r is framed by, or -1
	chunked bool          // r is framed by chunks
	whole   bool          // r is all in br: no read waits (conn may be nil)
	idle    time.Duration
	bw      *bufio.Writer
	// flushed, when set, sends on what bw's writer keeps after bw is
	// flushed: an HTTP/2 stream's ResponseWriter buffers frames of its own.
	flushed func() error
	eof     bool
	n       int64              // bytes read, for the access log
	err     error              // the first read error other than EOF
	count   prometheus.Counter // wslb_bytes_total{direction="tx"}, or nil
	// scratch takes what writeIdentityResponse reads past the length (as
	// Response.Write does, which net/http's reader ends at once): a local
	// array would escape through r's Read, an allocation per response.
	scratch [64]byte
}

// mayBlock reports whether the next read of the body may wait for the
// backend.
func (b *backendBody) mayBlock() bool {
	switch {
	case b.whole, b.r == http.NoBody, b.eof, b.length >= 0 && b.n >= b.length:
		return false // the answer is in br, or net/http answers EOF without reading
	case b.chunked:
		return true // chunk framing is read a line at a time: a part may be buffered
	default:
		return b.br.Buffered() == 0 // a Read takes from the buffer before the conn
	}
}

func (b *backendBody) Read(p []byte) (int, error) {
	if b.mayBlock() {
		if err := b.flush(); err != nil {
			return 0, err
		}
		_ = b.conn.SetReadDeadline(time.Now().Add(b.idle))
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.count != nil && n > 0 {
		b.count.Add(float64(n))
	}
	switch {
	case errors.Is(err, io.EOF):
		b.eof = true
	case err != nil && b.err == nil:
		b.err = err
	}
	return n, err
}

func (b *backendBody) Close() error { return nil }

// flush sends the client what was relayed so far, before a read that may
// wait: the answer's head, the events of a stream.
func (b *backendBody) flush() error {
	if b.bw.Buffered() > 0 {
		if err := b.bw.Flush(); err != nil {
			return err
		}
	}
	if b.flushed != nil {
		return b.flushed()
	}
	return nil
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

// excludedFromResponse reports the fields Response.Write leaves out of the
// header map, since it writes them from other fields.
func excludedFromResponse(name string) bool {
	switch name {
	case "Content-Length", "Transfer-Encoding", "Trailer":
		return true
	}
	return false
}

// bodyAllowedForStatus is net/http's: whether a response with this status
// may have a body.
func bodyAllowedForStatus(status int) bool {
	return (status < 100 || status > 199) && status != http.StatusNoContent && status != http.StatusNotModified
}
