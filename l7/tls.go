package l7

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/wslb/wslb/config"
)

// tlsConfig builds the server side of a TLS listener. Go's defaults are the
// modern ones (AEAD suites, X25519, no renegotiation); ALPN offers only
// http/1.1 so that a browser never tries h2 on a conn wslb reads as HTTP/1.
func tlsConfig(c *config.TLS) (*tls.Config, error) {
	var certs []tls.Certificate
	if c.Cert != "" { // else acme alone
		cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			return nil, fmt.Errorf("load TLS certificate: %w", err)
		}
		certs = append(certs, cert)
	}
	min := uint16(tls.VersionTLS12)
	if c.MinVersion == "1.3" {
		min = tls.VersionTLS13
	}
	return &tls.Config{
		Certificates: certs,
		MinVersion:   min,
		NextProtos:   []string{"http/1.1"},
	}, nil
}

// recordTypeHandshake is the first byte of every TLS ClientHello.
const recordTypeHandshake = 0x16

// startTLS runs the TLS handshake on cc, or, when the client spoke plain HTTP
// to the TLS port and tls.redirect_http is on, answers it with a redirect
// (http.redirect_code) to https
// (nginx needs `error_page 497` for that). It reports whether to go on.
func (w *worker) startTLS(ctx context.Context, cc *clientConn) bool {
	st := cc.st
	first, err := cc.br.Peek(1)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			st.errs.Timeout.Inc()
		}
		return false
	}
	if first[0] != recordTypeHandshake {
		st.errs.TLS.Inc()
		if !st.l.TLS.RedirectHTTP {
			return false
		}
		req, err := readRequest(cc.br, int(st.l.HTTP.MaxHeaderBytes))
		if err != nil {
			return false
		}
		if msg := checkRequest(req); msg != "" {
			// An invalid Host must not end up in the Location header.
			st.errs.BadRequest.Inc()
			cc.respondError(req, http.StatusBadRequest, msg)
			return false
		}
		cc.redirect(req, st.l.HTTP.RedirectCode, httpsURL(req, int(cc.local.Port())))
		return false
	}
	tc := tls.Server(&bufferedConn{Conn: cc.conn, r: cc.br}, st.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			st.errs.Timeout.Inc()
		} else {
			st.errs.TLS.Inc()
		}
		return false
	}
	cc.tls = true
	cc.conn, cc.sw.conn = tc, tc
	cc.br = bufio.NewReaderSize(tc, readerSize(st))
	cc.bw = bufio.NewWriterSize(&cc.sw, 4096)
	return true
}

// bufferedConn reads through r, which holds bytes already read from Conn
// (the peeked first byte, anything behind a PROXY header).
type bufferedConn struct {
	net.Conn
	r io.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// NetConn returns the TCP conn, so that a tunnel's relay can wait on its
// socket without a buffer (tunnel's socketOf); bytes r still holds are read
// by the relay's first burst, which reads through c.
func (c *bufferedConn) NetConn() net.Conn { return c.Conn }

// httpsURL is where a redirect to https sends req: the request's host
// without its port, then :port unless it is 443, then the original URI
// (its path and query, when it came in absolute-form).
func httpsURL(req *http.Request, port int) string {
	host := req.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if len(host) > 0 && host[0] != '[' && strings.Contains(host, ":") {
		host = "[" + host + "]" // an IPv6 literal lost its brackets in SplitHostPort
	}
	if port != 443 {
		host += ":" + strconv.Itoa(port)
	}
	uri := req.RequestURI
	if req.URL.IsAbs() {
		// An absolute-form target: its authority is already in req.Host.
		uri = req.URL.RequestURI()
	}
	return "https://" + host + uri
}
