package l7

import (
	"context"
	"crypto/tls"
	"net/http"

	"golang.org/x/net/http2"
)

// h2 reports whether the client chose HTTP/2 in the TLS handshake (ALPN).
func (cc *clientConn) h2() bool {
	tc, ok := cc.conn.(*tls.Conn)
	return ok && tc.ConnectionState().NegotiatedProtocol == http2.NextProtoTLS
}

// serveH2 serves an HTTP/2 conn until it ends. Go's HTTP/2 server reads its
// frames and runs each stream's handler on a goroutine of its own: a plain
// request (h2Request) or an extended CONNECT (h2Connect, RFC 8441).
func (w *worker) serveH2(ctx context.Context, cc *clientConn) {
	srv := &http2.Server{}
	srv.ServeConn(cc.conn, &http2.ServeConnOpts{
		Context: ctx,
		Handler: h2Handler{w: w, cc: cc},
	})
}

// h2Handler serves the streams of one HTTP/2 client conn.
type h2Handler struct {
	w  *worker
	cc *clientConn
}

func (h h2Handler) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		h.w.h2Connect(h.cc, rw, r)
		return
	}
	h.w.h2Request(h.cc, rw, r)
}
