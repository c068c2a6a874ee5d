package l7

import "net/http"

// h2Request forwards a plain request that came over HTTP/2.
func (w *worker) h2Request(cc *clientConn, rw http.ResponseWriter, r *http.Request) {
	http.Error(rw, "not yet", http.StatusNotImplemented) // being built
}
