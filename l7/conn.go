package l7

import (
	"bufio"
	"context"
	"errors"
	"io"
	"math/bits"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wslb/wslb/access"
	"github.com/wslb/wslb/header"
	"github.com/wslb/wslb/metrics"
	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/proxyheader"
	"github.com/wslb/wslb/route"
	"github.com/wslb/wslb/tunnel"
)

// clientConn is one client conn and what every request on it shares.
type clientConn struct {
	st   *state
	conn net.Conn // raw TCP, or the *tls.Conn after the handshake
	// br and bw come from the pools below and go back to them whenever the
	// conn waits for a request with nothing buffered (awaitRequest), and when
	// it ends or becomes a tunnel; nil meanwhile.
	br *bufio.Reader
	bw *bufio.Writer
	// src is what br reads: the raw conn, or its socket while awaitRequest
	// probes it.
	src   socketReader
	rsize int         // br's size: a whole head must fit
	raw   rawConnFunc // the raw conn's SyscallConn, once awaitRequest needed it
	// probe is readAwaited, and probeErr its error.
	probe    func(fd uintptr) bool
	probeErr error
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
	// begin is when the request being served began (its head's first
	// byte, or the accept), for its access line.
	begin time.Time
	// detached is set when the conn became a tunnel, which now owns it and
	// writes the access line when it ends.
	detached bool

	// watched is the backend conn of the request being forwarded, closed by
	// the drain watch (watchBackend) when ctx ends; drained records that it
	// fired. One watch per client conn, rather than a context.AfterFunc per
	// request.
	watched   atomic.Pointer[backendConn]
	drained   atomic.Bool
	stopWatch func() bool

	// Label lookups hash every label value under a lock; a keep-alive conn
	// mostly goes to one backend and gets one status, so the last series
	// are kept.
	series   backendSeries
	requests requestSeries
	// readDeadline: a read deadline may be set on conn that a read of the
	// request body or a tunnel must not inherit.
	readDeadline bool
}

// backendSeries are the series of requests that b of p serves.
type backendSeries struct {
	p    *pool.Pool
	b    *pool.Backend
	conn metrics.Conn
	idle prometheus.Gauge // wslb_idle_connections
}

// requestSeries is the wslb_http_requests_total child of one pool and status.
type requestSeries struct {
	pool    string
	status  int
	counter prometheus.Counter
}

