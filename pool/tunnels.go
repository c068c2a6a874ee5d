package pool

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// ErrMaxAge is the cause a tunnel is stopped with when it reaches its
// max_connection_age.
var ErrMaxAge error = maxAgeError{}

type maxAgeError struct{}

func (maxAgeError) Error() string { return "max connection age reached" }

// Reason names the cause for wslb_tunnels_closed_total.
func (maxAgeError) Reason() string { return "max_age" }

// Tunnel is one established tunnel or l4 conn to a backend as the
// backend's registry holds it: when it opened and how to end it. The
// registry is what rebalancing, max_connection_age and a backend's maint
// state end tunnels through.
//
// Its life: Track makes it, Started lists it with the tunnel's stop func,
// Ended takes it off when the tunnel has ended, whichever of the two comes
// first. Only a Started tunnel can be closed, so a stop func is always
// there to call.
type Tunnel struct {
	b          *Backend
	prev, next *Tunnel // in b's list, oldest first; nil when not listed
	opened     int64   // b's stamp at Started
	stop       func(error)
	age        *time.Timer // max_connection_age; nil when off
	state      uint8
}

// A Tunnel's states. Only a listed one is counted and can be closed, so a
// tunnel being closed is not counted again while its graceful close runs.
const (
	tunnelNew uint8 = iota
	tunnelListed
	tunnelClosing // taken off the list and stopped
	tunnelEnded
)

// tunnels is a backend's registry: an intrusive list, oldest first, so that
// adding, removing and finding the youngest cost no allocation or scan and an
// idle tunnel costs one small struct.
type tunnels struct {
	mu         sync.Mutex
	head, tail *Tunnel
	n          int
	// retired: the backend's removal has closed every tunnel it had, and
	// closes any that opens from now on at once.
	retired bool
}

// Track returns the handle of a tunnel to b that is about to start; call
// Started with its stop func once it has, and Ended when it has ended.
func (b *Backend) Track() *Tunnel { return &Tunnel{b: b} }

// Started lists t in its backend's registry, opened now, with stop, the
// func that ends the tunnel with a cause, and arms its max_connection_age
// (the pool's setting when the tunnel opens, ±10% so that tunnels opened
// together do not all close together). After Ended it does nothing; on a
// backend whose retirement is over it stops the tunnel at once.
func (t *Tunnel) Started(stop func(cause error)) {
	b := t.b
	r := &b.tunnels
	r.mu.Lock()
	if t.state != tunnelNew {
		r.mu.Unlock()
		return
	}
	if r.retired {
		t.state = tunnelClosing
		r.mu.Unlock()
		stop(ErrRemoved)
		return
	}
	defer r.mu.Unlock()
	t.state, t.stop, t.opened = tunnelListed, stop, b.stamp(b.now())
	t.prev, r.tail = r.tail, t
	if t.prev != nil {
		t.prev.next = t
	} else {
		r.head = t
	}
	r.n++
	if age := b.maxAge.Load(); age > 0 {
		t.age = time.AfterFunc(jitter(time.Duration(age)), func() { t.close(ErrMaxAge) })
	}
}

// jitter returns d ±10%, uniformly.
func jitter(d time.Duration) time.Duration {
	return d - d/10 + rand.N(d/5+1)
}

// Ended takes t off the registry, for good: call it when the tunnel has
// ended, however it ended.
func (t *Tunnel) Ended() {
	r := &t.b.tunnels
	r.mu.Lock()
	defer r.mu.Unlock()
	if t.state == tunnelListed {
		r.unlink(t)
	}
	t.state = tunnelEnded
	if t.age != nil {
		t.age.Stop()
	}
	t.stop = nil
}

// close stops t with cause unless it is already closing or ended.
func (t *Tunnel) close(cause error) {
	r := &t.b.tunnels
	r.mu.Lock()
	if t.state != tunnelListed {
		r.mu.Unlock()
		return
	}
	stop := r.take(t)
	r.mu.Unlock()
	stop(cause)
}

// take unlists t as being closed and returns its stop func; r.mu is held.
func (r *tunnels) take(t *Tunnel) func(error) {
	r.unlink(t)
	t.state = tunnelClosing
	return t.stop
}

func (r *tunnels) unlink(t *Tunnel) {
	if t.prev != nil {
		t.prev.next = t.next
	} else {
		r.head = t.next
	}
	if t.next != nil {
		t.next.prev = t.prev
	} else {
		r.tail = t.prev
	}
	t.prev, t.next = nil, nil
	r.n--
}

// Tunnels is the number of b's tunnels and l4 conns that are established
// and not being closed by wslb.
func (b *Backend) Tunnels() int {
	b.tunnels.mu.Lock()
	defer b.tunnels.mu.Unlock()
	return b.tunnels.n
}

// CloseYoungest stops up to n of b's most recently opened tunnels that are
// at least minAge old, with cause, and returns how many it stopped. The
// youngest have the least state to lose, and sparing those under minAge
// keeps a client that was just moved from being moved again.
func (b *Backend) CloseYoungest(n int, minAge time.Duration, cause error) int {
	if n <= 0 {
		return 0
	}
	r := &b.tunnels
	newest := b.stamp(b.now()) - int64(minAge)
	var stops []func(error)
	r.mu.Lock()
	t := r.tail
	for t != nil && t.opened > newest {
		t = t.prev
	}
	for t != nil && len(stops) < n {
		prev := t.prev
		stops = append(stops, r.take(t))
		t = prev
	}
	r.mu.Unlock()
	// Outside the lock: a stop may end its tunnel, whose Ended takes it.
	for _, stop := range stops {
		stop(cause)
	}
	return len(stops)
}

// CloseAll stops every tunnel b has now, with cause, one at a time spread
// evenly over spread (the i-th of n at i·spread/n), so that their clients
// reconnect in a trickle; this is how a backend put in maint ends its
// tunnels. It returns how many it stopped, early when ctx is done. Tunnels
// that open meanwhile are left alone: a backend being emptied takes no new
// conns.
func (b *Backend) CloseAll(ctx context.Context, spread time.Duration, cause error) int {
	n := b.Tunnels()
	start := time.Now()
	closed := 0
	for i := range n {
		if d := start.Add(spread * time.Duration(i) / time.Duration(n)).Sub(time.Now()); d > 0 {
			wait := time.NewTimer(d)
			select {
			case <-ctx.Done():
				wait.Stop()
				return closed
			case <-wait.C:
			}
		}
		if !b.closeOldest(cause) {
			break // the rest ended by themselves
		}
		closed++
	}
	return closed
}

// closeSpread is CloseAll, then the tunnels that opened meanwhile: their
// conns were picked before b was held or removed, so they belong to the same
// close. With final (a removal), every tunnel that opens from then on is
// stopped as it opens.
func (b *Backend) closeSpread(ctx context.Context, spread time.Duration, cause error, final bool) {
	b.CloseAll(ctx, spread, cause)
	r := &b.tunnels
	for ctx.Err() == nil {
		r.mu.Lock()
		t := r.head
		if t == nil {
			r.retired = final
			r.mu.Unlock()
			return
		}
		stop := r.take(t)
		r.mu.Unlock()
		stop(cause)
	}
}

// closeOldest stops b's oldest tunnel with cause, if it has one.
func (b *Backend) closeOldest(cause error) bool {
	r := &b.tunnels
	r.mu.Lock()
	t := r.head
	if t == nil {
		r.mu.Unlock()
		return false
	}
	stop := r.take(t)
	r.mu.Unlock()
	stop(cause)
	return true
}
