package l7

import (
	"bytes"
	"fmt"
	"net/http"

	"github.com/wslb/wslb/header"
	"github.com/wslb/wslb/route"
	"github.com/wslb/wslb/static"
)

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
	if cc.stream != nil {
		cc.count(w.req, "", status)
		cc.firstByte()
		copyH2Header(cc.stream.rw.Header(), w.header)
		cc.stream.rw.WriteHeader(status)
		return
	}
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
	n, err := w.cc.bw.Write(p)
	w.err = err
	w.cc.e.Tx += int64(n)
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
	if w.err != nil {
		cc.clientWriteFailed(w.err)
		return false
	}
	if w.header.Get("Connection") == "close" {
		lingerClose(cc.conn)
		return false
	}
	return true
}
