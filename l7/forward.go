package l7

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/wslb/wslb/fdbudget"
	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/route"
	"github.com/wslb/wslb/upstream"
)

// errBackendStalled ends a request whose backend read none of it for
// timeouts.send.
var errBackendStalled = errors.New("backend read nothing of the request for timeouts.send")

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
	return w.exchange(ctx, cc, req, out, res, bc, false)
}

// exchange sends out, the request req became, on bc and relays the answer,
// then offers bc to the idle cache. headSent: the event loop already wrote
// out, which has no body, and handed the answer over (resumeResponse). It
// reports whether the client conn may carry another request.
func (w *worker) exchange(ctx context.Context, cc *clientConn, req, out *http.Request, res route.Result, bc *backendConn, headSent bool) bool {
	st := cc.st
	mc := cc.series.conn
	// Body bytes count as they stream, as a tunnel's bytes do.
	body, _ := out.Body.(*clientBody)
	if body != nil {
		body.count = mc.Rx
		defer func() { cc.e.Rx = body.n.Load() }() // the writer has reported: it reads no more
	}
	cc.txBytes = mc.Tx

	cc.watchBackend(ctx, bc)
	resp, sent, err := w.roundTrip(cc, req, out, bc, headSent)
	if err != nil && bc.reused && replayable(out) && nothingReceived(err) {
		// The idle conn died between the liveness probe and the write; the
		// request never reached a backend, so it is safe to send again.
		if bc, err = w.replay(ctx, cc, st.pools[res.Pool], bc, sent); err != nil {
			if fdbudget.Exhausted(err) {
				// wslb's own shortage, not the backend's failure.
				st.errs.Limit.Inc()
				cc.e.Reason = upstream.ReasonLimit
				return cc.respondPool(req, res.Pool, http.StatusServiceUnavailable, "too many connections")
			}
			st.errs.Dial.Inc()
			return cc.respondPool(req, res.Pool, http.StatusBadGateway, "backend unreachable")
		}
		resp, sent, err = w.roundTrip(cc, req, out, bc, false)
	}
	if err != nil {
		cc.unwatchBackend(bc)
		bc.close()
		werr := cc.abortWriter(sent)
		return cc.respondBackendError(ctx, req, res.Pool, err, werr)
	}
	keep, reusable, rerr := cc.relayResponse(req, resp, res.Pool, bc, st.l.Timeouts.Idle)
	werr := cc.requestSent(out, bc, sent)
	if rerr != nil || werr != nil {
		cc.requestFailed(ctx, werr)
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
// write is cut, and neither conn can be reused. The error then wraps the
// writer's, which says whether the client's body failed first.
func (cc *clientConn) requestSent(out *http.Request, bc *backendConn, sent sending) error {
	if sent.written == nil {
		return sent.err // written before the response was read
	}
	select {
	case err := <-sent.written:
		return err
	default:
	}
	if bodyRead(out) {
		// The whole request was read from the client: at most its last
		// bytes are still on their way to the backend, and the writer may
		// simply not have reported yet. Wait for it, bounded.
		t := time.NewTimer(writeGrace)
		defer t.Stop()
		select {
		case err := <-sent.written:
			return err
		case <-t.C:
		}
	}
	bc.conn.Close()
	if err := cc.abortWriter(sent); err != nil {
		return fmt.Errorf("request body not fully sent: %w", err)
	}
	return errors.New("request body not fully sent")
}

// requestFailed notes in the access line, and counts, what ended a request
// whose answer had begun: the client's body (timeouts, a malformed body, a
// client gone: werr) or a backend that read none of it for timeouts.send,
// both of which the relay sees only as a closed backend conn; else what
// relayResponse found; a drain or removal over all of them.
func (cc *clientConn) requestFailed(ctx context.Context, werr error) {
	if _, reason, _, ok := bodyAnswer(werr); ok {
		cc.countFault(reason)
		cc.e.Reason = reason
		if reason == "client" {
			cc.e.Status = statusClientClosed
		}
	} else if errors.Is(werr, errBackendStalled) {
		cc.st.errs.Timeout.Inc()
		cc.e.Reason = "timeout"
	}
	cc.e.Reason = endReason(ctx, cc.e.Reason)
}

// sending is the write of a request to a backend: done before its response
// is read when it has no body (err), else by a writeRequest goroutine that
// delivers its result on written exactly once, reading body from the client.
// Once the result has been received, written is nil and err holds it.
type sending struct {
	written chan error
	err     error
	body    *clientBody
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
func (w *worker) roundTrip(cc *clientConn, req, out *http.Request, bc *backendConn, headSent bool) (*http.Response, sending, error) {
	t := cc.st.l.Timeouts
	idle := t.Idle
	var s sending
	// One deadline call for the response head and, a stale write deadline
	// of the conn's last request replaced, the head's write: a head shorter
	// than a buffer goes out at once (deadlineWriter), a longer one gets
	// timeouts.send per write.
	_ = bc.conn.SetDeadline(time.Now().Add(idle))
	cc.bsw = deadlineWriter{conn: bc.conn, timeout: t.Send, idle: true}
	switch {
	case headSent:
	case out.Body == nil:
		if s.err = sendHead(&cc.bsw, out); s.err != nil {
			return nil, s, s.err
		}
	default:
		s.written = make(chan error, 1)
		s.body, _ = out.Body.(*clientBody)
		go writeRequest(&cc.bsw, out, s.written)
	}
	for n := 0; ; n++ {
		if s.written != nil {
			if err := awaitResponse(bc, &s, idle); err != nil {
				return nil, s, err
			}
		} else if n > 0 {
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

// awaitResponse waits for the first byte of the answer to a request whose
// body s is still sending. timeouts.idle counts from when the request has
// been sent: while the client's body streams, a backend that waits for it
// is not silent, and the client's own limits (timeouts.client_body,
// http.min_body_rate) bound that wait, as timeouts.send bounds a backend
// that stops reading. A writer that reports ends the wait on the body: idle
// then counts from there.
func awaitResponse(bc *backendConn, s *sending, idle time.Duration) error {
	for {
		_ = bc.conn.SetReadDeadline(time.Now().Add(idle))
		_, err := bc.br.Peek(1)
		if s.written == nil || err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
		select {
		case s.err = <-s.written:
			s.written = nil
		default:
		}
	}
}

// abortWriter stops a writeRequest goroutine whose backend conn the caller
// has closed and returns its result. The goroutine may be blocked reading the
// client's body; the body's abort wakes it. The client conn is closed after
// this anyway: its body is half read.
func (cc *clientConn) abortWriter(s sending) error {
	if s.written == nil {
		return s.err // no goroutine, or its result is in
	}
	if s.body != nil {
		s.body.abort()
	}
	return <-s.written
}

// writeGrace bounds the wait for the last bytes of a request whose answer
// is already complete.
const writeGrace = 5 * time.Second

// bodyRead reports whether out's body has been read from the client to its
// end (true when it has none).
func bodyRead(out *http.Request) bool {
	b, ok := out.Body.(*clientBody)
	return !ok || b.eof.Load()
}

// writeRequest is a named goroutine (for readable stack dumps) that writes
// out to sw's conn and reports how it went. It does not modify out, which
// its caller reads meanwhile.
//
// When the request fails on the client's side (its body outgrew
// max_body_bytes, stalled, was malformed or broke off, or net/http refused to
// write the head), or the backend read nothing of it for timeouts.send, it
// closes the conn: the backend would wait for the rest of a request that
// never comes, and the caller would wait for the backend's answer until the
// idle timeout. The body's own error is reported, since net/http wraps it in
// a type that errors.Is cannot see through; so is a stalled write.
func writeRequest(sw *deadlineWriter, out *http.Request, written chan<- error) {
	c := sw.conn
	bw := getWriter(sw)
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
		case errors.Is(sw.err, os.ErrDeadlineExceeded):
			err = fmt.Errorf("%w: %w", errBackendStalled, sw.err)
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
