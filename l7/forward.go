package l7

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/route"
)

// errBodyTooLarge ends a chunked request body that grows past max_body_bytes.
var errBodyTooLarge = errors.New("request body larger than max_body_bytes")

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
	// The one release of this request's reservation; a replay redials the
	// same backend under it.
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
		if bc, err = w.replay(ctx, cc, p, bc, sent); err != nil {
			st.errs.Dial.Inc()
			return cc.respondPool(req, res.Pool, http.StatusBadGateway, "backend unreachable")
		}
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
	werr := cc.requestSent(out, bc, sent)
	if lb, ok := out.Body.(*limitedBody); ok {
		cc.e.Rx = lb.n.Load() // the writer has reported: it reads no more
	}
	live := cc.unwatchBackend(bc) // false: drain closed the conn
	w.putBack(cc, bc, live && rerr == nil && werr == nil && reusable)
	return keep && werr == nil
}

// replay closes bc, a kept-alive conn that died before answering, and
// returns a new conn to the same backend, which stays reserved.
func (w *worker) replay(ctx context.Context, cc *clientConn, p *pool.Pool, bc *backendConn, sent sending) (*backendConn, error) {
	cc.unwatchBackend(bc)
	bc.close()
	sent.wait()
	nbc, err := w.redial(ctx, cc, p, bc.b)
	if err != nil {
		return nil, err
	}
	cc.watchBackend(ctx, nbc)
	return nbc, nil
}

// requestSent waits for the write of the request whose response has been
// relayed, and returns how it went. A backend may answer before it has read
// the whole request body (an early 413, a stream); then the rest of the body
// is still on the client conn, and the backend conn is mid-request: the
// write is cut, and neither conn can be reused.
func (cc *clientConn) requestSent(out *http.Request, bc *backendConn, sent sending) error {
	if sent.written == nil {
		return sent.err // written before the response was read
	}
	select {
	case err := <-sent.written:
		return err
	case <-bodyRead(out):
		// The whole request was read from the client: at most its last
		// bytes are still on their way to the backend, and the writer may
		// simply not have reported yet. Wait for it, bounded.
		_ = bc.conn.SetWriteDeadline(time.Now().Add(writeGrace))
		return <-sent.written
	default:
		bc.conn.Close()
		cc.abortWriter(sent)
		return errors.New("request body not fully sent")
	}
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
// the client as they come, as many as relayInterim allows.
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
	for n := 0; ; n++ {
		if n > 0 {
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
		// must accept.
		if err := cc.relayInterim(req, resp, n+1); err != nil {
			return nil, s, err
		}
	}
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
