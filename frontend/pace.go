package frontend

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/wslb/wslb/clock"
)

// bucket is a token bucket that paces a listener's accepts
// (max_accept_rate): rate tokens a second, holding at most a second's worth
// (burst, at least one). Every accept loop of the listener takes a token
// before it calls accept, so conns above the rate wait in the kernel's accept
// queue rather than being accepted and then refused.
//
// A loop holds the token it took while it waits in accept (Go offers no wait
// for a listening socket to become ready short of accepting), so a worker
// whose socket is empty keeps one token aside: since the bucket was made the
// accepts never exceed burst + rate·t, and over any window of t at most
// burst + rate·t + one per accept loop.
type bucket struct {
	clock clock.Clock

	mu     sync.Mutex
	rate   float64   // tokens per second; 0 is unlimited
	tokens float64   // at most burst(rate)
	last   time.Time // when tokens was last brought up to date
	// changed is closed, and replaced, when the rate changes, so that
	// loops waiting on the old rate look again.
	changed chan struct{}
}

// newBucket returns a bucket of rate tokens a second that starts full. A nil
// clock is the real one.
func newBucket(rate float64, c clock.Clock) *bucket {
	if c == nil {
		c = clock.Real{}
	}
	return &bucket{clock: c, rate: rate, tokens: burst(rate), last: c.Now(), changed: make(chan struct{})}
}

// burst is one second's worth of tokens, and at least one: a rate of 0.5 a
// second still lets a conn through, one every two seconds.
func burst(rate float64) float64 { return max(rate, 1) }

// setRate changes the rate; 0 is unlimited. The tokens saved so far stay (up
// to the new burst), so a reload neither lets a second burst through nor
// stalls accepting; a bucket that was unlimited starts full, as a new one
// does. Loops waiting on the old rate look again at once.
func (b *bucket) setRate(rate float64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock.Now()
	b.refill(now)
	if b.rate <= 0 {
		b.tokens = burst(rate)
	}
	b.rate = rate
	b.tokens = min(b.tokens, burst(rate))
	close(b.changed)
	b.changed = make(chan struct{})
}

// refill adds the tokens earned since last. Called with mu held.
func (b *bucket) refill(now time.Time) {
	if b.rate > 0 && now.After(b.last) {
		b.tokens = min(b.tokens+now.Sub(b.last).Seconds()*b.rate, burst(b.rate))
	}
	if now.After(b.last) {
		b.last = now
	}
}

// take takes a token if there is one. If not, it says when there will be
// one at the current rate, and returns the channel that a rate change
// closes.
func (b *bucket) take() (ok bool, next time.Time, changed <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rate <= 0 {
		return true, time.Time{}, nil
	}
	now := b.clock.Now()
	b.refill(now)
	if b.tokens >= 1 {
		b.tokens--
		return true, time.Time{}, nil
	}
	// Rounded up, so that the wake-up finds a whole token rather than a
	// float's hair short of one.
	ns := math.Ceil((1 - b.tokens) / b.rate * float64(time.Second))
	return false, now.Add(time.Duration(ns)), b.changed
}

// wait takes a token, waiting for one as long as it takes, and returns nil;
// or returns ctx's error as soon as ctx ends, without a token.
func (b *bucket) wait(ctx context.Context) error {
	for {
		ok, next, changed := b.take()
		if ok {
			return nil
		}
		select {
		case <-b.clock.Until(next):
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
