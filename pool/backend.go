package pool

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/fdbudget"
)

// Backend is one server of a pool together with the state every worker shares:
// its reservation count, its health, its idle-conn count and its lifetime.
// Reconcile hands the same *Backend to the next Pool while its address stays,
// so nothing here points back at a Pool, and the settings a reload may change
// (weight, limits, health settings) are atomics rather than plain fields.
//
// It also holds the TLS client to the backend (tls.go), built once per
// configuration and shared by every dial and health check.
//
// Health is three-valued and everything time-dependent (passive ejection,
// slow start) is stored as a timestamp and judged when read, so no timer or
// goroutine ever has to flip a flag back; state.go, passive.go and slowstart.go
// hold those rules.
type Backend struct {
	addr netip.AddrPort
	name string // addr.String() computed once: it is a metrics label fetched per conn

	weight   atomic.Int64
	maxConns atomic.Int64
	idleMax  atomic.Int64
	pool     atomic.Pointer[string] // name of the pool that last configured it, for labels
	source   atomic.Pointer[string] // the DNS name it came from; "" when written as an IP
	tls      atomic.Pointer[clientTLS]

	active atomic.Int64
	idle   atomic.Int64
	// fds is charged one descriptor per reservation and per idle conn: a
	// reservation is a conn being dialed or in use, so the two counts are
	// the backend's conns, kept exact by Release's and the cache's rules.
	fds *fdbudget.Budget

	// Health (state.go). group is shared by every backend of the current Pool.
	state  atomic.Int32 // a State
	group  atomic.Pointer[group]
	checks atomic.Bool   // the pool runs active checks (check is not none)
	holds  atomic.Uint32 // Hold reasons (hold.go): no new conns while any is set
	agent  agentReport   // the agent check's last report (agent.go)

	// Passive failures (passive.go).
	maxFails     atomic.Int64
	failTimeout  atomic.Int64 // nanoseconds
	ejectedUntil atomic.Int64 // a stamp; 0 = not ejected, forever = until the next pass
	failMu       sync.Mutex
	fails        []int64 // stamps of recent failed dials, oldest first, at most maxFails

	// Slow start (slowstart.go).
	slowStart atomic.Int64  // nanoseconds; 0 = off
	rampFrom  atomic.Int64  // stamp at which the current ramp started; 0 = none
	rampTurns atomic.Uint64 // round_robin landings on this backend while it ramps

	// Established tunnels and l4 conns (tunnels.go), and the
	// max_connection_age given to those that open from now on.
	tunnels tunnels
	maxAge  atomic.Int64 // nanoseconds; 0 = off

	// The operator state (admin.go), kept while the backend stays.
	admin adminState

	now   func() time.Time // the pool's clock; read-only after construction
	epoch time.Time        // stamps count from here (monotonic, see stamp)

	ctx      context.Context
	cancel   context.CancelCauseFunc
	retiring atomic.Bool // set when a reload removes it (retire.go)
}

func newBackend(c config.Backend, p config.Pool, now func() time.Time, fds *fdbudget.Budget) *Backend {
	// The lifetime is not derived from any caller's ctx: a backend lives until a
	// reload removes it, however long the pool that first built it is kept.
	ctx, cancel := context.WithCancelCause(context.Background())
	b := &Backend{addr: c.Addr, name: c.Addr.String(), ctx: ctx, cancel: cancel, now: now, epoch: now(), fds: fds}
	b.group.Store(&group{})
	b.agent.pct.Store(AgentFull)
	// With checks on, a backend is unknown until its first check; without,
	// configure below makes it up.
	b.state.Store(int32(StateUnknown))
	b.configure(c, p)
	return b
}

// configure stores the settings a reload may change.
func (b *Backend) configure(c config.Backend, p config.Pool) {
	// config defaults the weight to 1; clamping here as well keeps least_conn's
	// cross-multiplication and source_hash's score meaningful whatever is passed in.
	b.weight.Store(int64(max(c.Weight, 1)))
	b.maxConns.Store(int64(max(p.MaxConnectionsPerBackend, 0)))
	b.idleMax.Store(int64(max(p.IdlePerWorker, 0)))
	name, source := p.Name, c.Source
	b.pool.Store(&name)
	b.source.Store(&source)
	// Only discovery's own reason follows the configuration: another hold
	// (an operator's) outlives a reload.
	b.SetHold(HoldVanished, c.Held)
	b.maxFails.Store(int64(max(p.Passive.MaxFails, 0)))
	b.failTimeout.Store(int64(max(p.Passive.FailTimeout, 0)))
	b.slowStart.Store(int64(max(p.SlowStart, 0)))
	b.maxAge.Store(int64(max(p.MaxConnectionAge, 0)))
	b.configureTLS(c, p.TLS)
	if p.Health.Agent.Port == 0 {
		// No agent will report again, so its last word must not stand forever.
		b.resetAgent()
	}

	checks := p.Health.Check != "" && p.Health.Check != config.CheckNone
	b.checks.Store(checks)
	if !checks {
		// No checker will ever report on this backend, so it is up, and an
		// ejection waiting for "the next pass" (checks were on before this
		// reload) must end now rather than never.
		b.state.Store(int32(StateUp))
		b.ejectedUntil.CompareAndSwap(forever, 0)
	}
}

