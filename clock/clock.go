// Package clock is the time that code with waits worth testing reads: the
// real clock here, or a test's (internal/clocktest), injected. Discovery's
// watchers and the accept pacing of frontend take one.
package clock

import "time"

// Clock tells the time and waits for a moment.
type Clock interface {
	Now() time.Time
	// Until returns a channel that receives once the clock reads t or
	// later, at once if it already does.
	Until(t time.Time) <-chan time.Time
}

// Real is time.Now and timers.
type Real struct{}

// Now is time.Now.
func (Real) Now() time.Time { return time.Now() }

// Until fires at t on a timer.
func (Real) Until(t time.Time) <-chan time.Time { return time.After(time.Until(t)) }
