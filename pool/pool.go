// Package pool keeps each pool's backends and the counters all workers share,
// picks a backend for a connection with one of three policies, and caches idle
// backend conns per worker.
//
// Start with pool.go (New, Reconcile, Pick), then backend.go for the reservation
// rule and state.go, passive.go, slowstart.go for health, hold.go for the
// backends that take no new conns while theirs run on, admin.go for the
// operator's ready/drain/maint; leastconn.go,
// roundrobin.go and sourcehash.go are the policies, idle.go the cache.
package pool

import (
	"errors"
	"net/netip"
	"time"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/fdbudget"
)

// ErrNoBackend is returned by Pick when every backend is down, full or excluded.
var ErrNoBackend = errors.New("no backend available")

// ErrRemoved is the cause of a backend's Context once a reload has removed it.
var ErrRemoved error = removedError{}

type removedError struct{}

func (removedError) Error() string { return "backend removed" }

// Reason names the cause for wslb_tunnels_closed_total.
func (removedError) Reason() string { return "removed" }

// Policy chooses a backend for one conn or request. Pick must return a backend
// it has already reserved (so the caller owns one Release), skipping exclude and
// any backend that cannot be reserved at now, or nil when none can be.
// Implementations hold their Pool's backend slice and must be safe for
// concurrent use.
type Policy interface {
	Pick(client netip.Addr, exclude *Backend, now time.Time) *Backend
}

// Pool is a named set of backends and the policy that picks among them. It is
// immutable: a reload builds a new Pool with Reconcile and swaps it in whole,
// while conns already started keep the Pool and Backend they hold.
type Pool struct {
	name     string
	backends []*Backend
	policy   Policy
	now      func() time.Time
	fds      *fdbudget.Budget // its backends' conns are charged to it
}

// New builds a pool from its configuration. Every backend starts with no
// reservations, up when health.check is none (or empty, as in a config built
// by hand), unknown otherwise.
func New(c config.Pool) *Pool {
	return NewWithClock(c, time.Now)
}

// NewWithClock is New with a clock other than time.Now, read for passive
// ejection and slow start; tests use it to step through both. Reconcile hands
// the clock on to the pools built from this one.
func NewWithClock(c config.Pool, now func() time.Time) *Pool {
	return reconcile(nil, c, now, Retire{}, nil)
}

// NewCounted is New with every backend conn (reservations and idle conns)
// charged to fds, the process's descriptor count; the pools Reconcile builds
// from it charge the same count.
func NewCounted(c config.Pool, fds *fdbudget.Budget) *Pool {
	return reconcile(nil, c, time.Now, Retire{}, fds)
}

// Reconcile builds the pool for configuration c from the running pool old (which
// may be nil). The *Backend of every address that stays is reused, with its
// weight and limits updated in place, so active counts, idle counts and health
// survive the reload; backends whose address is gone have their Context
// cancelled with cause ErrRemoved. old keeps its slice and policy, so conns that
// hold it keep working, but its removed backends are no longer available.
func Reconcile(old *Pool, c config.Pool) *Pool {
	return ReconcileRetiring(old, c, Retire{})
}

// ReconcileRetiring is Reconcile with the conns of removed backends ended as r
// says (see Backend.remove), and added backends ramped up by slow start:
// joining a loaded pool at full weight would send one backend every new conn.
func ReconcileRetiring(old *Pool, c config.Pool, r Retire) *Pool {
	now := time.Now
	var fds *fdbudget.Budget
	if old != nil {
		now, fds = old.now, old.fds
	}
	return reconcile(old, c, now, r, fds)
}

func reconcile(old *Pool, c config.Pool, now func() time.Time, r Retire, fds *fdbudget.Budget) *Pool {
	kept := make(map[netip.AddrPort]*Backend)
	if old != nil {
		for _, b := range old.backends {
			kept[b.addr] = b
		}
	}
	backends := make([]*Backend, 0, len(c.Backends))
	for _, cb := range c.Backends {
		b, ok := kept[cb.Addr]
		if ok {
			// Deleting means a duplicated address gets its own Backend rather than
			// two slots sharing one, and leaves only the removed ones in kept.
			delete(kept, cb.Addr)
			b.configure(cb, c)
		} else {
			b = newBackend(cb, c, now, fds)
			if old != nil {
				b.rampFrom.Store(b.stamp(now()))
			}
		}
		backends = append(backends, b)
	}
	for _, b := range kept {
		b.remove(r)
	}
	for _, b := range backends {
		b.setCloseSpread(r.Spread)
	}
	// The new group's flag comes from the states of its own backends, set
	// after every backend points at it: see SetState for the other half.
	g := &group{}
	for _, b := range backends {
		b.group.Store(g)
	}
	for _, b := range backends {
		if b.State() == StateUp {
			g.passed.Store(true)
			break
		}
	}
	return &Pool{name: c.Name, backends: backends, policy: newPolicy(c.Balance, backends), now: now, fds: fds}
}

// newPolicy is the one place that maps a balance name to its policy.
func newPolicy(balance string, backends []*Backend) Policy {
	switch balance {
	case config.BalanceRoundRobin:
		return newRoundRobin(backends)
	case config.BalanceSourceHash:
		return newSourceHash(backends)
	default: // config.BalanceLeastConn, and "" before defaults are applied
		return newLeastConn(backends)
	}
}

// Name is the pool's configured name.
func (p *Pool) Name() string { return p.name }

// Clock is the pool's clock (time.Now unless built with NewWithClock). Health
// checkers stamp their verdicts with it, so tests can drive slow start.
func (p *Pool) Clock() func() time.Time { return p.now }

// Backends returns the pool's backends in configuration order. The slice is
// shared: do not modify it.
func (p *Pool) Backends() []*Backend { return p.backends }

// Pick chooses a backend for a conn from client and reserves it: on success the
// caller must call Release exactly once. exclude (may be nil) is skipped; it is
// the backend whose dial just failed, for the one retry. Backends that are not
// Healthy (down, ejected, removed, or unknown once a peer has passed) or are
// full are skipped, and ErrNoBackend is returned at once when nothing is
// eligible: health is already known, so no dial is spent finding out.
func (p *Pool) Pick(client netip.Addr, exclude *Backend) (*Backend, error) {
	if b := p.policy.Pick(client, exclude, p.now()); b != nil {
		return b, nil
	}
	return nil, ErrNoBackend
}

// Has reports whether b is one of p's backends.
func (p *Pool) Has(b *Backend) bool {
	for _, x := range p.backends {
		if x == b {
			return true
		}
	}
	return false
}
