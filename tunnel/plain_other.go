//go:build !linux

package tunnel

import "net"

// Plain reports whether c is a bare TCP socket.
func Plain(c net.Conn) bool {
	_, ok := c.(*net.TCPConn)
	return ok
}
