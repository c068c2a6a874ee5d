//go:build linux

package tunnel

import "net"

// Detach takes c's socket (c Plain) out of Go's runtime for an event loop
// of another package (l7's): it returns the descriptor, non-blocking, and
// closes c. On error c is closed and nothing is returned.
func Detach(c net.Conn) (int, error) { return detach(c) }
