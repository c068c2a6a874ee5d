package l7

import "net/http"

// h2Connect serves an extended CONNECT (RFC 8441) that came over HTTP/2.
func (w *worker) h2Connect(cc *clientConn, rw http.ResponseWriter, r *http.Request) {
	http.Error(rw, "not yet", http.StatusNotImplemented) // being built
}
