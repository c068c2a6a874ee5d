package l7

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wslb/wslb/frontend"
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
				cc.seriesFor(w, p, b).idle.Set(float64(b.Idle()))
				cc.e.Backend = b.String()
				if br == nil {
					br = getReader(c, minBuffer)
				}
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
	d := net.Dialer{Timeout: st.l.Timeouts.Connect, KeepAliveConfig: frontend.KeepAlive()}
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
	return &backendConn{b: b, conn: c, br: getReader(c, minBuffer)}, nil
}

// keep offers bc to the worker's idle cache. An idle conn holds no reader:
// an empty one goes back to the pool, and connect takes another.
func (w *worker) keep(cc *clientConn, p *pool.Pool, bc *backendConn) {
	br := bc.br
	if br != nil && br.Buffered() == 0 {
		putReader(br)
		br = nil
	}
	bc.br = nil
	w.cache.Put(bc.b, bc.conn, br) // closes the conn when br holds bytes
	cc.seriesFor(w, p, bc.b).idle.Set(float64(bc.b.Idle()))
}

// close closes bc for good and gives its reader back; nothing may read it
// any more.
func (bc *backendConn) close() {
	bc.conn.Close()
	if bc.br != nil {
		putReader(bc.br)
		bc.br = nil
	}
}

// seriesFor returns the series of requests that b of p serves, looked up
// only when the backend differs from the last request's.
func (cc *clientConn) seriesFor(w *worker, p *pool.Pool, b *pool.Backend) *backendSeries {
	s := &cc.series
	if s.p != p || s.b != b {
		m, pn, bn := w.px.Metrics, p.Name(), b.String()
		*s = backendSeries{p: p, b: b, conn: m.Conn(cc.st.l.Name, pn, bn), idle: m.IdleConnections.WithLabelValues(pn, bn)}
	}
	return s
}

// watchBackend makes a drain (the end of ctx) close bc's conn as well as the
// client's, so that a slow answer or a quiet stream does not hold this
// handler, and with it the drain, until timeouts.idle. The watch on ctx is
// registered once per client conn; each request only swaps the conn it
// closes.
func (cc *clientConn) watchBackend(ctx context.Context, bc *backendConn) {
	if cc.stopWatch == nil {
		cc.stopWatch = context.AfterFunc(ctx, cc.drainBackend)
	}
	cc.watched.Store(bc)
	if cc.drained.Load() && cc.watched.CompareAndSwap(bc, nil) {
		bc.conn.Close() // the drain came first and found nothing to close
	}
}

// unwatchBackend ends watchBackend's watch of bc and reports whether bc is
// still live: false when the drain closed its conn.
func (cc *clientConn) unwatchBackend(bc *backendConn) bool {
	return cc.watched.CompareAndSwap(bc, nil)
}

// drainBackend runs when a drain ends the client conn's ctx.
func (cc *clientConn) drainBackend() {
	cc.drained.Store(true)
	if bc := cc.watched.Swap(nil); bc != nil {
		bc.conn.Close()
	}
}

// unwatchBackends ends the client conn's watch on its ctx.
func (cc *clientConn) unwatchBackends() {
	if cc.stopWatch != nil {
		cc.stopWatch()
	}
}

