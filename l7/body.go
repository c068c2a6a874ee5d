package l7

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/wslb/wslb/header"
)

// Why reading a request body from the client failed: clientBody's errors,
// each the client's doing, never the backend's (bodyAnswer).
var (
	errBodyTooLarge = errors.New("request body larger than max_body_bytes")
	errBodyTimeout  = errors.New("request body: nothing received for timeouts.client_body")
	errBodySlow     = errors.New("request body slower than http.min_body_rate")
	errBadBody      = errors.New("malformed request body")
	errClientGone   = errors.New("client closed its conn during the request body")
	// errBodyAborted is not a fault: wslb stopped reading (abort).
	errBodyAborted = errors.New("request body no longer read")
)

// statusClientClosed is what the access log says of a request whose client
// went away before its answer was complete, as nginx logs it.
const statusClientClosed = 499

// defaultRateGrace is how long a request body is waited for before
// http.min_body_rate applies.
const defaultRateGrace = 5 * time.Second

// clientBody is a request body as the backend's writer reads it from the
// client. It enforces max_body_bytes on a chunked body, timeouts.client_body
// between two reads that wait on the client, and http.min_body_rate; and it
// turns a failed read into one of the errors above, so that a stalled,
// malformed or abandoned body is answered as the client's fault (bodyAnswer)
// and never as the backend's. Its Close does not drain the client's body as
// net/http's does: a failed backend write must not wait on a slow client. It
// also records, for forward, when the body has been read to its end.
//
// With a nil conn it sets no deadlines: a unit or fuzz test drives it over
// bytes alone (http.ReadRequest's Body wrapped by newClientBody, read to its
// end, and bodyAnswer of the error).
type clientBody struct {
	r     io.Reader
	left  int64
	eof   atomic.Bool
	n     atomic.Int64       // bytes read, for the access log
	count prometheus.Counter // wslb_bytes_total{direction="rx"}; set before the body is read

	// What the deadlines need; conn is nil when there are none.
	conn readDeadliner
	br   *bufio.Reader // what r reads from: a read with bytes buffered waits on nobody; nil: any read may wait
	// stream: r is an HTTP/2 stream's body, which fails only when the
	// client resets the stream or drops the conn (or breaks the protocol).
	stream  bool
	chunked bool // r reads chunk framing a line at a time: any read may wait
	// trailer is the request's Trailer map, which net/http fills as the
	// body ends, and announced the names the client's Trailer header gave.
	trailer   http.Header
	announced []string
	gap       time.Duration // timeouts.client_body
	rate      int64         // http.min_body_rate in bytes/s; 0 is off
	grace     time.Duration // min_body_rate applies after this long of waiting
	// expect: the client may wait for a 100 Continue before sending, so
	// the rate applies only from the first byte.
	expect bool
	// waited is how long reads have waited on the client so far. The rate
	// is measured over it rather than since the head: time wslb spent
	// dialing, or writing to a backend that reads slowly, is not the client's.
	waited time.Duration
	slow   bool // the deadline armed last is the rate's, not the gap's
	// aborted is set by abort, from another goroutine.
	aborted atomic.Bool
}

// newClientBody wraps req.Body, the body of a request read from br on conn
// (nil: no deadlines).
func newClientBody(req *http.Request, maxBytes int64, conn readDeadliner, br *bufio.Reader) *clientBody {
	b := &clientBody{
		r: req.Body, left: maxBytes, conn: conn, br: br,
		chunked: len(req.TransferEncoding) > 0,
		expect:  req.Header.Get("Expect") != "",
		trailer: req.Trailer,
	}
	for name := range req.Trailer {
		b.announced = append(b.announced, name)
	}
	return b
}

// limit sets the timeouts of a body read from a conn: gap between reads,
// rate after grace.
func (b *clientBody) limit(gap time.Duration, rate int64, grace time.Duration) {
	b.gap, b.rate, b.grace = gap, rate, grace
}

