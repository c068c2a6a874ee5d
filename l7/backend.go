package l7

import (
	"bufio"
	"context"
	"net"
	"net/netip"

	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/proxyheader"
	"github.com/wslb/wslb/upstream"
)

// backendConn is a conn to a backend with the reader its responses are
// parsed from (bytes may be buffered in it), reserved on b.
type backendConn struct {
	b      *pool.Backend
	conn   net.Conn
	br     *bufio.Reader
	reused bool // it came from the idle cache
	// whole: the answer is all in br already (the event loop read it), so
	// reading its body never waits on conn (loopanswer_linux.go).
	whole bool
}

// connect reserves a backend of p and returns a conn to it, through the
// listener's upstream.Dialer: with cached, an idle one from this worker's
// cache when there is one, else a new dial (one other backend is tried if it
// fails). The caller releases bc.b, once; the access line names it.
func (w *worker) connect(ctx context.Context, cc *clientConn, p *pool.Pool, clientIP netip.Addr, cached bool) (*backendConn, error) {
	r := cc.upstreamRequest(p)
	r.ClientIP = clientIP
	if cached {
		r.Idle = w.idle
	}
	uc, err := cc.st.dial.Connect(ctx, r)
	if err != nil {
		return nil, err
	}
	cc.e.Backend = uc.Backend.String()
	return newBackendConn(uc), nil
}

// redial opens a new conn to b, which the caller has reserved and keeps
// reserved, for a request whose kept-alive conn died before answering.
func (w *worker) redial(ctx context.Context, cc *clientConn, p *pool.Pool, b *pool.Backend) (*backendConn, error) {
	uc, err := cc.st.dial.Dial(ctx, cc.upstreamRequest(p), b)
	if err != nil {
		return nil, err
	}
	return newBackendConn(uc), nil
}

// upstreamRequest is what a connect to p for cc's client is, but for the
// address to hash.
func (cc *clientConn) upstreamRequest(p *pool.Pool) upstream.Request {
	return upstream.Request{Pool: p, Addrs: proxyheader.Addrs{Source: cc.peer, Dest: cc.dest}}
}

func newBackendConn(uc upstream.Conn) *backendConn {
	br := uc.Reader
	if br == nil {
		br = getReader(uc.Net, minBuffer)
	}
	return &backendConn{b: uc.Backend, conn: uc.Net, br: br, reused: uc.Reused}
}

// putBack offers bc to the worker's idle cache when reusable, else closes
// it. A conn that carried a PROXY header belongs to its client and is never
// cached. An idle conn holds no reader: an empty one goes back to the pool,
// and connect takes another.
func (w *worker) putBack(cc *clientConn, bc *backendConn, reusable bool) {
	if !reusable || cc.st.l.ProxyProtocol != "" {
		bc.close()
		return
	}
	br := bc.br
	if br != nil && br.Buffered() == 0 {
		putReader(br)
		br = nil
	}
	bc.br = nil
	w.cache.Put(bc.b, bc.conn, br) // closes the conn when br holds bytes
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
		*s = backendSeries{p: p, b: b, conn: m.Conn(cc.st.l.Name, pn, bn)}
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