// ServeConn serves one client conn until it closes, errs, idles out or
// becomes a tunnel that ends. It owns c.
func (w *worker) ServeConn(ctx context.Context, c net.Conn) {
	var cc *clientConn
	defer func() {
		if !cc.detached {
			c.Close()
		}
	}()
	st := w.px.cur.Load()
	cc = &clientConn{
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
	cc.src = socketReader{conn: c, fd: -1}
	cc.rsize = readerSize(st)
	cc.br = getReader(&cc.src, cc.rsize)
	defer cc.releaseBuffers(nil)

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
	cc.bw = getWriter(c)
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
	defer cc.unwatchBackends()
	st := cc.st
	cc.readDeadline = true // ServeConn's handshake deadline
	for n := 0; ; n++ {
		begin := cc.accepted
		if n > 0 {
			// Between requests the client may idle for timeouts.keepalive;
			// once its next request starts, timeouts.handshake bounds the head.
			if err := cc.awaitRequest(st.l.Timeouts.Keepalive); err != nil {
				return
			}
			begin = time.Now()
			// A head that arrived whole needs no further read to parse, so
			// no deadline for one.
			if !cc.headBuffered() {
				_ = cc.conn.SetReadDeadline(begin.Add(st.l.Timeouts.Handshake))
			}
		}
		cc.e = access.Entry{Kind: access.KindRequest, Listener: st.l.Name, Client: cc.peer}
		cc.begin = begin
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
		if req.Body != http.NoBody {
			cc.clearReadDeadline() // the body is read as it streams, with no deadline
		}
		cc.e.Method, cc.e.Path = req.Method, req.URL.Path
		more := w.serveRequest(ctx, cc, req)
		w.logRequest(cc, begin)
		if !more {
			return
		}
	}
}

// clearReadDeadline removes the client conn's read deadline, if one may be set.
func (cc *clientConn) clearReadDeadline() {
	if cc.readDeadline {
		_ = cc.conn.SetReadDeadline(time.Time{})
		cc.readDeadline = false
	}
}

// headBuffered reports whether br holds a whole request head already.
func (cc *clientConn) headBuffered() bool {
	buf, _ := cc.br.Peek(cc.br.Buffered())
	return headEnd(buf, 0) >= 0
}

// awaitRequest waits up to timeout for the first byte of the next request.
// A conn that idles between requests holds no buffer: when nothing is
// buffered, br and bw go back to their pools and, on plain TCP, the socket is
// waited on directly; a new br reads it once it is readable. A TLS conn keeps
// its buffers (its records are read through br), as do pipelined requests.
func (cc *clientConn) awaitRequest(timeout time.Duration) error {
	_ = cc.conn.SetReadDeadline(time.Now().Add(timeout))
	cc.readDeadline = true
	if cc.br.Buffered() > 0 || cc.tls {
		_, err := cc.br.Peek(1)
		return err
	}
	if cc.raw == nil {
		sc, ok := cc.conn.(syscall.Conn)
		if !ok {
			_, err := cc.br.Peek(1)
			return err
		}
		raw, err := sc.SyscallConn()
		if err != nil {
			return err
		}
		cc.raw = raw.Read
	}
	cc.releaseBuffers(nil)
	if cc.probe == nil {
		cc.probe = cc.readAwaited // a method value: allocated once per conn
	}
	// The first call reads at once (pipelining clients, and edge-triggered
	// polling may have consumed the readiness of bytes already there); each
	// later one follows readability. Between calls no buffer is held.
	if err := cc.raw(cc.probe); err != nil {
		return err
	}
	if err := cc.probeErr; err != nil {
		cc.probeErr = nil
		return err
	}
	cc.bw = getWriter(cc.conn)
	return nil
}

// readAwaited is awaitRequest's read of the socket: it reports whether it is
// done, with cc.br holding the first bytes or cc.probeErr the error.
func (cc *clientConn) readAwaited(fd uintptr) bool {
	br := getReader(&cc.src, cc.rsize)
	cc.src.fd = int(fd)
	_, err := br.Peek(1)
	cc.src.fd = -1
	if err == syscall.EAGAIN {
		putReader(br)
		return false
	}
	cc.br, cc.probeErr = br, err
	return true
}

// releaseBuffers gives br and bw back to their pools, and bc's reader when
// bc is not nil: the conn is ending, idling or becoming a tunnel, and what
// they held has been written or copied.
func (cc *clientConn) releaseBuffers(bc *backendConn) {
	if cc.br != nil {
		putReader(cc.br)
		cc.br = nil
	}
	if cc.bw != nil {
		putWriter(cc.bw)
		cc.bw = nil
	}
	if bc != nil && bc.br != nil {
		putReader(bc.br)
		bc.br = nil
	}
}

// rawConnFunc is syscall.RawConn's Read.
type rawConnFunc func(f func(fd uintptr) bool) error

// socketReader is the reader under a client conn's br: conn, or, while
// awaitRequest holds fd (its socket, set non-blocking by the runtime), that
// socket read directly, so that a read with nothing to read returns EAGAIN
// rather than waiting.
type socketReader struct {
	conn net.Conn
	fd   int // -1 outside awaitRequest
}

func (r *socketReader) Read(p []byte) (int, error) {
	if r.fd < 0 {
		return r.conn.Read(p)
	}
	for {
		n, err := syscall.Read(r.fd, p)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return 0, err // the expected answer: not worth an allocation
		case err != nil:
			return 0, os.NewSyscallError("read", err)
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// Buffer pools. A client conn's reader is as large as max_header_bytes, so
// readers are pooled by size class, powers of two from 4 KiB; a size past
// the largest class is allocated and dropped.
const (
	minBuffer     = 4096
	readerClasses = 9 // 4 KiB to 1 MiB
)

var (
	readerPools [readerClasses]sync.Pool // *bufio.Reader of minBuffer<<i bytes
	writerPool  sync.Pool                // *bufio.Writer of minBuffer bytes
)

// readerClass is the pool of readers of at least size bytes, and their size;
// -1 when size is past the largest class.
func readerClass(size int) (class, classSize int) {
	if size <= minBuffer {
		return 0, minBuffer
	}
	class = bits.Len(uint(size-1)) - bits.Len(minBuffer-1)
	if class >= readerClasses {
		return -1, size
	}
	return class, minBuffer << class
}

// getReader returns a reader of r with a buffer of at least size bytes.
func getReader(r io.Reader, size int) *bufio.Reader {
	class, n := readerClass(size)
	if class >= 0 {
		if br, ok := readerPools[class].Get().(*bufio.Reader); ok {
			br.Reset(r)
			return br
		}
	}
	return bufio.NewReaderSize(r, n)
}

// putReader gives br back; it must no longer be used. What it buffered is lost.
func putReader(br *bufio.Reader) {
	if class, n := readerClass(br.Size()); class >= 0 && n == br.Size() {
		br.Reset(nil) // drop the conn
		readerPools[class].Put(br)
	}
}

// getWriter returns a writer to w with a buffer of minBuffer bytes.
func getWriter(w io.Writer) *bufio.Writer {
	if bw, ok := writerPool.Get().(*bufio.Writer); ok {
		bw.Reset(w)
		return bw
	}
	return bufio.NewWriterSize(w, minBuffer)
}

// putWriter gives bw back; it must no longer be used. What it buffered is lost.
func putWriter(bw *bufio.Writer) {
	if bw.Size() == minBuffer {
		bw.Reset(nil)
		writerPool.Put(bw)
	}
}

// logRequest writes the access line of the request that began at begin.
func (w *worker) logRequest(cc *clientConn, begin time.Time) {
	if w.px.Access == nil || cc.detached {
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
		cc.clearReadDeadline() // the tunnel reads the client conn with its own
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
