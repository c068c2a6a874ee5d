//go:build !linux

package l7

import (
	"net"
	"os"
)

// fileConn wraps a socket the engine gave back in a net.Conn again (on Go's
// netpoller); fd is closed, the conn holding a duplicate.
func fileConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "")
	c, err := net.FileConn(f)
	f.Close()
	return c, err
}

// closeFD closes a socket the engine gave back, if any.
func closeFD(fd int) {
	if fd >= 0 {
		os.NewFile(uintptr(fd), "").Close()
	}
}
