// Package wait polls a condition in tests, bounded in time, for states that
// other goroutines reach (a counter settling, a conn being released).
package wait

import (
	"testing"
	"time"
)

// For polls cond every 5 ms for at most 5 s and fails the test, naming
// what, if it never holds.
func For(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}