func (b *clientBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, errBodyTooLarge
	}
	var armed time.Time
	if b.conn != nil && (b.chunked || b.br == nil || b.br.Buffered() == 0) {
		// Checked on both sides of arming: abort's deadline must not be
		// replaced by this one.
		if b.aborted.Load() {
			return 0, errBodyAborted
		}
		armed = b.arm()
		if b.aborted.Load() {
			return 0, errBodyAborted
		}
	}
	before := b.n.Load()
	n, err := b.r.Read(p)
	if !armed.IsZero() && err == nil && (before > 0 || !b.expect) {
		b.waited += time.Since(armed)
	}
	b.left -= int64(n)
	b.n.Add(int64(n))
	if b.count != nil && n > 0 {
		b.count.Add(float64(n))
	}
	switch {
	case b.left < 0:
		return n, errBodyTooLarge
	case err == io.EOF:
		if b.trailer != nil {
			// Read by net/http just now, and written by Request.Write
			// after this EOF.
			header.FilterTrailer(b.trailer, func(name string) bool { return slices.Contains(b.announced, name) })
		}
		b.eof.Store(true)
	case err != nil:
		err = b.fault(err)
	}
	return n, err
}

func (b *clientBody) Close() error { return nil }

// arm sets the read deadline of the next read and returns when it did: the
// gap allowed between reads, or sooner when the body's average rate would
// fall below min_body_rate by then.
func (b *clientBody) arm() time.Time {
	now := time.Now()
	d := now.Add(b.gap)
	b.slow = false
	if b.rate > 0 && (!b.expect || b.n.Load() > 0) {
		if rd := now.Add(b.rateLeft()); rd.Before(d) {
			d, b.slow = rd, true
		}
	}
	_ = b.conn.SetReadDeadline(d)
	return now
}

// rateLeft is how much longer the client may take to send its next bytes
// before the body's average rate, over the time waited for it, falls below
// min_body_rate; the first grace of waiting is free. It is positive: the
// last read ended before the deadline this computes.
func (b *clientBody) rateLeft() time.Duration {
	n := b.n.Load()
	secs := n / b.rate
	if secs > 1<<32 {
		return 1 << 62 // terabytes in: the gap alone applies
	}
	due := time.Duration(secs)*time.Second + time.Duration(n%b.rate)*time.Second/time.Duration(b.rate)
	return max(b.grace, due) - b.waited
}

// fault names why a read of the body failed with err.
func (b *clientBody) fault(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		switch {
		case b.aborted.Load():
			return errBodyAborted
		case b.slow:
			return errBodySlow
		}
		return errBodyTimeout
	}
	if b.stream || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("%w: %w", errClientGone, err)
	}
	if _, ok := errors.AsType[*net.OpError](err); ok {
		return fmt.Errorf("%w: %w", errClientGone, err) // a reset, a broken TLS stream
	}
	// What is left is net/http's word on the bytes themselves: a chunk size
	// that is not hex or too long, a line without its CRLF, a bad trailer.
	return fmt.Errorf("%w: %w", errBadBody, err)
}

// abort makes the body's reader stop: its read wakes and fails, and no
// later read waits. The caller no longer needs the body (its request
// failed), and closes the client conn after.
func (b *clientBody) abort() {
	b.aborted.Store(true)
	if b.conn != nil {
		_ = b.conn.SetReadDeadline(time.Unix(1, 0))
	}
}

// bodyAnswer is how a request is answered whose body failed with err, when
// err is the client's doing (ok): the status while no answer has begun
// (statusClientClosed: nobody is left to answer, the access log says 499),
// the reason word of the access line and of wslb_errors_total ("client" is
// none of the latter), and the answer's one-line text.
func bodyAnswer(err error) (status int, reason, text string, ok bool) {
	switch {
	case errors.Is(err, errBodyTooLarge):
		return http.StatusRequestEntityTooLarge, "bad_request", "request body too large", true
	case errors.Is(err, errBodyTimeout):
		return http.StatusRequestTimeout, "timeout", "request body not received in time", true
	case errors.Is(err, errBodySlow):
		return http.StatusRequestTimeout, "timeout", "request body too slow", true
	case errors.Is(err, errBadBody):
		return http.StatusBadRequest, "bad_request", "malformed request body", true
	case errors.Is(err, errClientGone):
		return statusClientClosed, "client", "", true
	}
	return 0, "", "", false
}

// flushingBody flushes the request writer before every read of the client's
// body, so each piece goes to the backend as soon as it arrives instead of
// waiting for a full buffer. This is safe although Request.Write is given the
// *bufio.Writer itself: it flushes the head before the body (FlushHeaders),
// so a Content-Length body starts with an empty buffer, which bufio hands to
// deadlineWriter.ReadFrom (never to its own copy loop, which would read into
// the buffer this flushes); a chunked body goes through net/http's chunked
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
