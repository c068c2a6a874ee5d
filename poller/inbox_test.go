//go:build linux

package poller

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wslb/wslb/internal/wait"
)

// newTestInbox returns an inbox on a fresh epoll set, both closed when the
// test ends.
func newTestInbox(t *testing.T) *Inbox[int] {
	t.Helper()
	set, err := New()
	if err != nil {
		t.Fatal(err)
	}
	in, err := NewInbox[int](set)
	if err != nil {
		set.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Release()
		set.Close()
	})
	return in
}

// waited is what one Wait returned.
type waited struct {
	evs   []unix.EpollEvent
	drain bool
}

// waitOn runs Wait (no time limit) on another goroutine and returns what it
// returned, failing the test if it still waits after 5 s.
func waitOn(t *testing.T, in *Inbox[int]) waited {
	t.Helper()
	got := make(chan waited, 1)
	go func() {
		evs, drain := in.Wait(make([]unix.EpollEvent, 8), -1)
		got <- waited{evs, drain}
	}()
	select {
	case w := <-got:
		return w
	case <-time.After(wait.Timeout):
		t.Fatalf("Wait still waiting after %v", wait.Timeout)
		return waited{}
	}
}

// eventfdWritten reports whether the inbox's eventfd holds an unread write,
// reading it if so.
func eventfdWritten(t *testing.T, in *Inbox[int]) bool {
	t.Helper()
	var buf [8]byte
	_, err := unix.Read(in.evfd, buf[:])
	if err != nil && !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("read eventfd: %v", err)
	}
	return err == nil
}

func (in *Inbox[T]) isWaiting() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.waiting
}

// TestInboxWakesAWaitingLoop: a Put from another goroutine ends a wait with
// no time limit, and Wait reads the eventfd and leaves its event out.
func TestInboxWakesAWaitingLoop(t *testing.T) {
	in := newTestInbox(t)
	got := make(chan waited, 1)
	go func() {
		evs, drain := in.Wait(make([]unix.EpollEvent, 8), -1)
		got <- waited{evs, drain}
	}()
	wait.For(t, "the loop to wait", in.isWaiting)
	if !in.Put(1) {
		t.Fatal("Put refused before Stop")
	}
	var w waited
	select {
	case w = <-got:
	case <-time.After(wait.Timeout):
		t.Fatalf("Put did not end the wait within %v", wait.Timeout)
	}
	if len(w.evs) != 0 || !w.drain {
		t.Fatalf("Wait = %v, %v; want no events and drain", w.evs, w.drain)
	}
	if eventfdWritten(t, in) {
		t.Error("Wait left the eventfd unread")
	}
	if q, closing := in.Take(); len(q) != 1 || q[0] != 1 || closing {
		t.Errorf("Take = %v, %v; want [1], false", q, closing)
	}
}

// TestInboxBusyLoopGetsNoWakeup: items put while the loop is not waiting
// write no eventfd; the loop's next Wait does not block and says to Take.
func TestInboxBusyLoopGetsNoWakeup(t *testing.T) {
	in := newTestInbox(t)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() { in.Put(i) })
	}
	wait.Group(t, "Put", &wg)
	if eventfdWritten(t, in) {
		t.Error("Put wrote the eventfd of a loop that was not waiting")
	}
	w := waitOn(t, in)
	if len(w.evs) != 0 || !w.drain {
		t.Fatalf("Wait = %v, %v; want no events and drain", w.evs, w.drain)
	}
	if q, _ := in.Take(); len(q) != 3 {
		t.Errorf("Take = %v; want the 3 items put", q)
	}
	if q, _ := in.Take(); len(q) != 0 {
		t.Errorf("second Take = %v; want nothing", q)
	}
}

