//go:build linux

package l7

import (
	"net"

	"golang.org/x/sys/unix"

	"github.com/wslb/wslb/rawconn"
)

// fileConn wraps a socket an event loop gave back in a net.Conn again. It
// stays off Go's netpoller until it has to wait (rawconn): a conn that
// comes back with its next bytes read, or to write an answer, may never
// need it. It never fails; the error is for the other systems' version.
func fileConn(fd int) (net.Conn, error) { return rawconn.New(fd, nil, nil), nil }

// closeFD closes a socket an event loop gave back, if any.
func closeFD(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}
