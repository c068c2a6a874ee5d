//go:build linux

package frontend

import (
	"net"
	"testing"

	"github.com/wslb/wslb/rawconn"
)

func checkRaw(t *testing.T, c net.Conn) {
	t.Helper()
	if _, ok := c.(*rawconn.Conn); !ok {
		t.Errorf("accepted conn is a %T, want a *rawconn.Conn", c)
	}
}