// TestInboxEventsBesideTheWakeup: a socket's event in the same batch as the
// eventfd's comes out of Wait alone, and the eventfd is read.
func TestInboxEventsBesideTheWakeup(t *testing.T) {
	in := newTestInbox(t)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	const slot = 7
	if err := in.set.Add(fds[0], slot, 3); err != nil {
		t.Fatal(err)
	}
	// A wait about to begin, as Wait publishes it: the Put writes the
	// eventfd, and the next wait finds both it and the socket ready.
	in.mu.Lock()
	in.waiting = true
	in.mu.Unlock()
	in.Put(1)
	if _, err := unix.Write(fds[1], []byte("x")); err != nil {
		t.Fatal(err)
	}
	w := waitOn(t, in)
	if len(w.evs) != 1 || w.evs[0].Fd != slot || w.evs[0].Pad != 3 || !w.drain {
		t.Fatalf("Wait = %+v, %v; want one event for slot %d and drain", w.evs, w.drain, slot)
	}
	if eventfdWritten(t, in) {
		t.Error("Wait left the eventfd unread")
	}
	if q, _ := in.Take(); len(q) != 1 {
		t.Errorf("Take = %v; want [1]", q)
	}
	// Edge-triggered: the socket reports nothing more, and with nothing
	// queued or written the wait times out empty.
	if evs, drain := in.Wait(make([]unix.EpollEvent, 8), 0); len(evs) != 0 || drain {
		t.Errorf("Wait after Take = %+v, %v; want nothing", evs, drain)
	}
}

// TestInboxLosesNoWakeup: producers put while the loop alternates between
// serving and waiting with no time limit; a lost wake-up would leave it
// waiting forever. Every item arrives, each producer's in order.
func TestInboxLosesNoWakeup(t *testing.T) {
	in := newTestInbox(t)
	const producers, each = 4, 2000
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range each {
				in.Put(p*each + i)
			}
		})
	}
	done := make(chan error, 1)
	go func() {
		events := make([]unix.EpollEvent, 8)
		last := [producers]int{-1, -1, -1, -1}
		n := 0
		for n < producers*each {
			if _, drain := in.Wait(events, -1); !drain {
				continue
			}
			q, _ := in.Take()
			for _, x := range q {
				p, i := x/each, x%each
				if i <= last[p] {
					done <- errors.New("an item came out of order")
					return
				}
				last[p] = i
			}
			n += len(q)
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wait.Timeout):
		t.Fatalf("the loop still waits after %v: a wake-up was lost", wait.Timeout)
	}
	wait.Group(t, "producers", &wg)
}

// TestInboxStopWhilePutting: Stop races with Puts; every Put that was not
// refused reaches the loop's Takes, Stop ends the loop, and after Release
// Put is refused without touching the closed eventfd.
func TestInboxStopWhilePutting(t *testing.T) {
	in := newTestInbox(t)
	const producers, each = 4, 1000
	var accepted atomic.Int64
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range each {
				if p == 0 && i == each/2 {
					in.Stop() // while the others put
				}
				if in.Put(i) {
					accepted.Add(1)
				}
			}
		})
	}
	taken := make(chan int, 1)
	go func() {
		events := make([]unix.EpollEvent, 8)
		n := 0
		for {
			if _, drain := in.Wait(events, -1); !drain {
				continue
			}
			q, closing := in.Take()
			n += len(q)
			if closing {
				taken <- n
				return
			}
		}
	}()
	var n int
	select {
	case n = <-taken:
	case <-time.After(wait.Timeout):
		t.Fatalf("the loop did not stop within %v", wait.Timeout)
	}
	wait.Group(t, "producers", &wg)
	if int64(n) != accepted.Load() {
		t.Errorf("the loop took %d items; Put accepted %d", n, accepted.Load())
	}
	if in.Put(1) {
		t.Error("Put accepted an item after Stop")
	}
	in.Release()
	in.mu.Lock()
	in.waiting = true // as if a wait began: still no write to the closed fd
	in.mu.Unlock()
	if in.Put(1) {
		t.Error("Put accepted an item after Release")
	}
}
