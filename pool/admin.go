package pool

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// Admin is a backend's operator state, set through the admin API or by the
// backend's agent: whether it takes new conns and what becomes of the ones
// it has. It is independent of the health state (State): a backend in drain
// is still checked, and shows both.
type Admin int32

// The admin states. The zero value is AdminReady, so a new backend (one a
// reload adds, or re-adds after removing it) takes conns.
const (
	// AdminReady: normal.
	AdminReady Admin = iota
	// AdminDrain: no new conns; the established ones run on.
	AdminDrain
	// AdminMaint: no new conns; the established ones are closed gracefully,
	// spread over shutdown.close_spread.
	AdminMaint
)

// Admins lists every admin state in order, for the series of
// wslb_backend_state and for messages that name the valid words.
var Admins = []Admin{AdminReady, AdminDrain, AdminMaint}

// String is the state's word: "ready", "drain" or "maint".
func (a Admin) String() string {
	switch a {
	case AdminDrain:
		return "drain"
	case AdminMaint:
		return "maint"
	default:
		return "ready"
	}
}

// ParseAdmin reads an admin state word as String writes it.
func ParseAdmin(s string) (Admin, error) {
	for _, a := range Admins {
		if s == a.String() {
			return a, nil
		}
	}
	return AdminReady, fmt.Errorf("unknown backend state %q: use ready, drain or maint", s)
}

// ErrMaint is the cause a tunnel is stopped with when its backend is put in
// maint.
var ErrMaint error = maintError{}

type maintError struct{}

func (maintError) Error() string { return "backend in maint" }

// Reason names the cause for wslb_tunnels_closed_total.
func (maintError) Reason() string { return "maint" }

// adminState is a backend's Admin and the maint close it may be running.
type adminState struct {
	mu    sync.Mutex
	state Admin
	// stop ends the maint close still spreading, and waits for it; nil
	// when none runs.
	stop func()
	// spread is shutdown.close_spread, set by SetCloseSpread and Reconcile.
	spread time.Duration
}

// Admin is the backend's operator state.
func (b *Backend) Admin() Admin {
	b.admin.mu.Lock()
	defer b.admin.mu.Unlock()
	return b.admin.state
}

// SetAdmin puts b in state a and returns the state it was in. Drain and maint
// hold b (Pick skips it; HoldAdmin); entering maint starts closing b's
// tunnels gracefully with ErrMaint, the i-th of n at i·spread/n, and leaving
// maint stops a close still spreading, so the tunnels not yet closed run on.
// The close stops too when a reload removes b: its retirement takes over.
func (b *Backend) SetAdmin(a Admin) (prev Admin) {
	s := &b.admin
	s.mu.Lock()
	defer s.mu.Unlock()
	prev, s.state = s.state, a
	b.SetHold(HoldAdmin, a != AdminReady)
	if a == prev {
		return prev
	}
	if s.stop != nil {
		s.stop()
		s.stop = nil
	}
	if a == AdminMaint {
		s.stop = b.startMaint(s.spread)
	}
	return prev
}

// startMaint closes b's tunnels in a goroutine that SetAdmin owns: the func
// it returns cancels the close and waits for it to return.
func (b *Backend) startMaint(spread time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.closeSpread(ctx, spread, ErrMaint, false)
	}()
	return func() {
		cancel()
		<-done
	}
}

// SetCloseSpread sets shutdown.close_spread on every backend of p: the
// window over which a backend put in maint closes its tunnels. Reconcile
// sets it from its Retire as well.
func (p *Pool) SetCloseSpread(d time.Duration) {
	for _, b := range p.backends {
		b.setCloseSpread(d)
	}
}

func (b *Backend) setCloseSpread(d time.Duration) {
	b.admin.mu.Lock()
	defer b.admin.mu.Unlock()
	b.admin.spread = max(d, 0)
}

// Backend finds the backend at addr ("ip:port" as Backend.String writes
// it, or any spelling netip.ParseAddrPort accepts).
func (p *Pool) Backend(addr string) (*Backend, bool) {
	for _, b := range p.backends {
		if b.name == addr {
			return b, true
		}
	}
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		for _, b := range p.backends {
			if b.addr == ap || b.addr.Addr().Unmap() == ap.Addr().Unmap() && b.addr.Port() == ap.Port() {
				return b, true
			}
		}
	}
	return nil, false
}
