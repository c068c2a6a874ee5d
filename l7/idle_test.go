package l7

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
)

// TestIdleConnsHoldNoBuffers checks that a kept-alive client conn waiting
// for its next request has given its reader and writer (36 KiB with the
// default max_header_bytes) back: idle conns are most of a proxy's conns.
func TestIdleConnsHoldNoBuffers(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	}))
	l := simpleLB(t, "", be.addr())
	heap := func() int64 {
		runtime.GC()
		runtime.GC() // the second empties sync.Pool's victim cache
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	const n = 100
	conns := make([]net.Conn, n)
	request := func(c net.Conn) {
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if resp, body := readResp(t, bufio.NewReader(c), "GET"); resp.StatusCode != 200 || body != "hello" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	}
	request(tcptest.Dial(t, l.addr)) // start the worker's backend conn and pools
	before := heap()
	for i := range conns {
		conns[i] = tcptest.Dial(t, l.addr)
		request(conns[i])
	}
	// An idle conn waits on its goroutine (awaitRequest) or, on Linux, on
	// its worker's event loop.
	wait.For(t, "every conn idle", func() bool { return awaiting()+int(l.proxy.loopConns.Load()) >= n+1 })
	perConn := (heap() - before) / n
	t.Logf("%d bytes of heap per idle conn, both ends", perConn)
	if perConn > 16<<10 {
		t.Errorf("an idle conn holds %d bytes of heap; want far less than its 36 KiB of buffers", perConn)
	}
	for _, c := range conns {
		request(c) // each still works after its idle wait
	}
}

// TestAwaitRequest drives awaitRequest on a loopback TCP conn: bytes already
// there, bytes that come later, a head split over several writes, the
// keepalive deadline, and the client's close.
func TestAwaitRequest(t *testing.T) {
	pair := func() (client net.Conn, cc *clientConn) {
		client, server := tcptest.Pair(t)
		cc = &clientConn{conn: server, src: socketReader{conn: server, fd: -1}, rsize: 32 << 10}
		cc.br, cc.bw = getReader(&cc.src, cc.rsize), getWriter(server)
		return client, cc
	}
	head := "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	readHead := func(t *testing.T, cc *clientConn) {
		t.Helper()
		req, err := readRequest(cc.br, 32<<10)
		if err != nil || req.Host != "x" {
			t.Fatalf("readRequest = %v, %v", req, err)
		}
		if cc.bw == nil || cc.br.Size() < minBuffer {
			t.Fatalf("buffers after awaitRequest: bw %v, br of %d bytes", cc.bw, cc.br.Size())
		}
	}

	t.Run("already there", func(t *testing.T) {
		client, cc := pair()
		io.WriteString(client, head)
		wait.For(t, "the head at the server's socket", func() bool { return readable(t, cc.conn) })
		if err := cc.awaitRequest(time.Second); err != nil {
			t.Fatal(err)
		}
		readHead(t, cc)
	})
	t.Run("later, split", func(t *testing.T) {
		client, cc := pair()
		parked := awaiting() + 1
		go func() {
			// Once awaitRequest waits (or after 5 s, which fails the test
			// only if the head then comes too late).
			wait.Until(wait.Timeout, func() bool { return awaiting() >= parked })
			io.WriteString(client, head[:5])
			time.Sleep(20 * time.Millisecond) // pacing: the rest of the head comes in a later read
			io.WriteString(client, head[5:])
		}()
		if err := cc.awaitRequest(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		readHead(t, cc)
	})
	t.Run("two in a row", func(t *testing.T) {
		client, cc := pair()
		for range 2 {
			io.WriteString(client, head)
			if err := cc.awaitRequest(5 * time.Second); err != nil {
				t.Fatal(err)
			}
			readHead(t, cc)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		_, cc := pair()
		start := time.Now()
		err := cc.awaitRequest(100 * time.Millisecond)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("awaitRequest = %v; want a deadline error", err)
		}
		if d := time.Since(start); d < 90*time.Millisecond || d > 2*time.Second {
			t.Errorf("awaitRequest returned after %v; want about 100ms", d)
		}
	})
	t.Run("client closes", func(t *testing.T) {
		client, cc := pair()
		parked := awaiting() + 1
		go func() {
			wait.Until(wait.Timeout, func() bool { return awaiting() >= parked })
			client.Close()
		}()
		if err := cc.awaitRequest(5 * time.Second); !errors.Is(err, io.EOF) {
			t.Fatalf("awaitRequest = %v; want EOF", err)
		}
	})
}

// awaiting counts the goroutines parked in awaitRequest on a socket with
// nothing to read: idle client conns, which hold no buffer.
func awaiting() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte("[IO wait")) && bytes.Contains(g, []byte("(*clientConn).awaitRequest(")) {
			count++
		}
	}
	return count
}

// readable reports whether bytes wait to be read on c, without reading them.
func readable(t *testing.T, c net.Conn) bool {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr = syscall.Recvfrom(int(fd), make([]byte, 1), syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true // never wait for more
	})
	if err == nil && rerr != nil && rerr != syscall.EAGAIN {
		err = rerr
	}
	if err != nil {
		t.Fatal(err)
	}
	return n > 0
}
