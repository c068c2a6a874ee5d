package l7

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/wslb/wslb/header"
	"github.com/wslb/wslb/route"
	"github.com/wslb/wslb/static"
)

// respond writes a response wslb makes itself. req may be nil (the head could
// not be read). It reports whether the conn may carry another request: not
// when asked to close, when the client asked to, or when a request body was
// left unread (it would be taken for the next head).
func (cc *clientConn) respond(req *http.Request, poolName string, status int, hdr http.Header, body string, closeConn bool) bool {
	if req == nil || req.Close || req.ContentLength != 0 {
		closeConn = true
	}
	resp := &http.Response{
		StatusCode:    status,
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        hdr,
		ContentLength: int64(len(body)),
		Body:          io.NopCloser(bytes.NewReader([]byte(body))),
		Request:       req,
		Close:         closeConn,
	}
	if resp.Header == nil {
		resp.Header = http.Header{}
	}
	if body != "" && resp.Header.Get("Content-Type") == "" {
		resp.Header.Set("Content-Type", "text/plain; charset=utf-8")
	}
	if req != nil && !req.ProtoAtLeast(1, 1) {
		resp.ProtoMinor = 0
		if !closeConn {
			resp.Header.Set("Connection", "keep-alive")
		}
	}
	header.SetResponseHeaders(resp.Header, cc.st.l.HTTP.ResponseHeaders)
	cc.count(req, poolName, status)
	cc.firstByte()
	setWriteTimeout(cc.conn)
	err := resp.Write(cc.bw)
	if err == nil {
		err = cc.bw.Flush()
	}
	_ = cc.conn.SetWriteDeadline(time.Time{})
	if err != nil {
		cc.e.Reason = "client"
	}
	if closeConn || err != nil {
		lingerClose(cc.conn)
		return false
	}
	return true
}

// respondError answers with status and a one-line plain-text reason. 4xx and
// 5xx answers close the conn unless the request was read whole and the
// status is harmless to continue after (404).
func (cc *clientConn) respondError(req *http.Request, status int, reason string) bool {
	closeConn := status != http.StatusNotFound
	return cc.respond(req, "", status, nil, fmt.Sprintf("%d %s: %s\n", status, http.StatusText(status), reason), closeConn)
}

// redirect answers with a 308 to location: unlike 301/302 it keeps the
// method and body, so a POST or an upgrade is repeated as it was.
func (cc *clientConn) redirect(req *http.Request, location string) bool {
	h := http.Header{"Location": {location}}
	return cc.respond(req, "", http.StatusPermanentRedirect, h, "308 Permanent Redirect: "+location+"\n", false)
}

// lingerClose half-closes, then reads what the client is still sending for a
// moment before closing: closing with unread bytes makes the kernel send a
// reset, which can destroy the answer before the client reads it.
func lingerClose(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, _ = io.CopyN(io.Discard, c, 256<<10)
	c.Close()
}

// firstByte records wslb_handshake_seconds once per conn: accept to the
// first response byte sent.
func (cc *clientConn) firstByte() {
	if cc.answered {
		return
	}
	cc.answered = true
	cc.st.m.Handshake.WithLabelValues(cc.st.l.Name).Observe(time.Since(cc.accepted).Seconds())
}

// count adds one to wslb_http_requests_total, and notes the answer in the
// access line.
func (cc *clientConn) count(req *http.Request, pool string, status int) {
	rs := &cc.requests
	if rs.counter == nil || rs.pool != pool || rs.status != status {
		*rs = requestSeries{pool: pool, status: status,
			counter: cc.st.m.HTTPRequests.WithLabelValues(cc.st.l.Name, pool, strconv.Itoa(status))}
	}
	rs.counter.Inc()
	cc.e.Status = status
	if pool != "" {
		cc.e.Pool = pool
	}
}

// serveStatic answers from a static route's folder.
func (cc *clientConn) serveStatic(req *http.Request, h *static.Handler, res route.Result) bool {
	r := req.Clone(req.Context())
	r.URL = res.URL
	w := &staticWriter{cc: cc, req: req, header: http.Header{}}
	h.ServeHTTP(w, r)
	return w.finish()
}

// staticWriter is the http.ResponseWriter a static.Handler writes into. A
// file (ServeContent sets Content-Length) streams straight to the client; a
// short answer without a length (an error page) is buffered and sent by respond.
type staticWriter struct {
	cc        *clientConn
	req       *http.Request
	header    http.Header
	status    int
	streaming bool
	buf       bytes.Buffer
	err       error
}

func (w *staticWriter) Header() http.Header { return w.header }

func (w *staticWriter) WriteHeader(status int) {
	if w.status != 0 {
		return
	}
	w.status = status
	if w.header.Get("Content-Length") == "" {
		return
	}
	w.streaming = true
	cc := w.cc
	header.SetResponseHeaders(w.header, cc.st.l.HTTP.ResponseHeaders)
	minor := 1
	if !w.req.ProtoAtLeast(1, 1) {
		minor = 0
		w.header.Set("Connection", "keep-alive")
	}
	if w.req.Close || w.req.ContentLength != 0 {
		w.header.Set("Connection", "close")
	}
	cc.count(w.req, "", status)
	cc.firstByte()
	setWriteTimeout(cc.conn)
	fmt.Fprintf(cc.bw, "HTTP/1.%d %03d %s\r\n", minor, status, http.StatusText(status))
	w.err = w.header.Write(cc.bw)
	cc.bw.WriteString("\r\n")
}

func (w *staticWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	if !w.streaming {
		return w.buf.Write(p)
	}
	if w.err != nil {
		return 0, w.err
	}
	setWriteTimeout(w.cc.conn)
	n, err := w.cc.bw.Write(p)
	w.err = err
	return n, err
}

// finish completes the answer and reports whether the conn may go on.
func (w *staticWriter) finish() bool {
	w.WriteHeader(http.StatusOK)
	cc := w.cc
	if !w.streaming {
		return cc.respond(w.req, "", w.status, w.header, w.buf.String(), false)
	}
	if w.err == nil {
		w.err = cc.bw.Flush()
	}
	_ = cc.conn.SetWriteDeadline(time.Time{})
	if w.err != nil {
		cc.e.Reason = "client"
	}
	if w.err != nil || w.header.Get("Connection") == "close" {
		lingerClose(cc.conn)
		return false
	}
	return true
}
