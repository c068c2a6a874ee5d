//go:build !linux

package l7

// evLoop is the event loop of kept-alive conns, Linux only
// (loop_linux.go); elsewhere every conn stays on its goroutine.
type evLoop struct{}

func (w *worker) toLoop(*clientConn) bool { return false }

func (w *worker) closeLoop() {}

func (w *worker) evLoop() *evLoop { return nil }
