// Package servetest runs a frontend.Listener for the length of a test, as
// the l4 and l7 tests need around their proxies.
package servetest

import (
	"context"
	"testing"
	"time"

	"github.com/wslb/wslb/frontend"
)

// Serve binds fl and runs its accept loops until the test ends; then it
// stops accepting and closes the conns left at once.
func Serve(t testing.TB, fl *frontend.Listener) {
	t.Helper()
	if err := fl.Listen(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { fl.Serve(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		fl.Drain(dctx, 0, 0)
	})
}
