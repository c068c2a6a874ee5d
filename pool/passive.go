package pool

import (
	"math"
	"time"
)

// forever as ejectedUntil means "until the next passing active check".
const forever = math.MaxInt64

// DialFailed records a failed dial to b at now (or a conn reset before the
// backend sent any byte) and reports whether this failure ejected it:
// max_fails failures within fail_timeout take b out of selection until the
// next passing active check, or, with check none, until fail_timeout has
// passed (judged when read, so no timer). max_fails 0 disables it. Failures
// while b is already out are ignored: they are dials that started before the
// ejection, and must not extend it.
//
// The window is the last max_fails timestamps, kept under a mutex that only
// this failure path takes; Pick reads nothing but the ejectedUntil atomic.
func (b *Backend) DialFailed(now time.Time) (ejected bool) {
	limit := b.maxFails.Load()
	if limit <= 0 {
		return false
	}
	t := b.stamp(now)
	if t < b.ejectedUntil.Load() {
		return false
	}
	window := b.failTimeout.Load()

	b.failMu.Lock()
	defer b.failMu.Unlock()
	keep := b.fails[:0]
	for _, f := range b.fails {
		if t-f < window {
			keep = append(keep, f)
		}
	}
	b.fails = append(keep, t)
	if over := int64(len(b.fails)) - limit; over > 0 {
		b.fails = b.fails[over:] // a reload lowered max_fails
	}
	if int64(len(b.fails)) < limit {
		return false
	}
	b.fails = b.fails[:0]
	if b.checks.Load() {
		b.ejectedUntil.Store(forever)
		return true
	}
	until := t + max(window, 1)
	b.ejectedUntil.Store(until)
	// With check none nothing will announce the return, so slow start is
	// scheduled now to begin at the moment the ejection lapses.
	b.rampFrom.Store(until)
	return true
}

// CheckPassed tells b that an active check just passed at now. It ends a
// passive ejection (which lasts "until the next pass") and reports whether it
// did; the ended ejection counts as a recovery for slow start. The checker
// calls it on every pass, whatever the rise count says, and SetState for the
// verdict.
func (b *Backend) CheckPassed(now time.Time) (reinstated bool) {
	until := b.ejectedUntil.Load()
	if until == 0 || !b.ejectedUntil.CompareAndSwap(until, 0) {
		return false
	}
	t := b.stamp(now)
	if t >= until {
		return false // a timed ejection that had already lapsed
	}
	b.rampFrom.Store(t)
	return true
}

// Ejected reports whether passive failures keep b out of selection right now.
func (b *Backend) Ejected() bool { return b.stamp(b.now()) < b.ejectedUntil.Load() }
