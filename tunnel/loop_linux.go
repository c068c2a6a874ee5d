//go:build linux

package tunnel

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wslb/wslb/fdbudget"
	"github.com/wslb/wslb/poller"
)

// loop is one event loop: one goroutine, one epoll set.
type loop struct {
	set  *poller.Set
	evfd int
	live atomic.Int64     // tunnels added and not yet ended
	fds  *fdbudget.Budget // counts epfd, evfd and every pipe

	mu      sync.Mutex
	adds    []*loopTunnel
	cancels []*loopTunnel
	closing bool
	stopped bool // evfd is closed: nobody may wake the loop
	// waiting: the loop is in, or about to enter, a wait that only the
	// eventfd ends; signaled: the eventfd was written and not yet read.
	waiting, signaled bool

	// The rest belongs to the loop goroutine.
	start  time.Time
	now    time.Duration // since start, read after each wait
	pipe   *pipe         // empty between splices
	buf    []byte        // copySize, empty between copies
	spare  []*pipe
	slots  []*loopTunnel // by slot, the id in each epoll event
	free   []int32
	ready  []*loopTunnel // directions left with bytes to read after their budget
	heap   idleHeap
	events []unix.EpollEvent
}

// wakeSlot marks the eventfd's epoll events.
const wakeSlot = -1

func newLoop(fds *fdbudget.Budget) (*loop, error) {
	set, err := poller.New()
	if err != nil {
		return nil, err
	}
	fds.Add(1)
	l := &loop{set: set, evfd: -1, fds: fds, start: time.Now(), events: make([]unix.EpollEvent, 256), buf: make([]byte, copySize)}
	if l.evfd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		l.release()
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	fds.Add(1)
	if err := set.AddLevel(l.evfd, wakeSlot); err != nil {
		l.release()
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if l.pipe, err = newPipe(fds); err != nil {
		l.release()
		return nil, err
	}
	return l, nil
}

func (l *loop) release() {
	l.set.Close()
	l.fds.Add(-1)
	l.mu.Lock()
	l.stopped = true
	if l.evfd >= 0 {
		unix.Close(l.evfd)
		l.fds.Add(-1)
	}
	l.mu.Unlock()
	if l.pipe != nil {
		l.pipe.close()
	}
	for _, p := range l.spare {
		p.close()
	}
}

var one = []byte{1, 0, 0, 0, 0, 0, 0, 0}

// wakeLocked interrupts the loop's wait; l.mu is held, so that the eventfd
// cannot have been closed (and its number reused) meanwhile. A loop that is
// not waiting (busy, or about to look at its inbox) needs no wake-up: it
// looks at the inbox before it waits again, which saves a busy loop two
// system calls per tunnel added.
func (l *loop) wakeLocked() {
	if !l.stopped && l.waiting && !l.signaled {
		l.signaled = true
		_, _ = unix.Write(l.evfd, one)
	}
}

// run waits on its poller.Set: blocking its thread in epoll_wait while it
// serves an event at a time, parked in Go's netpoller while busy (the
// package says why). Parking always was measured when the loops came in: a
// second epoll_wait per wake-up, about a quarter more CPU per GiB in bulk.
func (l *loop) run() {
	defer l.release()
	for {
		timeout := -1
		if len(l.ready) > 0 {
			timeout = 0
		} else if len(l.heap) > 0 {
			timeout = max(int((l.heap[0].deadline-l.clock()+time.Millisecond-1)/time.Millisecond), 0)
		}
		l.mu.Lock()
		queued := len(l.adds) > 0 || len(l.cancels) > 0 || l.closing
		l.waiting = !queued
		l.mu.Unlock()
		if queued {
			timeout = 0
		}
		n := l.set.Wait(l.events, timeout)
		l.mu.Lock()
		l.waiting = false
		l.mu.Unlock()
		l.now = l.clock()
		woken := false
		for _, ev := range l.events[:n] {
			if ev.Fd == wakeSlot {
				woken = true
				continue
			}
			if t := l.slots[ev.Fd]; t != nil {
				t.event(side(ev.Pad), ev.Events)
			}
		}
		l.serveReady()
		l.expire()
		// Adds run last: a slot freed by this batch must not be reused
		// while the batch may still hold events for its old tunnel.
		if (queued || woken) && l.inbox(woken) {
			return
		}
	}
}

func (l *loop) clock() time.Duration { return time.Since(l.start) }

// add queues t for the loop to register.
func (l *loop) add(t *loopTunnel) {
	l.live.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		// Never registered: its sockets are closed here, as end would.
		l.live.Add(-1)
		for _, fd := range t.fd {
			unix.Close(int(fd))
		}
		t.cause = ErrEngineClosed
		t.finish(EndCanceled, nil)
		return
	}
	l.adds = append(l.adds, t)
	l.wakeLocked()
}

