package l7

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wslb/wslb/header"
	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/proxyheader"
	"github.com/wslb/wslb/route"
)

// Errors of connect, answered 503 and 502.
var (
	errNoBackend  = errors.New("no backend available")
	errDialFailed = errors.New("backend dial failed")
)

// errBodyTooLarge ends a chunked request body that grows past max_body_bytes.
var errBodyTooLarge = errors.New("request body larger than max_body_bytes")

// backendConn is a conn to a backend with the reader its responses are
// parsed from (bytes may be buffered in it), reserved on b.
type backendConn struct {
	b      *pool.Backend
	conn   net.Conn
	br     *bufio.Reader
	reused bool // it came from the idle cache
}

// connect reserves a backend and returns a conn to it: an idle one from this
// worker's cache, else a new dial. A failed dial is retried once on another
// backend, as nothing has been sent yet. The caller releases the backend; the
// access line names it.
func (w *worker) connect(ctx context.Context, cc *clientConn, p *pool.Pool, clientIP netip.Addr, cached bool) (*backendConn, error) {
	st := cc.st
	var tried *pool.Backend
	for range 2 {
		b, err := p.Pick(clientIP, tried)
		if err != nil {
			if tried == nil {
				st.errs.NoBackend.Inc()
				return nil, errNoBackend
			}
			return nil, errDialFailed
		}
		// A conn that carried a PROXY header belongs to its client: never
		// take one from, or give one to, the shared cache.
		if cached && st.l.ProxyProtocol == "" {
			if c, br, ok := w.cache.Get(b); ok {
				w.px.idleGauge(p, b)
				cc.e.Backend = b.String()
				return &backendConn{b: b, conn: c, br: br, reused: true}, nil
			}
		}
		bc, err := w.dial(ctx, cc, p, b)
		if err == nil {
			cc.e.Backend = b.String()
			return bc, nil
		}
		b.Release()
		st.errs.Dial.Inc()
		if w.px.OnDialError != nil {
			w.px.OnDialError(b, err)
		}
		w.px.Log.Warn("backend dial failed", "listener", st.l.Name, "pool", p.Name(), "backend", b.String(), "err", err)
		tried = b
	}
	return nil, errDialFailed
}

// dial opens a new conn to b (which the caller has reserved) and sends the
// PROXY header when the listener is configured to.
func (w *worker) dial(ctx context.Context, cc *clientConn, p *pool.Pool, b *pool.Backend) (*backendConn, error) {
	st := cc.st
	d := net.Dialer{Timeout: st.l.Timeouts.Connect}
	start := time.Now()
	c, err := d.DialContext(ctx, "tcp", b.String())
	w.px.Metrics.BackendConnect.WithLabelValues(p.Name(), b.String()).Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", b, err)
	}
	if v := st.l.ProxyProtocol; v != "" {
		if err := proxyheader.Write(c, v, cc.peer, cc.conn.LocalAddr()); err != nil {
			c.Close()
			return nil, err
		}
	}
	return &backendConn{b: b, conn: c, br: bufio.NewReader(c)}, nil
}

// outgoing builds the request for the backend from the client's: the URL the
// route chose, hop-by-hop headers removed (RFC 9110 §7.6.1), forwarding
// headers set. It shares nothing mutable with req except the body.
//
// It also returns the client's address (what source_hash hashes and X-Real-IP
// says), read from the headers after the hop-by-hop removal, so that a client
// naming X-Forwarded-For in Connection cannot make the two disagree.
func outgoing(cc *clientConn, req *http.Request, res route.Result) (*http.Request, netip.Addr) {
	h := cc.st.l.HTTP
	out := &http.Request{
		Method:           req.Method,
		URL:              res.URL,
		Proto:            "HTTP/1.1",
		ProtoMajor:       1,
		ProtoMinor:       1,
		Header:           req.Header.Clone(),
		ContentLength:    req.ContentLength,
		TransferEncoding: req.TransferEncoding,
		Host:             req.Host,
		Trailer:          req.Trailer,
	}
	header.RemoveHopByHop(out.Header)
	proto := "http"
	if cc.tls {
		proto = "https"
	}
	fwd := header.Forwarding{
		Peer: cc.peer.Addr(), Trusted: h.TrustedPrefixes, Host: req.Host, Proto: proto,
		Port: int(cc.local.Port()), XForwarded: h.ForwardedHeaders, RFC7239: h.Forwarded,
	}
	client := fwd.ClientIP(out.Header)
	if client != cc.peer.Addr() {
		cc.e.RealIP = client // the access line names both
	}
	fwd.SetForwarded(out.Header)
	// Request.Write adds a Go User-Agent to requests without one; an empty
	// value tells it to send none, so the backend sees what the client sent.
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = []string{""}
	}
	if req.Body != nil && req.Body != http.NoBody {
		out.Body = &limitedBody{r: req.Body, left: h.MaxBodyBytes}
	}
	return out, client
}

