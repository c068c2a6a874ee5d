// Package loopback finds addresses on 127.0.0.1 for tests: one that refuses
// conns, and one that is free to bind.
package loopback

import (
	"net"
	"testing"
)

// DeadAddr returns a loopback address nothing listens on: dials to it are
// refused at once.
func DeadAddr(t testing.TB) string {
	t.Helper()
	return FreeAddr(t)
}

// FreeAddr returns a loopback address that was free a moment ago, for a
// server whose port must be known before it starts (a port-0 listener's
// port cannot be learnt through the command line).
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
