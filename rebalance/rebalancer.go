package rebalance

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/pool"
)

// ErrRebalance is the cause a tunnel is stopped with to move it.
var ErrRebalance error = rebalanceError{}

type rebalanceError struct{}

func (rebalanceError) Error() string { return "closed to rebalance the pool" }

// Reason names the cause for wslb_tunnels_closed_total.
func (rebalanceError) Reason() string { return "rebalance" }

// MinAge is the youngest a tunnel may be to be moved: a client that was
// just moved is not moved again, so nothing oscillates.
const MinAge = 10 * time.Second

// Rebalancer rebalances one pool for one configuration generation: cmd/wslb
// makes one per pool with the pool's settings and runs it until the next
// reload replaces it, so a reload applies new settings at once. Set the
// fields before Run.
type Rebalancer struct {
	// Pool returns the pool as it is now (discovery may replace it within
	// a generation); required. Tunnel ages are read on its clock.
	Pool func() *pool.Pool
	// Config is the pool's rebalance block.
	Config config.Rebalance
	// MinAge overrides the package's MinAge when positive; for tests.
	MinAge time.Duration
	// Log gets a line for each Now and each step that moved tunnels; nil
	// is silent.
	Log *slog.Logger

	once sync.Once
	kick chan struct{}
	mu   sync.Mutex // one step at a time, so two never share a second's rate
	// forced is set by Now: the loop steps until the pool is balanced,
	// whether or not Config.Enabled.
	forced bool
	// moving holds the backends that were over and are shedding tunnels
	// down to their share (Load.Moving).
	moving map[*pool.Backend]bool
}

func (r *Rebalancer) init() { r.once.Do(func() { r.kick = make(chan struct{}, 1) }) }

func (r *Rebalancer) minAge() time.Duration {
	if r.MinAge > 0 {
		return r.MinAge
	}
	return MinAge
}

// Run steps once a second while Config.Enabled, or after Now until the
// pool is balanced, and returns when ctx is done. A pool with rebalancing
// off costs a goroutine waiting on Now, no timer.
func (r *Rebalancer) Run(ctx context.Context) {
	r.init()
	t := time.NewTicker(time.Second)
	t.Stop()
	ticking := false
	defer t.Stop()
	for {
		want := r.Config.Enabled || r.isForced()
		if want != ticking {
			if want {
				t.Reset(time.Second)
			} else {
				t.Stop()
			}
			ticking = want
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.kick:
			if ticking {
				continue // the next tick steps: two steps in a second would pass the rate
			}
		}
		r.Step()
	}
}

func (r *Rebalancer) isForced() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.forced
}

// Now starts rebalancing the pool as the loop would, even with
// Config.Enabled false, and returns how many tunnels the pool needs moved
// now; Run moves them at Config.Rate per second, the first at once.
func (r *Rebalancer) Now() int {
	r.init()
	r.mu.Lock()
	n := 0
	for _, k := range Plan(r.loadsOf(r.Pool().Backends()), r.Config.Tolerance) {
		n += k
	}
	r.forced = n > 0
	r.mu.Unlock()
	if n > 0 {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
	r.log("rebalance requested", "moves", n)
	return n
}

// Step closes one second's worth of the tunnels Plan says to move (at most
// Config.Rate) and returns how many it closed. Run calls it; a simulation
// calls it on a clock of its own.
func (r *Rebalancer) Step() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	bs := r.Pool().Backends()
	want := Plan(r.loadsOf(bs), r.Config.Tolerance)
	moving := map[*pool.Backend]bool{}
	for i, n := range want {
		if n > 0 {
			moving[bs[i]] = true
		}
	}
	r.moving = moving
	closes := Limit(want, max(r.Config.Rate, 1))
	moved := 0
	for i, n := range closes {
		moved += bs[i].CloseYoungest(n, r.minAge(), ErrRebalance)
	}
	if moved == 0 {
		// Balanced, or only tunnels too young to move are left over: a
		// Now is done either way (the loop goes on if enabled).
		r.forced = false
	} else {
		r.log("rebalance: tunnels closed", "moved", moved)
	}
	return moved
}

func (r *Rebalancer) loadsOf(bs []*pool.Backend) []Load {
	loads := make([]Load, len(bs))
	for i, b := range bs {
		loads[i] = Load{Tunnels: b.Tunnels(), Weight: b.Weight(), Available: b.Healthy(), Moving: r.moving[b]}
	}
	return loads
}

func (r *Rebalancer) log(msg string, args ...any) {
	if r.Log != nil {
		name := r.Pool().Name()
		r.Log.Info(msg, append([]any{"pool", name}, args...)...)
	}
}