// forward proxies one plain request and its response. It reports whether the
// client conn may carry another request.
func (w *worker) forward(ctx context.Context, cc *clientConn, req *http.Request, res route.Result) bool {
	st := cc.st
	p := st.pools[res.Pool]
	out, client := outgoing(cc, req, res)
	bc, err := w.connect(ctx, cc, p, client, true)
	if err != nil {
		return cc.respondConnectError(req, res.Pool, err)
	}
	defer bc.b.Release()
	if !st.l.HTTP.PreserveHost {
		out.Host = bc.b.String()
	}
	mc := w.px.Metrics.Conn(st.l.Name, p.Name(), bc.b.String())
	defer mc.Open()()
	// Body bytes count as they stream, as a tunnel's bytes do.
	if lb, ok := out.Body.(*limitedBody); ok {
		lb.count = mc.Rx
	}
	cc.txBytes = mc.Tx

	// Drain closes the client conn; the backend conn is closed with it, so
	// that a slow answer or a quiet stream does not hold this handler, and
	// with it the drain, until timeouts.idle.
	watch := func(c net.Conn) func() bool { return context.AfterFunc(ctx, func() { c.Close() }) }
	unwatch := watch(bc.conn)
	defer func() { unwatch() }()

	resp, written, err := w.roundTrip(cc, req, out, bc)
	if err != nil && bc.reused && replayable(out) && nothingReceived(err) {
		// The idle conn died between the liveness probe and the write; the
		// request never reached a backend, so it is safe to send again.
		bc.conn.Close()
		<-written
		unwatch()
		nbc, derr := w.dial(ctx, cc, p, bc.b)
		if derr != nil {
			st.errs.Dial.Inc()
			return cc.respondPool(req, res.Pool, http.StatusBadGateway, "backend unreachable")
		}
		bc = nbc
		unwatch = watch(bc.conn)
		resp, written, err = w.roundTrip(cc, req, out, bc)
	}
	if err != nil {
		bc.conn.Close()
		werr := cc.abortWriter(written)
		return cc.respondBackendError(req, res.Pool, err, werr)
	}
	keep, reusable, rerr := cc.relayResponse(req, resp, res.Pool, bc, st.l.Timeouts.Idle)
	if rerr != nil {
		cc.e.Reason = endReason(ctx, cc.e.Reason)
	}

	// A backend may answer before it has read the whole request body (an
	// early 413, a stream); then the rest of the body is still on the client
	// conn, and the backend conn is mid-request: neither can be reused.
	var werr error
	select {
	case werr = <-written:
	case <-bodyRead(out):
		// The whole request was read from the client: at most its last
		// bytes are still on their way to the backend, and the writer may
		// simply not have reported yet. Wait for it, bounded.
		_ = bc.conn.SetWriteDeadline(time.Now().Add(writeGrace))
		werr = <-written
	default:
		bc.conn.Close()
		cc.abortWriter(written)
		werr, keep = errors.New("request body not fully sent"), false
	}
	if lb, ok := out.Body.(*limitedBody); ok {
		cc.e.Rx = lb.n.Load() // the writer has reported: it reads no more
	}
	live := unwatch() // false: drain closed the conn
	if live && rerr == nil && werr == nil && reusable && st.l.ProxyProtocol == "" {
		w.cache.Put(bc.b, bc.conn, bc.br)
		w.px.idleGauge(p, bc.b)
	} else {
		bc.conn.Close()
	}
	return keep && werr == nil
}

