//go:build linux

package tunnel

import (
	"net"

	"github.com/wslb/wslb/rawconn"
)

// Plain reports whether c is a bare TCP socket: a *net.TCPConn, or a
// *rawconn.Conn (frontend's accepted conns). The loops take those, and the
// goroutine relay waits on their sockets.
func Plain(c net.Conn) bool {
	switch c.(type) {
	case *net.TCPConn, *rawconn.Conn:
		return true
	}
	return false
}
