package pool

import (
	"context"
	"net/netip"
	"sync/atomic"

	"github.com/wslb/wslb/config"
)

// Backend is one server of a pool together with the state every worker shares:
// its reservation count, its health, its idle-conn count and its lifetime.
// Reconcile hands the same *Backend to the next Pool while its address stays,
// so nothing here points back at a Pool, and the settings a reload may change
// (weight, limits) are atomics rather than plain fields.
type Backend struct {
	addr netip.AddrPort
	name string // addr.String() computed once: it is a metrics label fetched per conn

	weight   atomic.Int64
	maxConns atomic.Int64
	idleMax  atomic.Int64

	active atomic.Int64
	idle   atomic.Int64
	up     atomic.Bool

	ctx    context.Context
	cancel context.CancelCauseFunc
}

func newBackend(c config.Backend, p config.Pool) *Backend {
	// The lifetime is not derived from any caller's ctx: a backend lives until a
	// reload removes it, however long the pool that first built it is kept.
	ctx, cancel := context.WithCancelCause(context.Background())
	b := &Backend{addr: c.Addr, name: c.Addr.String(), ctx: ctx, cancel: cancel}
	b.up.Store(true)
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
}

// Addr is the backend's resolved address.
func (b *Backend) Addr() netip.AddrPort { return b.addr }

// String returns "ip:port", the value of the backend metrics label.
func (b *Backend) String() string { return b.name }

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

// Up reports the health state last set by SetUp; backends start up.
func (b *Backend) Up() bool { return b.up.Load() }

// SetUp records the health verdict; a down backend is skipped by Pick.
func (b *Backend) SetUp(up bool) { b.up.Store(up) }

// Context is cancelled, with cause ErrRemoved, when Reconcile drops the backend,
// so conns to it can be closed with context.AfterFunc.
func (b *Backend) Context() context.Context { return b.ctx }

// Available reports whether Pick may choose the backend: up, not removed and not
// full. It is derived on every call, so there is no flag to keep in step.
func (b *Backend) Available() bool {
	if !b.Up() || b.removed() {
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
}

// reserve takes one reservation if the backend is available. Checking "not full"
// and incrementing happen in one compare-and-swap, so concurrent picks from
// every worker never push active past maxConns.
func (b *Backend) reserve() bool {
	if !b.Up() || b.removed() {
		return false
	}
	for {
		a := b.active.Load()
		m := b.maxConns.Load()
		if m == 0 {
			b.active.Add(1)
			return true
		}
		if a >= m {
			return false
		}
		if b.active.CompareAndSwap(a, a+1) {
			return true
		}
	}
}

func (b *Backend) removed() bool { return b.ctx.Err() != nil }
