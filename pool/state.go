package pool

import (
	"sync/atomic"
	"time"
)

// State is a backend's verdict from active health checks.
type State int32

// The three health states. The zero value is StateUnknown, so a backend of a
// pool with checks on starts unknown.
const (
	// StateUnknown: never checked. Such a backend takes traffic only while no
	// backend of its pool has passed a check yet, so that start-up (and a
	// reload that replaces every backend) never refuses traffic it could serve.
	StateUnknown State = iota
	// StateUp: the checks say it serves; check none is always up.
	StateUp
	// StateDown: the checks say it does not.
	StateDown
)

func (s State) String() string {
	switch s {
	case StateUp:
		return "up"
	case StateDown:
		return "down"
	default:
		return "unknown"
	}
}

// group is what the backends of one Pool share. Reconcile gives every backend
// of the new pool a fresh group, so the flag is derived from that pool's own
// backends rather than inherited from addresses that are gone.
type group struct {
	// passed is set once any backend of the pool has been up; from then on an
	// unknown backend waits for its own first pass.
	passed atomic.Bool
	// weights counts agent weight changes, so round_robin knows when to
	// rebuild its schedule.
	weights atomic.Uint64
}

// State is the backend's last health verdict.
func (b *Backend) State() State { return State(b.state.Load()) }

// Up reports whether the last health verdict is up. It says nothing about
// passive ejection, removal or being full: use Healthy or Available for "may
// take a conn".
func (b *Backend) Up() bool { return b.State() == StateUp }

// SetState records an active-check verdict at now. A move from down to up
// starts slow start at now; a first verdict (from unknown) does not, since a
// backend seen alive at its first check is not recovering from anything.
func (b *Backend) SetState(s State, now time.Time) {
	old := State(b.state.Swap(int32(s)))
	if s != StateUp {
		return
	}
	if old == StateDown {
		b.rampFrom.Store(b.stamp(now))
	}
	// After the state store: Reconcile swaps the group pointer first and then
	// scans states, so either it sees this state or this sees its new group.
	b.group.Load().passed.Store(true)
}

// SetUp is SetState at the pool's clock: up or down.
func (b *Backend) SetUp(up bool) {
	s := StateDown
	if up {
		s = StateUp
	}
	b.SetState(s, b.now())
}

// Healthy reports whether the backend may take new conns apart from its
// max_connections_per_backend: not removed, not held, not passively ejected, not
// reported down by its agent, and up (or unknown while no backend of its pool
// has passed a check). Derived when read,
// so it is the right value for wslb_backend_up at scrape time.
func (b *Backend) Healthy() bool { return b.healthy(b.stamp(b.now())) }

// healthy is Healthy at stamp t.
func (b *Backend) healthy(t int64) bool {
	switch b.State() {
	case StateDown:
		return false
	case StateUnknown:
		if b.group.Load().passed.Load() {
			return false
		}
	}
	if t < b.ejectedUntil.Load() || b.Held() || b.AgentDown() {
		return false
	}
	return !b.removed()
}
