package l7

import (
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// awaitRequest waits up to timeout for the first byte of the next request.
// A conn that idles between requests holds no buffer: when nothing is
// buffered, br and bw go back to their pools and, on plain TCP, the socket is
// waited on directly; a new br reads it once it is readable. A TLS conn keeps
// its buffers (its records are read through br), as do pipelined requests.
func (cc *clientConn) awaitRequest(timeout time.Duration) error {
	_ = cc.conn.SetReadDeadline(time.Now().Add(timeout))
	cc.readDeadline = true
	if cc.br.Buffered() > 0 || cc.tls {
		_, err := cc.br.Peek(1)
		return err
	}
	if cc.raw == nil {
		sc, ok := cc.conn.(syscall.Conn)
		if !ok {
			_, err := cc.br.Peek(1)
			return err
		}
		raw, err := sc.SyscallConn()
		if err != nil {
			return err
		}
		cc.raw = raw.Read
	}
	cc.releaseBuffers(nil)
	if cc.probe == nil {
		cc.probe = cc.readAwaited // a method value: allocated once per conn
	}
	// The first call reads at once (pipelining clients, and edge-triggered
	// polling may have consumed the readiness of bytes already there); each
	// later one follows readability. Between calls no buffer is held.
	if err := cc.raw(cc.probe); err != nil {
		return err
	}
	if err := cc.probeErr; err != nil {
		cc.probeErr = nil
		return err
	}
	cc.bw = getWriter(&cc.sw)
	return nil
}

// readAwaited is awaitRequest's read of the socket: it reports whether it is
// done, with cc.br holding the first bytes or cc.probeErr the error.
func (cc *clientConn) readAwaited(fd uintptr) bool {
	br := getReader(&cc.src, minBuffer) // readRequest grows it for a long head
	cc.src.fd = int(fd)
	_, err := br.Peek(1)
	cc.src.fd = -1
	if err == syscall.EAGAIN {
		putReader(br)
		return false
	}
	cc.br, cc.probeErr = br, err
	return true
}

// rawConnFunc is syscall.RawConn's Read.
type rawConnFunc func(f func(fd uintptr) bool) error

// socketReader is the reader under a client conn's br: conn, or, while
// awaitRequest holds fd (its socket, set non-blocking by the runtime), that
// socket read directly, so that a read with nothing to read returns EAGAIN
// rather than waiting.
type socketReader struct {
	conn net.Conn
	fd   int // -1 outside awaitRequest
	// now, while set, is read instead of conn: a read that never waits
	// (ServeInline's look at a new conn's first bytes).
	now interface{ TryRead([]byte) (int, error) }
}

func (r *socketReader) Read(p []byte) (int, error) {
	if r.now != nil {
		return r.now.TryRead(p)
	}
	if r.fd < 0 {
		return r.conn.Read(p)
	}
	for {
		n, err := syscall.Read(r.fd, p)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return 0, err // the expected answer: not worth an allocation
		case err != nil:
			return 0, os.NewSyscallError("read", err)
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}
