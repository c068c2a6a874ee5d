//go:build !linux

package l7

import "context"

// upgradeOnLoop serves nothing: the engine's loop, and the non-blocking
// connect it waits for, are Linux only.
func (w *worker) upgradeOnLoop(ctx context.Context, cc *clientConn, u *upgradeReq) (served, more bool) {
	return false, false
}
