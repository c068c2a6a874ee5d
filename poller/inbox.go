//go:build linux

package poller

import (
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// Inbox is how other goroutines hand work to an event loop: a queue under a
// mutex, and an eventfd in the loop's Set that ends its wait. Put, Stop and
// Release's closing of the eventfd share the mutex; the loop's goroutine
// owns Wait, Take and Release.
//
// A loop that is not waiting gets no wake-up: it looks at the queue before
// it waits again (Wait), so the eventfd is written only when the loop is in,
// or about to enter, a wait that only the eventfd ends. That saves a busy
// loop two system calls (the write and the read) per item put.
type Inbox[T any] struct {
	set  *Set
	evfd int

	mu       sync.Mutex
	q, spare []T // spare: the slice Take returned last, reused by the next
	closing  bool
	stopped  bool // evfd is closed: nobody may write it
	// waiting: the loop is in, or about to enter, a wait that only the
	// eventfd ends; signaled: the eventfd was written and not yet read.
	waiting, signaled bool
}

// wakeSlot marks the eventfd's epoll events; a loop's own slots are >= 0.
const wakeSlot = -1

// NewInbox creates an inbox whose eventfd set's waits report.
func NewInbox[T any](set *Set) (*Inbox[T], error) {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	// Level-triggered: a write the loop has not read yet ends every wait
	// until it is read, however the wait and the write interleave.
	if err := set.AddLevel(fd, wakeSlot); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	return &Inbox[T]{set: set, evfd: fd}, nil
}

// Put queues x for the loop, from any goroutine, and wakes the loop if it
// waits. It reports false, having queued nothing, once Stop was called: the
// loop may have taken its last items already.
func (in *Inbox[T]) Put(x T) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closing {
		return false
	}
	in.q = append(in.q, x)
	in.wakeLocked()
	return true
}

// Stop asks the loop to stop, from any goroutine: its next Take reports it,
// with the last items put, and Put refuses from now on.
func (in *Inbox[T]) Stop() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.closing = true
	in.wakeLocked()
}

var wakeOne = [8]byte{1}

// wakeLocked ends the loop's wait. in.mu is held, so that the eventfd
// cannot have been closed (and its number reused) meanwhile.
func (in *Inbox[T]) wakeLocked() {
	if !in.stopped && in.waiting && !in.signaled {
		in.signaled = true
		_, _ = unix.Write(in.evfd, wakeOne[:])
	}
}

// Wait is Set.Wait for the loop's goroutine, up to timeout ms (-1: no
// limit), or not at all when items are queued already. It returns the
// events, the eventfd's own left out, and whether the loop must Take: items
// were queued before the wait or put during it. The loop takes them after
// serving the events, so that a slot the events free is not reused while
// the batch may still hold events for its old owner.
func (in *Inbox[T]) Wait(events []unix.EpollEvent, timeout int) ([]unix.EpollEvent, bool) {
	// waiting is published under the mutex, with the queue looked at in
	// the same hold: a Put either comes before (and the wait does not
	// block) or sees waiting and writes the eventfd.
	in.mu.Lock()
	queued := len(in.q) > 0 || in.closing
	in.waiting = !queued
	in.mu.Unlock()
	if queued {
		timeout = 0
	}
	evs := events[:in.set.Wait(events, timeout)]
	in.mu.Lock()
	in.waiting = false
	woken := in.signaled
	if woken {
		var buf [8]byte
		_, _ = unix.Read(in.evfd, buf[:])
		in.signaled = false
	}
	in.mu.Unlock()
	for i := range evs {
		if evs[i].Fd == wakeSlot {
			evs = append(evs[:i], evs[i+1:]...)
			break // level-triggered, registered once: one at most
		}
	}
	return evs, queued || woken
}

// Take returns the items put since the last Take, in the order they were
// put, and whether Stop was called. The slice is the loop's until its next
// Take, which reuses it.
func (in *Inbox[T]) Take() ([]T, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	q := in.q
	clear(in.spare) // let go of the last batch
	in.q, in.spare = in.spare[:0], q
	return q, in.closing
}

// Release closes the eventfd, under the mutex so that nobody writes a
// descriptor number the process may have reused; Put refuses from now on.
// The loop calls it as it stops; a second call does nothing.
func (in *Inbox[T]) Release() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.stopped {
		return
	}
	in.closing, in.stopped = true, true
	unix.Close(in.evfd)
	clear(in.q)
	clear(in.spare)
}
