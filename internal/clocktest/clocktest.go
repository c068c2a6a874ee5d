// Package clocktest is a clock that a test moves by hand, for code that
// takes an injected clock (Now and Until) and whose waits are the point of
// the test: the resolver's interval and hold, which the test steps through
// while real sockets serve.
package clocktest

import (
	"sync"
	"time"
)

// Clock stands still until Advance moves it; a channel from Until receives
// once Advance reaches its time. The zero value is not usable: use New.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

// New returns a clock reading start.
func New(start time.Time) *Clock { return &Clock{now: start} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Until returns a channel that receives the clock's time once it reads t
// or later: at once when it already does. Since t is absolute, an Advance
// made before the caller asked is not lost on it.
func (c *Clock) Until(t time.Time) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if !t.After(c.now) {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, waiter{at: t, ch: ch})
	return ch
}

// Advance moves the clock on by d and fires every Until that is due.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(c.now) {
			kept = append(kept, w)
			continue
		}
		w.ch <- c.now
	}
	c.waiters = kept
}