// roundTrip sends out on bc from a goroutine while it reads the response
// head, so a backend that answers before reading the body, or that sends
// 100 Continue, works. 1xx answers are relayed to the client as they come.
// written delivers the writer's result exactly once.
func (w *worker) roundTrip(cc *clientConn, req, out *http.Request, bc *backendConn) (*http.Response, <-chan error, error) {
	written := make(chan error, 1)
	go writeRequest(bc.conn, out, written)
	for {
		_ = bc.conn.SetReadDeadline(time.Now().Add(cc.st.l.Timeouts.Idle))
		resp, err := http.ReadResponse(bc.br, out)
		if err != nil {
			return nil, written, err
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return nil, written, errors.New("backend switched protocols on a plain request")
		}
		if resp.StatusCode >= 200 {
			return resp, written, nil
		}
		// 100 Continue, 103 Early Hints: interim answers an HTTP/1.1 client
		// must accept; an HTTP/1.0 client must not get them (RFC 9110 §15.2).
		if req.ProtoAtLeast(1, 1) {
			header.RemoveHopByHop(resp.Header)
			if err := resp.Write(cc.bw); err == nil {
				_ = cc.bw.Flush()
			}
		}
	}
}

// abortWriter stops a writeRequest goroutine whose backend conn the caller
// has closed and returns its result. The goroutine may be blocked reading the
// client's body; a read deadline in the past wakes it. The client conn is
// closed after this anyway: its body is half read.
func (cc *clientConn) abortWriter(written <-chan error) error {
	_ = cc.conn.SetReadDeadline(time.Unix(1, 0))
	return <-written
}

// writeGrace bounds the wait for the last bytes of a request whose answer
// is already complete.
const writeGrace = 5 * time.Second

// closedChan is a channel ready to receive from.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// bodyRead returns a channel that is ready when out's body has been read from
// the client to its end (at once when it has none), else nil.
func bodyRead(out *http.Request) <-chan struct{} {
	if b, ok := out.Body.(*limitedBody); ok && !b.eof.Load() {
		return nil
	}
	return closedChan
}

// writeRequest is a named goroutine (for readable stack dumps) that writes
// out to c and reports how it went. It does not modify out, which its caller
// reads meanwhile.
//
// When the request fails on the client's side (its body outgrew
// max_body_bytes or broke off, or net/http refused to write the head), it
// closes c: the backend would wait for the rest of a request that never
// comes, and the caller would wait for the backend's answer until the idle
// timeout. The body's own error is reported, since net/http wraps it in a
// type that errors.Is cannot see through.
func writeRequest(c net.Conn, out *http.Request, written chan<- error) {
	bw := bufio.NewWriter(c)
	o := *out
	var fb *flushingBody
	if o.Body != nil {
		fb = &flushingBody{r: o.Body, bw: bw}
		o.Body = fb
	}
	err := o.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		var op *net.OpError
		switch {
		case fb != nil && fb.err != nil:
			err = fb.err
			c.Close()
		case !errors.As(err, &op):
			c.Close()
		}
	}
	written <- err
}

// relayResponse writes resp to the client, streaming its body, and reports
// whether the client conn may go on and whether the backend conn may be
// reused (its body was read to the end and it did not ask to close).
func (cc *clientConn) relayResponse(req *http.Request, resp *http.Response, poolName string, bc *backendConn, idle time.Duration) (keep, reusable bool, err error) {
	backendClose := resp.Close
	header.RemoveHopByHop(resp.Header)
	header.SetResponseHeaders(resp.Header, cc.st.l.HTTP.ResponseHeaders)
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
	body := &backendBody{r: resp.Body, conn: bc.conn, idle: idle, bw: cc.bw, count: cc.txBytes}
	cc.txBytes = nil
	resp.Body = body
	cc.count(req, poolName, resp.StatusCode)
	cc.firstByte()
	err = resp.Write(writerOnly{cc.bw})
	if err == nil {
		err = cc.bw.Flush()
	}
	cc.e.Tx += body.n
	if err != nil {
		// The body's own read error means the backend failed the stream;
		// any other error is the client's side.
		switch {
		case errors.Is(body.err, os.ErrDeadlineExceeded):
			cc.e.Reason = "idle"
		case body.err != nil:
			cc.e.Reason = "backend"
		default:
			cc.e.Reason = "client"
		}
		return false, false, err
	}
	done := body.eof || !bodyAllowed(req, resp)
	return keep, done && !backendClose, nil
}

// bodyAllowed reports whether a response to req carries a body.
func bodyAllowed(req *http.Request, resp *http.Response) bool {
	s := resp.StatusCode
	return req.Method != http.MethodHead && s != http.StatusNoContent && s != http.StatusNotModified && s >= 200
}

// respondConnectError answers when no backend conn could be had.
func (cc *clientConn) respondConnectError(req *http.Request, poolName string, err error) bool {
	if errors.Is(err, errNoBackend) {
		cc.e.Reason = "no_backend"
		return cc.respondPool(req, poolName, http.StatusServiceUnavailable, "no healthy backend")
	}
	cc.e.Reason = "dial"
	return cc.respondPool(req, poolName, http.StatusBadGateway, "backend unreachable")
}