// outgoing builds the request for the backend from the client's: the URL the
// route chose, hop-by-hop headers removed (RFC 9110 §7.6.1), forwarding
// headers set. It takes over req's header map and rewrites it in place
// (cloning it costs every request a map and its slices): req.Header must not
// be read after this, which only the upgrade checks do, before it.
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
		Header:           req.Header,
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
	client := fwd.SetForwarded(out.Header)
	if client != cc.peer.Addr() {
		cc.e.RealIP = client // the access line names both
	}
	if req.Body != nil && req.Body != http.NoBody {
		out.Body = &limitedBody{r: req.Body, left: h.MaxBodyBytes}
		// Request.Write, which writes requests with a body, adds a Go
		// User-Agent to requests without one; an empty value tells it to
		// send none, so the backend sees what the client sent.
		if _, ok := out.Header["User-Agent"]; !ok {
			out.Header["User-Agent"] = []string{""}
		}
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
	mc := cc.seriesFor(w, p, bc.b).conn
	mc.Total.Inc()
	mc.Active.Inc()
	defer mc.Active.Dec()
	// Body bytes count as they stream, as a tunnel's bytes do.
	if lb, ok := out.Body.(*limitedBody); ok {
		lb.count = mc.Rx
	}
	cc.txBytes = mc.Tx

	cc.watchBackend(ctx, bc)
	resp, sent, err := w.roundTrip(cc, req, out, bc)
	if err != nil && bc.reused && replayable(out) && nothingReceived(err) {
		// The idle conn died between the liveness probe and the write; the
		// request never reached a backend, so it is safe to send again.
		cc.unwatchBackend(bc)
		bc.close()
		sent.wait()
		nbc, derr := w.dial(ctx, cc, p, bc.b)
		if derr != nil {
			st.errs.Dial.Inc()
			return cc.respondPool(req, res.Pool, http.StatusBadGateway, "backend unreachable")
		}
		bc = nbc
		cc.watchBackend(ctx, bc)
		resp, sent, err = w.roundTrip(cc, req, out, bc)
	}
	if err != nil {
		cc.unwatchBackend(bc)
		bc.close()
		werr := cc.abortWriter(sent)
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
	switch {
	case sent.written == nil:
		werr = sent.err // written before the response was read
	default:
		select {
		case werr = <-sent.written:
		case <-bodyRead(out):
			// The whole request was read from the client: at most its last
			// bytes are still on their way to the backend, and the writer may
			// simply not have reported yet. Wait for it, bounded.
			_ = bc.conn.SetWriteDeadline(time.Now().Add(writeGrace))
			werr = <-sent.written
		default:
			bc.conn.Close()
			cc.abortWriter(sent)
			werr, keep = errors.New("request body not fully sent"), false
		}
	}
	if lb, ok := out.Body.(*limitedBody); ok {
		cc.e.Rx = lb.n.Load() // the writer has reported: it reads no more
	}
	live := cc.unwatchBackend(bc) // false: drain closed the conn
	if live && rerr == nil && werr == nil && reusable && st.l.ProxyProtocol == "" {
		w.keep(cc, p, bc)
	} else {
		bc.close()
	}
	return keep && werr == nil
}

// sending is the write of a request to a backend: done before its response
// is read when it has no body (err), else by a writeRequest goroutine that
// delivers its result on written exactly once.
type sending struct {
	written chan error
	err     error
}

// wait returns the write's result.
func (s sending) wait() error {
	if s.written == nil {
		return s.err
	}
	return <-s.written
}

// roundTrip sends out on bc and reads the response head. A request with a
// body is written from a goroutine meanwhile, so that a backend that answers
// before reading the body, or that sends 100 Continue, works. One without is
// written first, in one write, on this goroutine: a head fits in the
// socket's buffer, so the write does not wait on the backend, and a
// goroutine and a channel per request are saved. 1xx answers are relayed to
// the client as they come.
func (w *worker) roundTrip(cc *clientConn, req, out *http.Request, bc *backendConn) (*http.Response, sending, error) {
	idle := cc.st.l.Timeouts.Idle
	var s sending
	if out.Body == nil {
		// One deadline for the write and the response head: a backend that
		// reads nothing for timeouts.idle is as silent as one that answers
		// nothing.
		_ = bc.conn.SetDeadline(time.Now().Add(idle))
		if s.err = sendHead(bc.conn, out); s.err != nil {
			return nil, s, s.err
		}
	} else {
		s.written = make(chan error, 1)
		go writeRequest(bc.conn, out, s.written)
		_ = bc.conn.SetReadDeadline(time.Now().Add(idle))
	}
	for first := true; ; first = false {
		if !first {
			_ = bc.conn.SetReadDeadline(time.Now().Add(idle))
		}
		resp, err := http.ReadResponse(bc.br, out)
		if err != nil {
			return nil, s, err
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return nil, s, errors.New("backend switched protocols on a plain request")
		}
		if resp.StatusCode >= 200 {
			return resp, s, nil
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

// sendHead writes out, a request without a body, to c in one write.
func sendHead(c net.Conn, out *http.Request) error {
	bw := getWriter(c)
	defer putWriter(bw)
	if err := writeRequestHead(bw, out); err != nil {
		return err
	}
	return bw.Flush()
}

// abortWriter stops a writeRequest goroutine whose backend conn the caller
// has closed and returns its result. The goroutine may be blocked reading the
// client's body; a read deadline in the past wakes it. The client conn is
// closed after this anyway: its body is half read.
func (cc *clientConn) abortWriter(s sending) error {
	if s.written == nil {
		return s.err // no goroutine, no body read from the client
	}
	_ = cc.conn.SetReadDeadline(time.Unix(1, 0))
	return <-s.written
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
	bw := getWriter(c)
	defer putWriter(bw)
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
	length, chunkedIn := resp.ContentLength, len(resp.TransferEncoding) > 0
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
	body := &backendBody{r: resp.Body, conn: bc.conn, br: bc.br, length: length, chunked: chunkedIn,
		idle: idle, bw: cc.bw, count: cc.txBytes}
	cc.txBytes = nil
	resp.Body = body
	cc.count(req, poolName, resp.StatusCode)
	cc.firstByte()
	if identityResponse(resp, body) {
		err = writeIdentityResponse(cc.bw, resp, body)
	} else {
		err = resp.Write(writerOnly{cc.bw})
	}
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

// identityResponse reports whether writeIdentityResponse writes resp, whose
// body is body: a known length, no chunks and no trailers, the usual
// response of an API or a file.
func identityResponse(resp *http.Response, body *backendBody) bool {
	return resp.ContentLength >= 0 && len(resp.TransferEncoding) == 0 && resp.Trailer == nil &&
		(resp.ContentLength > 0 || body.r == http.NoBody) &&
		(!resp.Close || len(resp.Header["Connection"]) == 0) &&
		resp.StatusCode >= 100 && resp.StatusCode <= 999 &&
		resp.ProtoMajor >= 0 && resp.ProtoMajor <= 9 && resp.ProtoMinor >= 0 && resp.ProtoMinor <= 9
}

// writeIdentityResponse writes resp, for which identityResponse holds, to bw
// as resp.Write does, byte for byte and error for error (head_write_test.go
// checks), without fmt, a copy of resp, a transfer writer, a header sorter
// and a 32 KiB copy buffer: the body goes from the backend's reader straight
// into bw.
func writeIdentityResponse(bw *bufio.Writer, resp *http.Response, body *backendBody) error {
	method := ""
	if resp.Request != nil {
		method = resp.Request.Method
	}
	head := method == http.MethodHead
	n := resp.ContentLength
	if n == 0 {
		// Response.Write probes a body of length 0 (which is NoBody here),
		// and body notes its end.
		var probe [1]byte
		if _, err := body.Read(probe[:]); err != nil && err != io.EOF {
			return err
		}
	}
	writeStatusLine(bw, resp)
	if resp.Close {
		bw.WriteString("Connection: close\r\n")
	}
	sentLength := n > 0 || method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch
	if sentLength {
		var digits [20]byte
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(digits[:0], n, 10))
		bw.WriteString("\r\n")
	}
	writeFields(bw, resp.Header, excludedFromResponse)
	if n == 0 && !sentLength && bodyAllowedForStatus(resp.StatusCode) {
		bw.WriteString("Content-Length: 0\r\n")
	}
	if _, err := bw.WriteString("\r\n"); err != nil {
		return err
	}
	if head {
		return body.Close()
	}
	copied, err := copyBody(bw, body, n)
	if err != nil {
		return err
	}
	// What follows the length is read and dropped, as Response.Write does;
	// net/http's reader stops at the length, so this is its EOF.
	var rest [512]byte
	for {
		m, err := body.Read(rest[:])
		copied += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if err := body.Close(); err != nil {
		return err
	}
	if copied != n {
		return fmt.Errorf("http: ContentLength=%d with Body length %d", n, copied)
	}
	return nil
}

// copyBody copies up to n bytes of body into bw, reading them straight into
// bw's free space, and returns how many it copied. body may flush bw while it
// reads, which moves the free space: the bytes read are then written to where
// it is now, as bw.Write does.
func copyBody(bw *bufio.Writer, body io.Reader, n int64) (int64, error) {
	var copied int64
	for copied < n {
		if bw.Available() < bw.Size()/8 {
			if err := bw.Flush(); err != nil {
				return copied, err
			}
		}
		p := bw.AvailableBuffer()
		p = p[:min(int64(cap(p)), n-copied)]
		m, err := body.Read(p)
		if m > 0 {
			if _, werr := bw.Write(p[:m]); werr != nil {
				return copied, werr
			}
			copied += int64(m)
		}
		switch {
		case err == io.EOF:
			return copied, nil
		case err != nil:
			return copied, err
		}
	}
	return copied, nil
}

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
// next read blocks, so server-sent events and long polls arrive as sent. A
// read that cannot block (the bytes are in br already, or the body is at its
// end) does neither, so that a response that came in one piece leaves in
// one write, and costs no deadline.
type backendBody struct {
	r       io.ReadCloser
	conn    net.Conn
	br      *bufio.Reader // the backend conn's, which r reads from
	length  int64         // the Content-Length r is framed by, or -1
	chunked bool          // r is framed by chunks
	idle    time.Duration
	bw      *bufio.Writer
	eof     bool
	n       int64              // bytes read, for the access log
	err     error              // the first read error other than EOF
	count   prometheus.Counter // wslb_bytes_total{direction="tx"}, or nil
}

// mayBlock reports whether the next read of the body may wait for the
// backend.
func (b *backendBody) mayBlock() bool {
	switch {
	case b.r == http.NoBody, b.eof, b.length >= 0 && b.n >= b.length:
		return false // net/http answers EOF without reading
	case b.chunked:
		return true // chunk framing is read a line at a time: a part may be buffered
	default:
		return b.br.Buffered() == 0 // a Read takes from the buffer before the conn
	}
}

func (b *backendBody) Read(p []byte) (int, error) {
	if b.mayBlock() {
		if b.bw.Buffered() > 0 {
			if err := b.bw.Flush(); err != nil {
				return 0, err
			}
		}
		_ = b.conn.SetReadDeadline(time.Now().Add(b.idle))
	}
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