// inbox registers new tunnels and ends cancelled ones, after reading the
// eventfd when it woke the loop. It reports whether
// the engine is closing, after ending every tunnel.
func (l *loop) inbox(woken bool) bool {
	l.mu.Lock()
	if woken {
		var buf [8]byte
		_, _ = unix.Read(l.evfd, buf[:])
		l.signaled = false
	}
	adds, cancels, closing := l.adds, l.cancels, l.closing
	l.adds, l.cancels = nil, nil
	l.mu.Unlock()
	for _, t := range adds {
		l.register(t)
	}
	for _, t := range cancels {
		if t.slot >= 0 { // else register ends it when its add comes
			t.canceled()
		}
	}
	if !closing {
		return false
	}
	for _, t := range l.slots {
		if t != nil {
			l.mu.Lock()
			if t.cause == nil {
				t.cause = ErrEngineClosed
			}
			l.mu.Unlock()
			t.end(EndCanceled, nil)
		}
	}
	return true
}

func (l *loop) register(t *loopTunnel) {
	if len(l.free) > 0 {
		t.slot = l.free[len(l.free)-1]
		l.free = l.free[:len(l.free)-1]
		l.slots[t.slot] = t
	} else {
		t.slot = int32(len(l.slots))
		l.slots = append(l.slots, t)
	}
	t.last, t.hidx = l.now, -1
	for s, fd := range t.fd {
		// Edge-triggered: no epoll_ctl is needed as a tunnel pauses and
		// resumes, and a socket that stays readable while its peer is full
		// wakes nobody. Adding reports the current state at once.
		if err := l.set.Add(int(fd), t.slot, int32(s)); err != nil {
			t.end(EndError, err)
			return
		}
	}
	if d := t.due(); d > 0 && (t.idle > 0 || t.pending != nil) {
		t.deadline = d
		l.heap.push(t)
	}
	l.mu.Lock()
	canceled := t.cause != nil
	l.mu.Unlock()
	if canceled {
		t.shut(EndCanceled)
	}
}

// serveReady gives another turn to directions that used their budget.
func (l *loop) serveReady() {
	ready := l.ready
	l.ready = nil
	for _, t := range ready {
		t.queued = false
		if !t.ended {
			t.progress()
		}
	}
}

// pipeSize is each pipe's capacity and the most one splice moves. Larger
// pipes mean fewer syscalls per GiB for bulk streams, and cost nothing while
// empty; F_SETPIPE_SZ may refuse it (pipe-user-pages-soft), which leaves the
// default 64 KiB.
const pipeSize = 1 << 18

// spares caps the pipes a loop keeps ready for tunnels under backpressure;
// more are closed when returned.
const spares = 16

// pipe is a kernel pipe used as the splice buffer. Its two descriptors are
// counted in fds from newPipe to close; a pipe a tunnel keeps under
// backpressure is the tunnel's to go on with, so it is counted, never refused.
type pipe struct {
	r, w int
	fds  *fdbudget.Budget
}

func newPipe(fds *fdbudget.Budget) (*pipe, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("pipe: %w", err)
	}
	fds.Add(2)
	_, _ = unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, pipeSize)
	return &pipe{r: p[0], w: p[1], fds: fds}, nil
}

func (p *pipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
	p.fds.Add(-2)
}

// errNoPipe ends a tunnel that found its loop without a pipe and could not
// make one (out of descriptors); the others keep moving.
var errNoPipe = errors.New("no pipe for splice")

// refill gives the loop an empty pipe after its own went to a tunnel.
func (l *loop) refill() bool {
	p, err := l.getPipe()
	l.pipe = p
	return err == nil
}

// getPipe returns a spare empty pipe, or a new one.
func (l *loop) getPipe() (*pipe, error) {
	if n := len(l.spare); n > 0 {
		p := l.spare[n-1]
		l.spare = l.spare[:n-1]
		return p, nil
	}
	return newPipe(l.fds)
}

// putPipe takes back an empty pipe.
func (l *loop) putPipe(p *pipe) {
	switch {
	case l.pipe == nil:
		l.pipe = p
	case len(l.spare) < spares:
		l.spare = append(l.spare, p)
	default:
		p.close()
	}
}