// respondBackendError answers when the backend failed before its response
// head arrived: 504 when it was silent past timeouts.idle, 413 when the
// client's chunked body outgrew max_body_bytes, else 502.
func (cc *clientConn) respondBackendError(req *http.Request, poolName string, err, werr error) bool {
	switch {
	case errors.Is(werr, errBodyTooLarge):
		cc.st.errs.BadRequest.Inc()
		return cc.respondPool(req, poolName, http.StatusRequestEntityTooLarge, "request body too large")
	case errors.Is(err, os.ErrDeadlineExceeded):
		cc.st.errs.Timeout.Inc()
		cc.e.Reason = "idle"
		return cc.respondPool(req, poolName, http.StatusGatewayTimeout, "backend did not answer in time")
	default:
		cc.e.Reason = "backend"
		return cc.respondPool(req, poolName, http.StatusBadGateway, "invalid or no answer from backend")
	}
}

// respondPool is respondError counted against a pool. The request body may
// be half read, so the conn always closes.
func (cc *clientConn) respondPool(req *http.Request, poolName string, status int, reason string) bool {
	req.Close = true
	return cc.respond(req, poolName, status, nil, fmt.Sprintf("%d %s: %s\n", status, http.StatusText(status), reason), true)
}

// replayable reports whether out can be sent again: it has no body to resend.
func replayable(out *http.Request) bool { return out.Body == nil }

// nothingReceived reports errors that mean the backend closed the conn
// before answering at all.
func nothingReceived(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// limitedBody enforces max_body_bytes on a chunked request body as it
// streams. Its Close does not drain the client's body as net/http's does: a
// failed backend write must not wait on a slow client. It also records, for
// forward, when the body has been read to its end.
type limitedBody struct {
	r     io.Reader
	left  int64
	eof   atomic.Bool
	n     atomic.Int64       // bytes read, for the access log
	count prometheus.Counter // wslb_bytes_total{direction="rx"}; set before the body is read
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, errBodyTooLarge
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	b.n.Add(int64(n))
	if b.count != nil && n > 0 {
		b.count.Add(float64(n))
	}
	if b.left < 0 {
		return n, errBodyTooLarge
	}
	if errors.Is(err, io.EOF) {
		b.eof.Store(true)
	}
	return n, err
}

func (b *limitedBody) Close() error { return nil }

// writerOnly hides bufio.Writer's ReadFrom. Given a *bufio.Writer, io.Copy
// would read the body straight into the writer's buffer, and backendBody's
// flush inside Read would then send stale bytes from under it.
type writerOnly struct{ io.Writer }

// flushingBody flushes the request writer before every read of the client's
// body, so each piece goes to the backend as soon as it arrives instead of
// waiting for a full buffer. This is safe although Request.Write is given the
// *bufio.Writer itself: it flushes the head before the body (FlushHeaders),
// so a Content-Length body starts with an empty buffer, which bufio hands to
// the conn's own ReadFrom; a chunked body goes through net/http's chunked
// writer, which has no ReadFrom.
//
// err keeps the first error reading the client's body failed with.
type flushingBody struct {
	r   io.ReadCloser
	bw  *bufio.Writer
	err error
}

func (b *flushingBody) Read(p []byte) (int, error) {
	if b.bw.Buffered() > 0 {
		if err := b.bw.Flush(); err != nil {
			return 0, err
		}
	}
	n, err := b.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && b.err == nil {
		b.err = err
	}
	return n, err
}

func (b *flushingBody) Close() error { return b.r.Close() }

// backendBody streams a response body: every read of the backend may wait up
// to the idle timeout, and what was read is flushed to the client before the
// next read blocks, so server-sent events and long polls arrive as sent.
type backendBody struct {
	r     io.ReadCloser
	conn  net.Conn
	idle  time.Duration
	bw    *bufio.Writer
	eof   bool
	n     int64              // bytes read, for the access log
	err   error              // the first read error other than EOF
	count prometheus.Counter // wslb_bytes_total{direction="tx"}, or nil
}

func (b *backendBody) Read(p []byte) (int, error) {
	if b.bw.Buffered() > 0 {
		if err := b.bw.Flush(); err != nil {
			return 0, err
		}
	}
	_ = b.conn.SetReadDeadline(time.Now().Add(b.idle))
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
