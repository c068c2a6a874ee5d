// Package wait polls a condition in tests, bounded in time, for states that
// other goroutines reach (a counter settling, a conn being released). For
// waits in which a clock is the point, testing/synctest is the better tool.
package wait

import (
	"sync"
	"testing"
	"time"
)

// Timeout is For's bound: long enough for a loaded -race run, short enough
// that a test that can no longer pass ends soon.
const Timeout = 5 * time.Second

// poll is how often a condition is tried.
const poll = 5 * time.Millisecond

// For polls cond every 5 ms for at most 5 s and fails the test, naming
// what, if it never holds.
func For(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if !Until(Timeout, cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// Within is For with a bound of d, for a wait whose bound is itself what the
// test checks (a dead backend marked down within interval × fall, say). It
// returns how long cond took to hold, and fails the test, naming what and d,
// if it did not hold in time.
func Within(t testing.TB, what string, d time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	if !Until(d, cond) {
		t.Fatalf("%s: not within %v", what, d)
	}
	return time.Since(start)
}

// Until polls cond every 5 ms for at most d and reports whether it held. It
// is for a caller that reports a miss itself, with what it saw last, or that
// goes on to an assertion of its own; it needs no testing.TB, so a goroutine
// other than the test's may call it. cond is tried once more at the bound.
func Until(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(poll)
	}
	return true
}

// Group waits for wg for at most 5 s, for a cleanup that must not hang on a
// goroutine that missed its end (a server's handler stuck in a hook). If wg
// is not done by then it reports what with t.Error and returns, leaving the
// goroutines behind.
func Group(t testing.TB, what string, wg *sync.WaitGroup) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(Timeout):
		t.Errorf("%s still running %v after the test ended", what, Timeout)
	}
}
