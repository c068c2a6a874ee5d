package health

import (
	"context"
	crand "crypto/rand"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/fdbudget"
	"github.com/wslb/wslb/pool"
)

// Checker actively checks one backend of one pool. Set the exported fields,
// then call Run once, in the goroutine that should own the loop.
type Checker struct {
	Pool    string        // pool name, for log lines and hooks
	Backend *pool.Backend // the backend checked and told the verdicts
	Config  config.Health // a validated health block (timeout < interval)
	Log     *slog.Logger  // nil: discard
	Hooks   Hooks
	// Rand draws the ±10% jitter. nil: a source seeded from crypto/rand, so
	// that the checkers of many backends drift apart instead of firing in
	// lockstep. Tests pass a seeded one.
	Rand *rand.Rand
	// Now stamps verdicts (it drives slow start and ends passive ejections);
	// nil: time.Now. Intervals are always measured on the real clock.
	Now func() time.Time

	// Only Run's goroutine touches these.
	state   pool.State // this checker's verdict; starts from the backend's
	passes  int        // consecutive passes
	fails   int        // consecutive failures
	lastErr error      // the last failed check's error
}

// Run checks at once, then every interval ±10% (measured from the start of
// each check), until ctx is done or the backend is removed by a reload. Each
// check is bounded by the timeout. With check none it returns at once: the
// backend is up by configuration and only passive failures take it out.
func (c *Checker) Run(ctx context.Context) {
	if !active(c.Config) {
		return
	}
	c.Log = logger(c.Log)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = newRand()
	}
	// A checker started after a reload carries on from the backend's state:
	// an up backend needs fall failures to go down, not one.
	c.state = c.Backend.State()

	every(ctx, c.Backend, c.interval, c.check)
}

// every runs check at once, then next() after the start of each run, until
// ctx is done or b is removed by a reload.
func every(ctx context.Context, b *pool.Backend, next func() time.Duration, check func(context.Context)) {
	removed := b.Context().Done()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-removed:
			return
		case <-t.C:
		}
		start := time.Now()
		check(ctx)
		t.Reset(max(0, next()-time.Since(start)))
	}
}

// interval is the configured interval with up to ±10% of jitter.
func (c *Checker) interval() time.Duration { return jitter(c.Config.Interval, c.Rand) }

// jitter is iv with up to ±10% of jitter drawn from r.
func jitter(iv time.Duration, r *rand.Rand) time.Duration {
	j := int64(iv / 10)
	if j <= 0 {
		return iv
	}
	return iv + time.Duration(r.Int64N(2*j+1)-j)
}

// newRand is a jitter source seeded from crypto/rand, so that the checkers
// of many backends drift apart instead of firing in lockstep.
func newRand() *rand.Rand {
	var seed [32]byte
	crand.Read(seed[:]) // never fails: it crashes the program instead
	return rand.New(rand.NewChaCha8(seed))
}

// check runs one probe and reports it, unless the checker is stopping: a
// probe cut short by cancellation says nothing about the backend. Nor does
// one wslb had no descriptor for: with only the reserve left the probe is not
// run, and one that failed for lack of descriptors, buffers or memory is no
// result either, so a local shortage never marks a backend down.
func (c *Checker) check(ctx context.Context) {
	fds := c.Backend.FDs()
	if !fds.Take() {
		c.Log.Debug("health check skipped: only the descriptor reserve is left", "pool", c.Pool, "backend", c.Backend.String())
		return
	}
	pctx, cancel := context.WithTimeout(ctx, c.Config.Timeout)
	err := probe(pctx, c.Backend.Addr().String(), c.Backend.TLS(), c.Config)
	cancel()
	fds.Add(-1) // the probe closed its conn
	if ctx.Err() != nil || c.Backend.Context().Err() != nil {
		return
	}
	if fdbudget.Exhausted(err) {
		c.Log.Debug("health check not counted: out of local resources", "pool", c.Pool, "backend", c.Backend.String(), "err", err)
		return
	}
	c.report(err)
}

// report applies one check result (err nil means pass) to the backend and
// announces what changed.
func (c *Checker) report(err error) {
	ok := err == nil
	if c.Hooks.OnResult != nil {
		c.Hooks.OnResult(c.Pool, c.Backend, err)
	}
	if !ok {
		c.lastErr = err
	}
	now := c.Now()
	// Every pass ends a passive ejection, whatever rise says: "until the next
	// active pass" is the contract.
	reinstated := ok && c.Backend.CheckPassed(now)
	switch {
	case c.observe(ok):
		c.Backend.SetState(c.state, now)
		c.announce(c.state == pool.StateUp)
	case reinstated && c.state == pool.StateUp:
		c.announce(true)
	}
}

// observe counts one result and reports whether it changes the verdict. The
// first result decides an unknown backend either way: it takes traffic after
// its first pass (DESIGN "Health at start"), and one that fails its first
// check was never seen alive, so there is nothing for fall to protect. After
// that, rise consecutive passes bring a down backend up and fall consecutive
// failures take an up one down.
func (c *Checker) observe(ok bool) (changed bool) {
	if ok {
		c.passes, c.fails = c.passes+1, 0
	} else {
		c.passes, c.fails = 0, c.fails+1
	}
	next := c.state
	switch c.state {
	case pool.StateUnknown:
		next = pool.StateDown
		if ok {
			next = pool.StateUp
		}
	case pool.StateUp:
		if c.fails >= c.Config.Fall {
			next = pool.StateDown
		}
	case pool.StateDown:
		if c.passes >= c.Config.Rise {
			next = pool.StateUp
		}
	}
	changed = next != c.state
	c.state = next
	return changed
}

// announce logs a state change once and calls OnChange. Going down, err is
// the failure that tipped it; coming up, last_err says why it had been down.
func (c *Checker) announce(up bool) {
	attrs := []any{"pool", c.Pool, "backend", c.Backend.String(), "reason", ReasonCheck}
	switch {
	case up && c.lastErr != nil:
		c.Log.Info("backend up", append(attrs, "last_err", c.lastErr)...)
	case up:
		c.Log.Info("backend up", attrs...)
	default:
		c.Log.Warn("backend down", append(attrs, "err", c.lastErr)...)
	}
	if c.Hooks.OnChange != nil {
		c.Hooks.OnChange(c.Pool, c.Backend, up, ReasonCheck, c.lastErr)
	}
	if up {
		// Spent: a later reinstatement or fall must not blame this old error.
		c.lastErr = nil
	}
}
