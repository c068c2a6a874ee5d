package main

import (
	"fmt"
	"os"
	"testing"

	"github.com/wslb/wslb/xconnect"
)

// TestMain runs the tests as wslb runs (main.go): with Go's HTTP/2 server
// offering extended CONNECT (RFC 8441), which it reads from GODEBUG only as
// the program starts.
func TestMain(m *testing.M) {
	if err := xconnect.Ensure(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}
