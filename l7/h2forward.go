package l7

import (
	"fmt"
	"math"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/wslb/wslb/access"
)

// h2Stream is what a request that came over HTTP/2 answers through: its
// stream's ResponseWriter, in place of the HTTP/1 conn's bytes.
type h2Stream struct {
	rw  http.ResponseWriter
	out h2Writer // what the request's bw writes to
	h   *h2Handler
	// broken: the answer broke off after it had begun (the backend failed
	// mid-body); the stream is reset rather than ended, so that the
	// client does not take the part for the whole.
	broken bool
}

// h2Request serves a plain request that came over HTTP/2 as serveRequest
// serves one read from an HTTP/1 conn: the same checks, routes, headers,
// answers, access line and metrics. Each stream has a clientConn of its
// own, made from the conn's, since streams run at once; it has no net.Conn
// (nothing of a stream may close or linger on the shared conn) and no
// reader: the request body is the stream's.
func (w *worker) h2Request(h *h2Handler, rw http.ResponseWriter, r *http.Request) {
	cc := h.stream(rw)
	switch {
	case r.ContentLength == 0:
		// Go's server gives a stream that ended with its headers an empty
		// body of its own; forward sends a request with NoBody in one write.
		r.Body = http.NoBody
	case r.ContentLength < 0:
		// A body of no declared length goes to the backend chunked, as
		// HAProxy and nginx send one. Said here, before net/http would
		// guess: its guess reads the body on a goroutine of its own while
		// the head is being written, and reading flushes that same writer.
		r.TransferEncoding = []string{"chunked"}
	}
	defer cc.endStream()
	cc.e.Method, cc.e.Path, cc.e.Proto = r.Method, r.URL.Path, r.Proto
	if r.Context().Err() != nil {
		// Reset before its handler began (a rapid reset): no backend
		// is troubled for it.
		cc.e.Status, cc.e.Reason = statusClientClosed, "client"
		w.logRequest(cc, cc.begin)
		return
	}
	w.serveRequest(r.Context(), cc, r)
	if reason := endReason(r.Context(), ""); reason != "" {
		// A drain's grace ran out: whatever the answer was, it was cut.
		cc.e.Status, cc.e.Reason = statusClientClosed, reason
	}
	w.logRequest(cc, cc.begin)
	if cc.stream.broken {
		panic(http.ErrAbortHandler) // Go's server resets the stream, quietly
	}
}

// stream makes the clientConn of one stream of h's conn: the conn's
// addresses and settings, with an access line, series and writer of its
// own, since streams are served at once, each on a goroutine of its own. It
// has no net.Conn: nothing of a stream may close or linger on the shared
// conn.
func (h *h2Handler) stream(rw http.ResponseWriter) *clientConn {
	p := h.cc
	s := &h2Stream{rw: rw, h: h, out: h2Writer{rw: rw, rc: http.NewResponseController(rw), send: p.st.l.Timeouts.Send}}
	return &clientConn{
		st: p.st, peer: p.peer, local: p.local, dest: p.dest, tls: p.tls,
		accepted: p.accepted, rateGrace: p.rateGrace, begin: time.Now(),
		e:      access.Entry{Kind: access.KindRequest, Listener: p.st.l.Name, Client: p.peer},
		stream: s, bw: getWriter(&s.out),
	}
}

// endStream lets go of what a stream's clientConn holds.
func (cc *clientConn) endStream() {
	cc.unwatchBackends()
	cc.releaseBuffers(nil)
}

// major is the HTTP version the client speaks on cc's conn.
func (cc *clientConn) major() int {
	if cc.stream != nil {
		return 2
	}
	return 1
}

// answer sends a response wslb makes itself on the stream.
func (s *h2Stream) answer(cc *clientConn, status int, hdr http.Header, body string) {
	copyH2Header(s.rw.Header(), hdr)
	s.rw.Header()["Content-Length"] = []string{strconv.Itoa(len(body))}
	s.rw.WriteHeader(status)
	if _, err := s.out.Write([]byte(body)); err != nil {
		cc.clientWriteFailed(err)
	}
}

