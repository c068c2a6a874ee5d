package l7

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"testing"
	"time"
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
	request(rawConn(t, l.addr)) // start the worker's backend conn and pools
	before := heap()
	for i := range conns {
		conns[i] = rawConn(t, l.addr)
		request(conns[i])
	}
	time.Sleep(100 * time.Millisecond) // the last conns reach awaitRequest
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pair := func() (client net.Conn, cc *clientConn) {
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { client.Close() })
		server, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { server.Close() })
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
		if cc.bw == nil || cc.br.Size() < 32<<10 {
			t.Fatalf("buffers after awaitRequest: bw %v, br of %d bytes", cc.bw, cc.br.Size())
		}
	}

	t.Run("already there", func(t *testing.T) {
		client, cc := pair()
		io.WriteString(client, head)
		time.Sleep(20 * time.Millisecond)
		if err := cc.awaitRequest(time.Second); err != nil {
			t.Fatal(err)
		}
		readHead(t, cc)
	})
	t.Run("later, split", func(t *testing.T) {
		client, cc := pair()
		go func() {
			time.Sleep(50 * time.Millisecond)
			io.WriteString(client, head[:5])
			time.Sleep(20 * time.Millisecond)
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
		go func() {
			time.Sleep(50 * time.Millisecond)
			client.Close()
		}()
		if err := cc.awaitRequest(5 * time.Second); !errors.Is(err, io.EOF) {
			t.Fatalf("awaitRequest = %v; want EOF", err)
		}
	})
}
