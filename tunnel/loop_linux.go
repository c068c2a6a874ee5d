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
	in   *poller.Inbox[note]
	live atomic.Int64     // tunnels added and not yet ended
	fds  *fdbudget.Budget // counts epfd, the inbox's eventfd and every pipe

	// mu guards each tunnel's cause and its graceful close's cut, which
	// other goroutines set.
	mu sync.Mutex

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

// note is what the loop's inbox holds: a tunnel to register, or one to
// cancel (a stop, a cause or a cut set under l.mu).
type note struct {
	t      *loopTunnel
	cancel bool
}

func newLoop(fds *fdbudget.Budget) (*loop, error) {
	set, err := poller.New()
	if err != nil {
		return nil, err
	}
	fds.Add(1)
	l := &loop{set: set, fds: fds, start: time.Now(), events: make([]unix.EpollEvent, 256), buf: make([]byte, copySize)}
	if l.in, err = poller.NewInbox[note](set); err != nil {
		l.release()
		return nil, err
	}
	fds.Add(1)
	if l.pipe, err = newPipe(fds); err != nil {
		l.release()
		return nil, err
	}
	return l, nil
}

func (l *loop) release() {
	l.set.Close()
	l.fds.Add(-1)
	if l.in != nil {
		l.in.Release()
		l.fds.Add(-1)
	}
	if l.pipe != nil {
		l.pipe.close()
	}
	for _, p := range l.spare {
		p.close()
	}
}

// close ends every tunnel and stops the loop; run returns once it has.
func (l *loop) close() { l.in.Stop() }

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
		evs, queued := l.in.Wait(l.events, timeout)
		l.now = l.clock()
		for _, ev := range evs {
			if t := l.slots[ev.Fd]; t != nil {
				t.event(side(ev.Pad), ev.Events)
			}
		}
		l.serveReady()
		l.expire()
		// Adds run last: a slot freed by this batch must not be reused
		// while the batch may still hold events for its old tunnel.
		if queued && l.inbox() {
			return
		}
	}
}

func (l *loop) clock() time.Duration { return time.Since(l.start) }

// add queues t for the loop to register.
func (l *loop) add(t *loopTunnel) {
	l.live.Add(1)
	if l.in.Put(note{t: t}) {
		return
	}
	// Never registered: its sockets are closed here, as end would.
	l.live.Add(-1)
	for _, fd := range t.fd {
		unix.Close(int(fd))
	}
	l.mu.Lock()
	t.cause = ErrEngineClosed
	l.mu.Unlock()
	t.finish(EndCanceled, nil)
}

// inbox registers new tunnels and ends cancelled ones, in the order they
// came. It reports whether the engine is closing, after ending every tunnel.
func (l *loop) inbox() bool {
	notes, closing := l.in.Take()
	for _, n := range notes {
		switch {
		case !n.cancel:
			l.register(n.t)
		case n.t.slot >= 0: // else register ends it when its add comes
			n.t.canceled()
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
