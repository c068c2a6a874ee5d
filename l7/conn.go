package l7

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wslb/wslb/access"
	"github.com/wslb/wslb/header"
	"github.com/wslb/wslb/proxyheader"
	"github.com/wslb/wslb/route"
	"github.com/wslb/wslb/tunnel"
)

// clientConn is one client conn and what every request on it shares.
type clientConn struct {
	st       *state
	conn     net.Conn // raw TCP, or the *tls.Conn after the handshake
	br       *bufio.Reader
	bw       *bufio.Writer
	peer     netip.AddrPort // the TCP peer, or the source an accepted PROXY header named
	local    netip.AddrPort
	tls      bool
	accepted time.Time
	answered bool // the first response byte went out (wslb_handshake_seconds)
	// txBytes counts the next relayed response body, for the request being
	// forwarded; nil for answers not served by a pool.
	txBytes prometheus.Counter
	// unwatch stops ServeConn closing the conn when its ctx ends; a tunnel
	// calls it, since tunnel.Relay closes its conns itself and must be the
	// one that does, to tell a drain from a failure.
	unwatch func() bool
	// e is the access line of the request being served; whatever serves
	// it fills in what it learns (status, backend, bytes, how it ended).
	e access.Entry
}

// ServeConn serves one client conn until it closes, errs, idles out or
// becomes a tunnel that ends. It owns c.
func (w *worker) ServeConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	st := w.px.cur.Load()
	cc := &clientConn{
		st: st, conn: c, accepted: time.Now(),
		peer:  proxyheader.AddrPort(c.RemoteAddr()),
		local: proxyheader.AddrPort(c.LocalAddr()),
		// Drain cancels ctx: whatever the conn is doing, it ends.
		unwatch: context.AfterFunc(ctx, func() { c.Close() }),
	}
	defer cc.unwatch()
	// timeouts.handshake runs from accept through the PROXY header, the TLS
	// handshake and the first request head.
	deadline := cc.accepted.Add(st.l.Timeouts.Handshake)
	_ = c.SetDeadline(deadline)
	cc.br = bufio.NewReaderSize(c, readerSize(st))

	if st.l.AcceptProxyProtocol {
		src, err := proxyheader.Read(c, cc.br, time.Until(deadline))
		if err != nil {
			if errors.Is(err, proxyheader.ErrTimeout) {
				st.errs.Timeout.Inc()
			} else {
				st.errs.ProxyProtocol.Inc()
			}
			return
		}
		if src.IsValid() {
			cc.peer = src
		}
		_ = c.SetDeadline(deadline)
	}
	cc.bw = bufio.NewWriterSize(c, 4096)
	if st.tls != nil && !w.startTLS(ctx, cc) {
		return
	}
	_ = cc.conn.SetWriteDeadline(time.Time{})
	w.serveRequests(ctx, cc)
}

// readerSize is the client reader's buffer: a whole head must fit, since
// readRequest buffers it before parsing.
func readerSize(st *state) int {
	if st.l.Mode != "" && st.l.HTTP.MaxHeaderBytes > 4096 {
		return st.l.HTTP.MaxHeaderBytes
	}
	return 4096
}

// serveRequests answers requests in order (pipelined ones included: they
// wait in cc.br) until the client or a response ends the conn.
func (w *worker) serveRequests(ctx context.Context, cc *clientConn) {
	st := cc.st
	for n := 0; ; n++ {
		begin := cc.accepted
		if n > 0 {
			// Between requests the client may idle for timeouts.keepalive;
			// once its next request starts, timeouts.handshake bounds the head.
			_ = cc.conn.SetReadDeadline(time.Now().Add(st.l.Timeouts.Keepalive))
			if _, err := cc.br.Peek(1); err != nil {
				return
			}
			begin = time.Now()
			_ = cc.conn.SetReadDeadline(time.Now().Add(st.l.Timeouts.Handshake))
		}
		cc.e = access.Entry{Kind: access.KindRequest, Listener: st.l.Name, Client: cc.peer}
		req, err := readRequest(cc.br, st.l.HTTP.MaxHeaderBytes)
		if err != nil {
			w.badHead(cc, err)
			if cc.e.Status != 0 {
				// Only heads that got an answer: a line per silent
				// slowloris conn would let it fill the disk as well.
				w.logRequest(cc, begin)
			}
			return
		}
		_ = cc.conn.SetReadDeadline(time.Time{})
		cc.e.Method, cc.e.Path = req.Method, req.URL.Path
		more := w.serveRequest(ctx, cc, req)
		w.logRequest(cc, begin)
		if !more {
			return
		}
	}
}

// logRequest writes the access line of the request that began at begin.
func (w *worker) logRequest(cc *clientConn, begin time.Time) {
	if w.px.Access == nil {
		return
	}
	e := &cc.e
	e.Duration = time.Since(begin)
	if e.Reason == "" {
		e.Reason = "done"
	}
	w.px.Access.Log(e)
}

// endReason names what ended a request or tunnel that failed: drain or
// removal when ctx was cancelled (they close the conns, so the I/O error
// alone would blame the client), else fallback.
func endReason(ctx context.Context, fallback string) string {
	if ctx.Err() == nil {
		return fallback
	}
	if r, ok := errors.AsType[tunnel.Reasoner](context.Cause(ctx)); ok {
		return r.Reason()
	}
	return fallback
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
	if errors.Is(err, errSmuggling) {
		return "both Content-Length and Transfer-Encoding"
	}
	return "malformed request"
}

// serveRequest answers one request and reports whether the conn may carry
// another.
func (w *worker) serveRequest(ctx context.Context, cc *clientConn, req *http.Request) bool {
	st := cc.st
	h := st.l.HTTP
	if msg := checkRequest(req); msg != "" {
		st.errs.BadRequest.Inc()
		return cc.respondError(req, http.StatusBadRequest, msg)
	}
	if req.ContentLength > h.MaxBodyBytes {
		st.errs.BadRequest.Inc()
		return cc.respondError(req, http.StatusRequestEntityTooLarge, "request body too large")
	}
	if h.RedirectHTTPS {
		return cc.redirect(req, httpsURL(req, h.HTTPSPort))
	}
	res := st.routes.Match(req.URL)
	cc.e.Route = res.Prefix
	switch res.Kind {
	case route.BadPath:
		st.errs.BadRequest.Inc()
		return cc.respondError(req, http.StatusBadRequest, "invalid path")
	case route.NotFound:
		return cc.respondError(req, http.StatusNotFound, "no route for this path")
	case route.Redirect:
		return cc.redirect(req, res.Location)
	case route.Static:
		return cc.serveStatic(req, st.static[res.Dir], res)
	}
	if token, _ := header.UpgradeToken(req.Header, h.UpgradeProtocols); token != "" {
		return w.upgrade(ctx, cc, req, res, token)
	}
	return w.forward(ctx, cc, req, res)
}

// checkRequest returns why a parsed request must get a 400, or "".
// http.ReadRequest leaves these checks to net/http's server, which wslb does
// not use.
func checkRequest(req *http.Request) string {
	if req.ProtoAtLeast(1, 1) && req.Host == "" {
		return "missing Host header" // RFC 9112 §3.2
	}
	if req.Method == http.MethodConnect {
		return "CONNECT is not supported"
	}
	if req.ProtoMajor != 1 {
		// net/http parses any HTTP/x.y; wslb would forward it as HTTP/1.1.
		return "unsupported HTTP version"
	}
	if !validTarget(req) {
		return "invalid request target"
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
