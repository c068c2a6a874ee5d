package pool

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"sync"
	"time"
)

// IdleCache keeps one worker's idle keep-alive conns to backends, at most
// IdleMax per backend (nginx's "upstream { keepalive N; }", which is per worker
// too). Many client-conn goroutines of the worker share it, so it has its own
// mutex; conns are closed and probed outside it. The zero value is ready to use.
type IdleCache struct {
	mu     sync.Mutex
	idle   map[*Backend]*idleList
	closed bool
}

// idleList holds one backend's idle conns, oldest first: Get takes from the end
// and eviction from the front, as net/http's Transport does.
type idleList struct {
	conns []idleConn
	stop  func() bool // unregisters the purge tied to the backend's removal
}

// idleConn is a backend conn with the reader that wraps it, since a response
// parser may have buffered from it, and the TLS client it was cached under
// (nil for plain TCP).
type idleConn struct {
	conn net.Conn
	br   *bufio.Reader
	tls  *tls.Config
}

// NewIdleCache returns an empty cache for one worker.
func NewIdleCache() *IdleCache { return &IdleCache{} }

// Put offers conn, and br (which may be nil) reading from it, for reuse with b.
// The cache takes ownership: it keeps the conn or closes it. It closes it when
// b.IdleMax() is 0, when br still holds bytes (a response the caller did not
// read in full would corrupt the next one), when b has been removed, when it is
// plain TCP and b now speaks TLS or the other way round, or when the cache is
// closed. At the cap the oldest conn is evicted, because the newest is the
// least likely to have been closed by the backend's own idle timeout.
// Put clears the conn's deadlines; set new ones after Get.
//
// A TLS conn is kept under b's current TLS client, and Get hands it out only
// while b has that client: a reload that changed the pool's tls block (a new
// CA, a new client certificate) retires the conns verified under the old one.
// A conn dialed before such a reload and put back after it (one request's
// span) is kept under the new one.
func (c *IdleCache) Put(b *Backend, conn net.Conn, br *bufio.Reader) {
	limit := b.IdleMax()
	conf := b.TLS()
	_, isTLS := conn.(*tls.Conn)
	if limit <= 0 || (br != nil && br.Buffered() > 0) || b.removed() || isTLS != (conf != nil) {
		conn.Close()
		return
	}
	// A deadline left from the last request means nothing for an idle conn and
	// would make Get's liveness probe fail.
	conn.SetDeadline(time.Time{})

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		conn.Close()
		return
	}
	if c.idle == nil {
		c.idle = make(map[*Backend]*idleList)
	}
	l := c.idle[b]
	if l == nil {
		l = &idleList{}
		c.idle[b] = l
		// Nobody picks a removed backend, so nobody would Get its conns again;
		// purge them when it goes rather than hold the fds until the worker ends.
		l.stop = context.AfterFunc(b.Context(), func() { c.purge(b) })
	}
	var evicted []idleConn
	if over := len(l.conns) + 1 - limit; over > 0 {
		// over can exceed 1 when a reload lowered idle_per_worker.
		evicted = append(evicted, l.conns[:over]...)
		n := copy(l.conns, l.conns[over:])
		clear(l.conns[n:])
		l.conns = l.conns[:n]
	}
	l.conns = append(l.conns, idleConn{conn: conn, br: br, tls: conf})
	b.addIdle(1 - int64(len(evicted)))
	c.mu.Unlock()

	for _, e := range evicted {
		e.conn.Close()
	}
}

// Get returns the newest idle conn to b and its reader, passing ownership to the
// caller, or false when there is none. It never hands out a conn the backend has
// closed or sent unsolicited bytes on (a TLS close_notify included), nor one
// cached under a TLS client b no longer has: those are closed and the next is
// tried.
func (c *IdleCache) Get(b *Backend) (net.Conn, *bufio.Reader, bool) {
	for {
		c.mu.Lock()
		l := c.idle[b]
		if l == nil || len(l.conns) == 0 {
			c.mu.Unlock()
			return nil, nil, false
		}
		last := len(l.conns) - 1
		e := l.conns[last]
		l.conns[last] = idleConn{}
		l.conns = l.conns[:last]
		b.addIdle(-1)
		c.mu.Unlock()

		if e.tls == b.TLS() && alive(e) {
			return e.conn, e.br, true
		}
		e.conn.Close()
	}
}

// Len is the number of idle conns to b in this cache.
func (c *IdleCache) Len(b *Backend) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if l := c.idle[b]; l != nil {
		return len(l.conns)
	}
	return 0
}

// Close closes every cached conn; later Puts close their conn at once. The
// worker calls it when it stops.
func (c *IdleCache) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	all := c.idle
	c.idle = nil
	for b, l := range all {
		b.addIdle(-int64(len(l.conns)))
	}
	c.mu.Unlock()

	for _, l := range all {
		l.stop()
		for _, e := range l.conns {
			e.conn.Close()
		}
	}
}

// purge closes and forgets every idle conn to b; it runs when b is removed.
func (c *IdleCache) purge(b *Backend) {
	c.mu.Lock()
	l := c.idle[b]
	delete(c.idle, b)
	if l != nil {
		b.addIdle(-int64(len(l.conns)))
	}
	c.mu.Unlock()

	if l != nil {
		for _, e := range l.conns {
			e.conn.Close()
		}
	}
}

// quiet reports whether nothing the backend sent waits above the socket: in
// br, or, on a TLS conn, in records crypto/tls read from the socket ahead of
// what it returned (a close_notify that came right behind the last
// response). A TLS Read under a deadline already past returns such a record
// without touching the socket, else times out at once; crypto/tls keeps only
// permanent read errors, so the timeout leaves the conn usable.
func quiet(e idleConn) bool {
	if e.br != nil && e.br.Buffered() > 0 {
		return false
	}
	tc, ok := e.conn.(*tls.Conn)
	if !ok {
		return true
	}
	_ = tc.SetReadDeadline(time.Unix(1, 0))
	var b [1]byte
	_, err := tc.Read(b[:])
	_ = tc.SetReadDeadline(time.Time{})
	return errors.Is(err, os.ErrDeadlineExceeded)
}