// interim relays a backend's 1xx answer but 100 Continue, which Go's
// server sends itself when the handler first reads a body that awaits it.
func (s *h2Stream) interim(resp *http.Response) {
	if resp.StatusCode == http.StatusContinue {
		return
	}
	hdr := s.rw.Header()
	copyH2Header(hdr, resp.Header)
	s.rw.WriteHeader(resp.StatusCode)
	clear(hdr) // sent with the interim answer; the final one has its own
}

// relayH2 is relayResponse for a stream: the head (hop-by-hop fields
// already gone) becomes the stream's, the body streams as it comes, each
// piece flushed before a read of the backend may wait, and trailers follow.
func (cc *clientConn) relayH2(req *http.Request, resp *http.Response, poolName string, body *backendBody) (keep, reusable bool, err error) {
	s := cc.stream
	hdr := s.rw.Header()
	copyH2Header(hdr, resp.Header)
	allowed := bodyAllowed(req, resp)
	if resp.ContentLength >= 0 && (allowed || req.Method == http.MethodHead) {
		hdr["Content-Length"] = []string{strconv.FormatInt(resp.ContentLength, 10)}
	}
	cc.count(req, poolName, resp.StatusCode)
	cc.firstByte()
	s.rw.WriteHeader(resp.StatusCode)
	if allowed {
		// The body flushes what it relayed before each read that may
		// wait, the head included, as an HTTP/1 relay does: an event
		// stream's client sees each event as it comes.
		_, err = copyBody(cc.bw, body, math.MaxInt64)
	}
	if err == nil {
		// The rest goes into Go's buffer, and out when the handler
		// returns, in the frame that ends the stream.
		err = cc.bw.Flush()
	}
	cc.e.Tx += body.n
	if err != nil {
		s.broken = cc.relayFailed(body, err)
		return false, false, err
	}
	for name, vv := range resp.Trailer {
		hdr[http.TrailerPrefix+name] = vv
	}
	done := body.eof || !allowed
	return true, done && !resp.Close, nil
}

// copyH2Header copies src into dst but for the fields HTTP/2 forbids
// (RFC 9113 §8.2.2): connection-specific ones, whichever way they came.
func copyH2Header(dst, src http.Header) {
	for name, vv := range src {
		switch name {
		case "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade", "Te":
			continue
		}
		dst[name] = vv
	}
}

// h2Writer writes a stream's answer into Go's server, which frames it as
// its buffer fills, and sends the rest with the frame that ends the stream;
// before a read of the backend that may wait, the relay flushes it
// (backendBody.flushed). timeouts.send bounds each write, as deadlineWriter
// bounds an HTTP/1 conn's: a client that stops reading one stream holds its
// flow-control window shut.
type h2Writer struct {
	rw   http.ResponseWriter
	rc   *http.ResponseController
	send time.Duration
	// armed: a write set the stream's write deadline. Go's server resets
	// the stream when that deadline passes, written or not, so flush
	// disarms it before the relay waits for the backend: timeouts.send
	// bounds a write, not the quiet between events.
	armed bool
}

func (w *h2Writer) Write(p []byte) (int, error) {
	var deadline time.Time
	if w.send > 0 {
		deadline = time.Now().Add(w.send)
		_ = w.rc.SetWriteDeadline(deadline)
		w.armed = true
	}
	n, err := w.rw.Write(p)
	if err != nil && !deadline.IsZero() && !time.Now().Before(deadline) {
		err = fmt.Errorf("%w: %w", os.ErrDeadlineExceeded, err)
	}
	return n, err
}

// flush sends what Go's server holds of the answer, then lifts the write
// deadline the writes set.
func (w *h2Writer) flush() error {
	err := w.rc.Flush()
	if w.armed {
		_ = w.rc.SetWriteDeadline(time.Time{})
		w.armed = false
	}
	return err
}

// readDeadliner is what a request body's read deadlines are set on: the
// client's conn, or for HTTP/2 its stream (whose ResponseWriter has one).
type readDeadliner interface {
	SetReadDeadline(t time.Time) error
}

// bodySource is where a request body of cc's is read from: the conn and
// its reader, or a stream, which has no reader of wslb's.
func (cc *clientConn) bodySource() (readDeadliner, bool) {
	if cc.stream != nil {
		if d, ok := cc.stream.rw.(readDeadliner); ok {
			return d, true
		}
		return nil, true
	}
	return cc.conn, false
}
