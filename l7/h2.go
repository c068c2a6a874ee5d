package l7

import (
	"cmp"
	"context"
	"crypto/tls"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// The limits of one HTTP/2 client conn (README "HTTP/2 on TLS listeners").
// They bound what one conn can make wslb hold: streams, each with a
// handler and at most one backend conn, and the request bytes buffered for
// them.
const (
	// h2MaxStreams is SETTINGS_MAX_CONCURRENT_STREAMS, as HAProxy's
	// tune.h2.max-concurrent-streams (nginx's http2_max_concurrent_streams
	// is 128). Go's server refuses a stream past it, and its rapid-reset
	// mitigation queues at most 4x as many handlers before it closes the
	// conn.
	h2MaxStreams = 100
	// h2StreamWindow and h2ConnWindow are the flow-control windows wslb
	// grants for request bodies (MaxUploadBufferPerStream and
	// PerConnection): what a client may send before the backend has read
	// it, so what one stream and one conn may buffer at most.
	h2StreamWindow = 256 << 10
	h2ConnWindow   = 1 << 20
	// h2MaxFrame is SETTINGS_MAX_FRAME_SIZE, the largest frame read: the
	// protocol's minimum and Go's default.
	h2MaxFrame = 16 << 10
	// h2DrainGrace is how long a drained h2 conn, told GOAWAY, gives its
	// open streams to finish before it is closed: as long as a drained
	// WebSocket's close handshake may take.
	h2DrainGrace = 5 * time.Second
)

// h2 reports whether the client chose HTTP/2 in the TLS handshake (ALPN).
func (cc *clientConn) h2() bool {
	tc, ok := cc.conn.(*tls.Conn)
	return ok && tc.ConnectionState().NegotiatedProtocol == http2.NextProtoTLS
}

// serveH2 serves an HTTP/2 conn until it ends. Go's HTTP/2 server reads its
// frames and runs each stream's handler on a goroutine of its own: a plain
// request (h2Request) or an extended CONNECT (h2Connect, RFC 8441). It
// returns once every handler has.
//
// timeouts.handshake, set on the conn at accept, bounds the client's
// preface, then is lifted (prefaceConn); timeouts.keepalive closes a conn
// without streams; timeouts.send bounds every write (WriteByteTimeout).
// http.max_header_bytes bounds a stream's header list, which Go's server
// answers 431 past it. A drain sends GOAWAY: the conn's open streams have
// h2DrainGrace to finish, new ones are refused, then it is closed.
func (w *worker) serveH2(ctx context.Context, cc *clientConn) {
	st := cc.st
	t := st.l.Timeouts
	if !cc.stopDrain() {
		return // the drain came during the handshake and closed the conn
	}
	cc.releaseBuffers(nil) // Go's server has buffers of its own
	conn := cc.conn.(*tls.Conn)
	_ = conn.SetWriteDeadline(time.Time{})
	_ = conn.SetReadDeadline(cc.accepted.Add(t.Handshake))

	hs := &http.Server{
		MaxHeaderBytes: int(st.l.HTTP.MaxHeaderBytes),
		// What Go's server logs (a client's protocol error, a handler's
		// panic) is the client's doing, noted at debug.
		ErrorLog: slog.NewLogLogger(w.px.Log.Handler(), slog.LevelDebug),
	}
	h2s := &http2.Server{
		MaxConcurrentStreams:         h2MaxStreams,
		MaxUploadBufferPerStream:     h2StreamWindow,
		MaxUploadBufferPerConnection: h2ConnWindow,
		MaxReadFrameSize:             h2MaxFrame,
		IdleTimeout:                  t.Keepalive,
		WriteByteTimeout:             t.Send,
	}
	// ConfigureServer is what lets hs.Shutdown send this conn GOAWAY.
	if err := http2.ConfigureServer(hs, h2s); err != nil {
		w.px.Log.Error("HTTP/2 server", "listener", st.l.Name, "err", err)
		return
	}
	// Streams run under hard, which ends h2DrainGrace after ctx: their
	// backend conns are closed then (watchBackend), with ctx's cause.
	hard, stop := context.WithCancelCause(context.WithoutCancel(ctx))
	done := make(chan struct{})
	drained := make(chan struct{})
	stopDrain := context.AfterFunc(ctx, func() {
		defer close(drained)
		_ = hs.Shutdown(context.Background()) // GOAWAY; returns at once
		t := time.NewTimer(cmp.Or(w.px.h2Grace, h2DrainGrace))
		defer t.Stop()
		select {
		case <-t.C:
		case <-done:
		}
		stop(context.Cause(ctx))
		conn.Close()
	})
	h := &h2Handler{w: w, cc: cc, drain: ctx}
	h2s.ServeConn(&prefaceConn{Conn: conn, left: len(http2.ClientPreface)}, &http2.ServeConnOpts{
		Context:    hard,
		BaseConfig: hs,
		Handler:    h,
	})
	conn.Close() // Go's server closes it too; a handler's writes fail now
	h.streams.wait()
	close(done)
	if !stopDrain() {
		<-drained
	}
	stop(nil)
}

// prefaceConn is the TLS conn of an h2 client, which lifts the read
// deadline of timeouts.handshake once the client preface has been read:
// from there Go's server and timeouts.keepalive bound the conn. Go's server
// reads it from one goroutine at a time.
type prefaceConn struct {
	*tls.Conn
	left int // preface bytes yet to be read
}

func (c *prefaceConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.left > 0 {
		if c.left -= n; c.left <= 0 {
			_ = c.Conn.SetReadDeadline(time.Time{})
		}
	}
	return n, err
}

// h2Handler serves the streams of one HTTP/2 client conn.
type h2Handler struct {
	w  *worker
	cc *clientConn
	// drain is the conn's context, which a drain ends with its cause
	// (frontend.ErrDrain) as soon as it reaches the conn: a stream's
	// tunnel sends its Close 1001 then, within h2DrainGrace.
	drain   context.Context
	streams streamGroup // the handlers running, which serveH2 waits for
	first   sync.Once   // wslb_handshake_seconds, at the conn's first answer
}

func (h *h2Handler) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if !h.streams.enter() {
		return // the conn is closed: nobody reads the answer
	}
	defer h.streams.leave()
	if r.Method == http.MethodConnect {
		h.w.h2Connect(h, rw, r)
		return
	}
	h.w.h2Request(h, rw, r)
}

// streamGroup counts the handlers of a conn's streams. Go's server starts
// them on goroutines of its own, which may begin after it has returned:
// once wait has begun, enter turns them away.
type streamGroup struct {
	mu     sync.Mutex
	wg     sync.WaitGroup
	closed bool
}

func (g *streamGroup) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	return true
}

func (g *streamGroup) leave() { g.wg.Done() }

// wait turns new handlers away and waits for the running ones.
func (g *streamGroup) wait() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.wg.Wait()
}
