package l7

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/wslb/wslb/header"
	"github.com/wslb/wslb/upstream"
)

// respond writes a response wslb makes itself. req may be nil (the head could
// not be read). It reports whether the conn may carry another request: not
// when asked to close, when the client asked to, or when a request body was
// left unread (it would be taken for the next head).
func (cc *clientConn) respond(req *http.Request, poolName string, status int, hdr http.Header, body string, closeConn bool) bool {
	if req == nil || req.Close || req.ContentLength != 0 {
		closeConn = true
	}
	resp := &http.Response{
		StatusCode:    status,
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        hdr,
		ContentLength: int64(len(body)),
		Body:          io.NopCloser(bytes.NewReader([]byte(body))),
		Request:       req,
		Close:         closeConn,
	}
	if resp.Header == nil {
		resp.Header = http.Header{}
	}
	if body != "" && resp.Header.Get("Content-Type") == "" {
		resp.Header.Set("Content-Type", "text/plain; charset=utf-8")
	}
	if req != nil && !req.ProtoAtLeast(1, 1) {
		resp.ProtoMinor = 0
		if !closeConn {
			resp.Header.Set("Connection", "keep-alive")
		}
	}
	header.SetResponseHeaders(resp.Header, cc.st.l.HTTP.ResponseHeaders)
	cc.count(req, poolName, status)
	cc.firstByte()
	if req == nil || req.Method != http.MethodHead {
		cc.e.Tx += int64(len(body)) // the access line's response body bytes
	}
	if cc.stream != nil {
		// A stream whose context ended (the client reset it, or a drain's
		// grace ran out and the conn is closing) has nobody to answer.
		if req == nil || req.Context().Err() == nil {
			cc.stream.answer(cc, status, resp.Header, body)
		}
		return false
	}
	err := resp.Write(cc.bw)
	if err == nil {
		err = cc.bw.Flush()
	}
	if err != nil {
		cc.clientWriteFailed(err)
		return false // nothing to linger for: the answer did not go out
	}
	if closeConn {
		if cc.linger != nil {
			cc.linger() // the event loop lingers without blocking
		} else {
			lingerClose(cc.conn)
		}
		return false
	}
	return true
}

// clientWriteFailed notes in the access line why a write to the client
// failed: timeouts.send passed without progress (reason timeout, counted),
// or the client went away (status 499, as nginx logs it).
func (cc *clientConn) clientWriteFailed(err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		cc.st.errs.Timeout.Inc()
		cc.e.Reason = "timeout"
		return
	}
	cc.e.Status, cc.e.Reason = statusClientClosed, "client"
}

// countFault counts a request's fault in wslb_errors_total by its reason
// word; a client that went away is no error of wslb's.
func (cc *clientConn) countFault(reason string) {
	switch reason {
	case "timeout":
		cc.st.errs.Timeout.Inc()
	case "bad_request":
		cc.st.errs.BadRequest.Inc()
	}
}

// respondError answers with status and a one-line plain-text reason. 4xx and
// 5xx answers close the conn unless the request was read whole and the
// status is harmless to continue after (404).
func (cc *clientConn) respondError(req *http.Request, status int, reason string) bool {
	closeConn := status != http.StatusNotFound
	return cc.respond(req, "", status, nil, errorBody(status, reason), closeConn)
}

// errorBody is the plain-text body of an answer wslb makes: the status and
// a one-line reason.
func errorBody(status int, reason string) string {
	return fmt.Sprintf("%d %s: %s\n", status, http.StatusText(status), reason)
}

// redirect answers with status code (301, 302, 307 or 308) to location.
// wslb's own redirects are 308s: unlike 301/302 it keeps the method and
// body, so a POST or an upgrade is repeated as it was; http.redirect_code
// chooses for the redirects to https.
func (cc *clientConn) redirect(req *http.Request, code int, location string) bool {
	h := http.Header{"Location": {location}}
	body := strconv.Itoa(code) + " " + http.StatusText(code) + ": " + location + "\n"
	return cc.respond(req, "", code, h, body, false)
}

// lingerClose half-closes, then reads what the client is still sending for a
// moment before closing: closing with unread bytes makes the kernel send a
// reset, which can destroy the answer before the client reads it.
func lingerClose(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, _ = io.CopyN(io.Discard, c, 256<<10)
	c.Close()
}

// firstByte records wslb_handshake_seconds once per conn: accept to the
// first response byte sent.
func (cc *clientConn) firstByte() {
	if cc.stream != nil {
		cc.stream.h.first.Do(cc.stream.h.cc.firstByte)
		return
	}
	if cc.answered {
		return
	}
	cc.answered = true
	cc.st.m.Handshake.WithLabelValues(cc.st.l.Name).Observe(time.Since(cc.accepted).Seconds())
}

// count adds one to wslb_http_requests_total, and notes the answer in the
// access line.
func (cc *clientConn) count(req *http.Request, pool string, status int) {
	rs := &cc.requests
	if rs.counter == nil || rs.pool != pool || rs.status != status {
		*rs = requestSeries{pool: pool, status: status,
			counter: cc.st.m.HTTPRequests.WithLabelValues(cc.st.l.Name, pool, strconv.Itoa(status))}
	}
	rs.counter.Inc()
	cc.e.Status = status
	if pool != "" {
		cc.e.Pool = pool
	}
}

// respondConnectError answers when no backend conn could be had
// (connectFailure).
func (cc *clientConn) respondConnectError(req *http.Request, poolName string, err error) bool {
	reason, status, text := connectFailure(err)
	cc.e.Reason = reason
	return cc.respondPool(req, poolName, status, text)
}

// connectFailure is the answer to a request that got no backend conn: 503
// when no backend was eligible or wslb is out of descriptors (nothing was
// dialed), 502 when the dials failed (DESIGN: "502 or 503"); and the access
// line's reason.
func connectFailure(err error) (reason string, status int, text string) {
	switch reason = upstream.Reason(err); reason {
	case upstream.ReasonNoBackend:
		return reason, http.StatusServiceUnavailable, "no healthy backend"
	case upstream.ReasonLimit:
		return reason, http.StatusServiceUnavailable, "too many connections"
	}
	return reason, http.StatusBadGateway, "backend unreachable"
}

// respondBackendError answers when the request failed before the response
// head arrived. The client's body first (werr, the writer's result): 413,
// 408 or 400 when it outgrew max_body_bytes, stalled or was malformed, and
// no answer (499) when the client went away; the backend is not blamed for
// any of these. Then the backend's own failures: 504 when it read none of
// the request for timeouts.send or was silent past timeouts.idle, else 502.
func (cc *clientConn) respondBackendError(ctx context.Context, req *http.Request, poolName string, err, werr error) bool {
	if status, reason, text, ok := bodyAnswer(werr); ok {
		cc.countFault(reason)
		if cc.e.Reason = endReason(ctx, reason); status != statusClientClosed {
			return cc.respondPool(req, poolName, status, text)
		}
		if cc.e.Reason == "client" { // not a drain, which closed the conn
			cc.count(req, poolName, status)
		}
		return false
	}
	switch {
	case errors.Is(werr, errBackendStalled):
		cc.st.errs.Timeout.Inc()
		cc.e.Reason = "timeout"
		return cc.respondPool(req, poolName, http.StatusGatewayTimeout, "backend did not read the request in time")
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
	return cc.respond(req, poolName, status, nil, errorBody(status, reason), true)
}
