package admin

import (
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/wslb/wslb/fdbudget"
)

// The admin listener's limits (DESIGN "Slow clients, starvation and
// spoofing"): its conns must never take what the proxied conns need.
const (
	// MaxConns is how many admin conns are open at once; more wait in the
	// kernel's accept queue until one closes.
	MaxConns = 64
	// HeaderTimeout bounds reading a request head, from the conn's first
	// byte or accept on.
	HeaderTimeout = 10 * time.Second
	// IdleTimeout closes a kept-alive conn with no next request.
	IdleTimeout = 30 * time.Second
	// WriteTimeout cuts a response its client does not take, so that a
	// scraper that stopped reading does not keep a conn slot forever.
	WriteTimeout = 30 * time.Second
)

// NewServer returns the admin listener's http.Server for h, with the
// timeouts above; serve it on a Listener.
func NewServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: HeaderTimeout,
		IdleTimeout:       IdleTimeout,
		WriteTimeout:      WriteTimeout,
	}
}

// Listener is the admin listener's socket: at most max conns accepted at
// once (Accept waits for one to close, so the others wait in the kernel's
// queue instead of taking descriptors), the socket and every conn counted
// in fds. The admin conns are not refused in the descriptor reserve: they
// are what it is kept for.
type Listener struct {
	net.Listener
	fds   *fdbudget.Budget
	slots chan struct{}
	done  chan struct{}
	once  sync.Once
}

// NewListener wraps ln, which it owns from now on; max ≤ 0 means MaxConns.
func NewListener(ln net.Listener, fds *fdbudget.Budget, max int) *Listener {
	if max <= 0 {
		max = MaxConns
	}
	fds.Add(1)
	return &Listener{Listener: ln, fds: fds, slots: make(chan struct{}, max), done: make(chan struct{})}
}

// Accept waits for a free slot, then for a conn.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	l.fds.Add(1)
	return &conn{Conn: c, l: l}, nil
}

// Close closes the socket, once; conns already accepted go on.
func (l *Listener) Close() error {
	err := net.ErrClosed
	l.once.Do(func() {
		close(l.done)
		err = l.Listener.Close()
		l.fds.Add(-1)
	})
	return err
}

// conn gives its slot and descriptor back when closed, once.
type conn struct {
	net.Conn
	l    *Listener
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		<-c.l.slots
		c.l.fds.Add(-1)
	})
	return err
}
