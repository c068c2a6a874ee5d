package l7

import (
	"io"
	"net"
	"time"
)

// deadlineWriter is the writer under the bufio.Writer of a client or backend
// conn. It arms conn's write deadline timeout (timeouts.send) ahead of each
// write, so that a peer that stops reading fails the write, and the request,
// within timeout. Writes reach it only when the buffer flushes: one deadline
// per write system call, never one per byte.
type deadlineWriter struct {
	conn    net.Conn
	timeout time.Duration
	// idle: conn has nothing in flight (a new backend conn, or one whose
	// last exchange ended), so the kernel takes a first write shorter than
	// a buffer at once: that write is not armed, which saves a request
	// head its deadline. Cleared by the first write.
	idle bool
	// err is the first write error, for the caller to tell a stalled peer
	// (os.ErrDeadlineExceeded) from one that went away, where net/http
	// wraps the error in a type errors.Is cannot see through.
	err error
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	if w.timeout > 0 && (!w.idle || len(p) >= minBuffer) {
		_ = w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
	}
	w.idle = false
	n, err := w.conn.Write(p)
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
}

// ReadFrom copies r through Write, a deadline per write. bufio.Writer hands
// a whole request body to it when its buffer is empty; without it, bufio
// would read the body into its own buffer, under flushingBody, whose flush
// empties that buffer while the read fills it.
func (w *deadlineWriter) ReadFrom(r io.Reader) (int64, error) {
	buf := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(buf)
	return io.CopyBuffer(writerOnly{w}, r, *buf)
}
