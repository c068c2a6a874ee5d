package l7

import (
	"crypto/tls"
	"errors"
	"net/http"

	"github.com/wslb/wslb/acme"
	"github.com/wslb/wslb/config"
)

// acmeTLS returns tc with the certificates of acme block c obtained by
// the process's manager of that block (px.ACME), which answers TLS-ALPN-01
// challenges in the listener's own handshakes.
func (px *Proxy) acmeTLS(c *config.ACME, tc *tls.Config) (*tls.Config, error) {
	if px.ACME == nil {
		return nil, errors.New("tls.acme: the proxy has no ACME set (l7.Proxy.ACME)")
	}
	m, err := px.ACME.Manager(*c)
	if err != nil {
		return nil, err
	}
	return m.TLSConfig(tc), nil
}

// serveChallenge answers an HTTP-01 challenge with h, its manager's
// handler, before any route: the CA asks a plain listener on port 80 for
// it, and redirect_https or a route must not get in the way. On the accept
// loop it waits for the conn's goroutine, as the token may be read from
// the cache folder.
func (cc *clientConn) serveChallenge(req *http.Request, h http.Handler) bool {
	cc.e.Route = acme.ChallengePrefix
	serve := func() bool {
		w := &staticWriter{cc: cc, req: req, header: http.Header{}}
		h.ServeHTTP(w, req)
		return w.finish()
	}
	if cc.inline {
		return cc.later(serve)
	}
	return serve()
}
