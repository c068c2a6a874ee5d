// Package tcptest holds the TCP ends that tests put around wslb, on
// 127.0.0.1 and closed when the test ends: a server that runs the test's own
// function on every conn it accepts (Serve, and ServeProxied behind a PROXY
// header), a client conn with a deadline (Dial, and Redial for a listener
// still binding), a connected pair (Pair), a conn that holds writes to send
// them as one (Batch), and writes in paced pieces (Trickle). The echo
// servers most tests want are in internal/echo.
package tcptest

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wslb/wslb/internal/wait"
)

// Server is a TCP server on loopback that Serve started.
type Server struct {
	ln       net.Listener
	accepted atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]struct{} // open ones, closed at the test's end
	wg    sync.WaitGroup        // the accept loop and every serve call
}

// Serve listens on a free loopback port and runs serve on every conn it
// accepts, each in a goroutine of its own; a conn is closed when its serve
// returns. When the test ends, the listener and every conn still open are
// closed, and Serve's cleanup waits up to 5 s for the serve calls to return:
// serve must return once its conn is closed.
func Serve(t testing.TB, serve func(c net.Conn)) *Server {
	t.Helper()
	return ServeOn(t, "127.0.0.1:0", serve)
}

// ServeOn is Serve on addr, a loopback address: another IP of 127.0.0.0/8
// (127.0.0.2:0) when servers of a test must differ by IP, as a backend's
// agent, which is found on the backend's IP, does.
func ServeOn(t testing.TB, addr string, serve func(c net.Conn)) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{ln: ln, conns: map[net.Conn]struct{}{}}
	s.wg.Go(func() { s.acceptLoop(serve) })
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		wait.Group(t, "a tcptest.Serve function", &s.wg)
	})
	return s
}

// acceptLoop runs until the listener is closed.
func (s *Server) acceptLoop(serve func(net.Conn)) {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.accepted.Add(1)
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Go(func() {
			defer func() {
				c.Close()
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			}()
			serve(c)
		})
	}
}

// Close stops accepting, so that new conns are refused; conns already open
// run on until the test ends.
func (s *Server) Close() { s.ln.Close() }

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Accepted is how many conns the server has accepted so far.
func (s *Server) Accepted() int { return int(s.accepted.Load()) }

// Dial connects to addr, allowing 5 s, and sets a deadline 20 s ahead on
// the conn, so that no read or write of the test can hang it; a test that
// checks a timeout sets a shorter one itself. The conn is closed when the
// test ends.
func Dial(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return own(t, c)
}

// Redial is Dial for a listener that binds in the background, in a process
// or goroutine that is starting: it dials every few milliseconds for up to
// 10 s until a dial succeeds, and returns the last dial's error if none
// did, for the caller to report with what it knows (the process's stderr).
// check, if not nil, runs before each try; it fails the test when there is
// no point in waiting (the process has exited).
func Redial(t testing.TB, addr string, check func()) (*net.TCPConn, error) {
	t.Helper()
	var c net.Conn
	var err error
	if !wait.Until(10*time.Second, func() bool {
		if check != nil {
			check()
		}
		c, err = net.DialTimeout("tcp", addr, time.Second)
		return err == nil
	}) {
		return nil, err
	}
	return own(t, c), nil
}

// own sets Dial's deadline on c and closes it at the test's end.
func own(t testing.TB, c net.Conn) *net.TCPConn {
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return c.(*net.TCPConn)
}

// Pair returns the two ends of a new loopback TCP conn: client, which
// dialed, and server, which a listener accepted. Both are closed when the
// test ends. Neither has a deadline: the code under test manages the
// deadlines of the end it is given, and the test sets its own on the other.
func Pair(t testing.TB) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// The dial completed from the listen backlog: Accept returns at once.
	_ = ln.SetDeadline(time.Now().Add(5 * time.Second))
	s, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return c.(*net.TCPConn), s
}