// Addr is the backend's resolved address.
func (b *Backend) Addr() netip.AddrPort { return b.addr }

// String returns "ip:port", the value of the backend metrics label.
func (b *Backend) String() string { return b.name }

// PoolName is the name of the pool the backend belongs to, for the labels and
// log lines of callbacks that receive only the backend (failed dials reported
// by l4 and l7).
func (b *Backend) PoolName() string { return *b.pool.Load() }

// Source is the DNS name the backend's address came from (a hostname
// backend, an SRV or A/AAAA discovery entry), or "" for an address written
// as an IP or a template.
func (b *Backend) Source() string { return *b.source.Load() }

// Weight is the backend's share relative to the others in its pool (at least 1).
func (b *Backend) Weight() int { return int(b.weight.Load()) }

// MaxConns is the pool's max_connections_per_backend; 0 means unlimited.
func (b *Backend) MaxConns() int { return int(b.maxConns.Load()) }

// IdleMax is the pool's idle_per_worker: how many idle conns to this backend
// each worker's IdleCache keeps.
func (b *Backend) IdleMax() int { return int(b.idleMax.Load()) }

// Active is the number of reservations held right now: l4 conns, tunnels and
// in-flight plain requests, counted across all workers.
func (b *Backend) Active() int64 { return b.active.Load() }

// Idle is the number of idle conns to this backend held in all workers' IdleCaches.
func (b *Backend) Idle() int64 { return b.idle.Load() }

// FDs is the descriptor count the backend's conns are charged to (nil: none):
// a dial needs its Spare, a health check its Take.
func (b *Backend) FDs() *fdbudget.Budget { return b.fds }

// addIdle counts n idle conns more (or fewer), descriptors included.
func (b *Backend) addIdle(n int64) {
	b.idle.Add(n)
	b.fds.Add(int(n))
}

// AddIdle counts n idle conns more (or fewer), descriptors included, for an
// idle cache outside this package (l7's event loops keep their own).
func (b *Backend) AddIdle(n int64) { b.addIdle(n) }

// Context is cancelled, with cause ErrRemoved, when Reconcile drops the backend,
// so conns to it can be closed with context.AfterFunc.
func (b *Backend) Context() context.Context { return b.ctx }

// Available reports whether Pick may choose the backend now: Healthy, not
// full, and not at an agent's 0%. It is derived on every call, so there is no flag to keep in step.
func (b *Backend) Available() bool { return b.availableAt(b.now()) }

func (b *Backend) availableAt(now time.Time) bool {
	if !b.healthy(b.stamp(now)) || b.agentRefuses() {
		return false
	}
	m := b.maxConns.Load()
	return m == 0 || b.active.Load() < m
}

// Release gives back one reservation taken by Pick. Call it exactly once per
// successful Pick, when the conn, tunnel or request it covered has ended.
func (b *Backend) Release() {
	// A negative count would silently skew least_conn forever; fail loudly like
	// sync.WaitGroup does, since it can only be a double Release.
	if b.active.Add(-1) < 0 {
		panic("pool: Release without a matching Pick on " + b.name)
	}
	b.fds.Add(-1)
}

// reserve takes one reservation if the backend is healthy at now and not
// full. Checking "not full" and incrementing happen in one compare-and-swap,
// so concurrent picks from every worker never push active past maxConns.
func (b *Backend) reserve(now time.Time) bool {
	if !b.healthy(b.stamp(now)) || b.agentRefuses() {
		return false
	}
	for {
		a := b.active.Load()
		m := b.maxConns.Load()
		if m == 0 {
			b.active.Add(1)
			b.fds.Add(1)
			return true
		}
		if a >= m {
			return false
		}
		if b.active.CompareAndSwap(a, a+1) {
			b.fds.Add(1)
			return true
		}
	}
}

func (b *Backend) removed() bool { return b.ctx.Err() != nil }

// stamp turns now into the int64 the time-valued atomics hold: nanoseconds
// since the backend was built, plus one so that 0 can mean "never". Sub uses
// the monotonic clock, so a wall-clock step neither stretches an ejection nor
// freezes a ramp.
func (b *Backend) stamp(now time.Time) int64 { return int64(now.Sub(b.epoch)) + 1 }
