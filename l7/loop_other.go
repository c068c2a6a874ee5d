//go:build !linux

package l7

import "context"

// evLoop is the event loop of kept-alive conns, Linux only
// (loop_linux.go); elsewhere every conn stays on its goroutine.
type evLoop struct{}

func (w *worker) toLoop(context.Context, *clientConn) bool { return false }

func (w *worker) closeLoop() {}

func (w *worker) evLoop() *evLoop { return nil }
