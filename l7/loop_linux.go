//go:build linux

package l7

import (
	"bytes"
	"container/heap"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wslb/wslb/poller"
	"github.com/wslb/wslb/pool"
)

// The event loop serves kept-alive plain requests without Go's netpoller.
// On a goroutine, every request costs a read that returns EAGAIN on the
// backend conn, a park, a netpoller wake-up that is often a thread hand-off
// (futex, context switch) and the read again, plus a liveness probe of the
// cached backend conn (docs/performance.md). Here a worker's kept-alive
// client conns and its cached backend conns sit in one epoll set,
// edge-triggered, owned by one goroutine that reads a socket only when epoll
// says it has bytes: a request is one read, one write to the backend, one
// read of the answer and one write to the client. A cached backend conn
// that the backend closes (or writes to) reports it while it idles, so it
// is dropped before anyone takes it, without a probe.
//
// Only the common case runs here: a request without a body, routed to a pool
// of plain-TCP backends, answered by a response that arrives whole within
// maxLoopResponse. Anything else goes back to a goroutine (loophand_linux.go)
// at the point where the loop stops, and the goroutine path serves it
// exactly as it serves a conn that never left it. The heads are still parsed
// by net/http (readRequest, http.ReadResponse) over the bytes read.

// evLoop is one worker's event loop: one goroutine, one epoll set.
type evLoop struct {
	w    *worker
	set  *poller.Set
	in   *poller.Inbox[note]
	done chan struct{}

	// The rest belongs to the loop goroutine.
	start  time.Time
	now    time.Duration // since start, read after each wait
	slots  []loopFD      // by slot, the id in each epoll event
	free   []int32
	freed  []int32 // slots freed by the batch being served: reusable after it
	timers timerHeap
	events []unix.EpollEvent
	rbuf   []byte
	idle   map[*pool.Backend][]*loopBackend
	// idleStop ends the watch that purges a backend's idle conns when it
	// is removed.
	idleStop map[*pool.Backend]func() bool
	// src is what the head being parsed is read from; head is where a
	// request head for a backend is written.
	src  bytes.Reader
	head bytes.Buffer
}

// readiness is what epoll said of a socket, kept between its edges: a read
// or write that finds nothing to do clears readable or writable until the
// next edge.
type readiness struct {
	readable bool // bytes, the peer's close or an error wait for a read
	writable bool // room, or an error a write will report
	rdhup    bool // the peer shut down its side: an EOF waits behind the data
	errored  bool // EPOLLERR or EPOLLHUP: a connect's outcome is read, not assumed
}

// note adds what the event ev says.
func (r *readiness) note(ev uint32) {
	r.readable = r.readable || ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0
	r.writable = r.writable || ev&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0
	r.rdhup = r.rdhup || ev&(unix.EPOLLRDHUP|unix.EPOLLHUP) != 0
	r.errored = r.errored || ev&(unix.EPOLLHUP|unix.EPOLLERR) != 0
}

// loopFD is what a slot holds: a client conn or a backend conn.
type loopFD interface{ event(ev uint32) }

// note is what the loop's inbox holds: a conn to register (add) or to end
// (cancel), or a removed backend whose idle conns must go (purge).
type note struct {
	lc     *loopConn
	cancel bool
	purge  *pool.Backend
}

// loopReadSize is the loop's read buffer: a head or an answer read in one
// call, most of the time.
const loopReadSize = 64 << 10

func newEvLoop(w *worker) (*evLoop, error) {
	set, err := poller.New()
	if err != nil {
		return nil, err
	}
	in, err := poller.NewInbox[note](set)
	if err != nil {
		set.Close()
		return nil, err
	}
	w.px.FDs.Add(2)
	return &evLoop{
		w: w, set: set, in: in, done: make(chan struct{}), start: time.Now(),
		events: make([]unix.EpollEvent, 256), rbuf: make([]byte, loopReadSize),
		idle: map[*pool.Backend][]*loopBackend{}, idleStop: map[*pool.Backend]func() bool{},
	}, nil
}

// run serves events until close, waiting on its poller.Set, which says how
// a loop waits without fighting Go's scheduler.
func (l *evLoop) run() {
	defer close(l.done)
	defer l.release()
	for {
		evs, queued := l.in.Wait(l.events, l.timeout())
		l.now = l.clock()
		for _, ev := range evs {
			if h := l.slots[ev.Fd]; h != nil {
				h.event(ev.Events)
			}
		}
		l.expire()
		// A slot freed by this batch is reused only after it: the batch may
		// still hold events for its old owner.
		l.free = append(l.free, l.freed...)
		l.freed = l.freed[:0]
		if queued && l.inbox() {
			return
		}
	}
}

// timeout is how long a wait may last: until the first deadline, or -1.
func (l *evLoop) timeout() int {
	if len(l.timers) == 0 {
		return -1
	}
	return max(int((l.timers[0].deadline-l.clock()+time.Millisecond-1)/time.Millisecond), 0)
}

func (l *evLoop) clock() time.Duration { return time.Since(l.start) }

// add queues lc for the loop to register, or ends it when the loop is
// closing.
func (l *evLoop) add(lc *loopConn) {
	if !l.in.Put(note{lc: lc}) {
		lc.end()
	}
}

// cancel asks the loop to end lc (a drain), from any goroutine. Refused
// once the loop is closing, which ends lc anyway.
func (l *evLoop) cancel(lc *loopConn) { l.in.Put(note{lc: lc, cancel: true}) }

// close stops the loop and waits for it. The worker calls it once every
// conn it served has ended, so only cached backend conns are left to close.
func (l *evLoop) close() {
	l.in.Stop()
	<-l.done
}

// inbox registers new conns, ends cancelled ones and closes the idle conns
// of removed backends, in the order they came. It reports whether the loop
// is closing.
func (l *evLoop) inbox() bool {
	notes, closing := l.in.Take()
	for _, n := range notes {
		switch {
		case n.purge != nil:
			l.closeIdle(n.purge)
		case n.cancel:
			n.lc.canceled()
		default:
			n.lc.register()
		}
	}
	return closing
}

// release ends what is left when the loop stops: conns still registered
// (none, when the worker closes as it should) and the idle backend conns.
func (l *evLoop) release() {
	for _, h := range l.slots {
		if lc, ok := h.(*loopConn); ok {
			lc.end()
		}
	}
	for b := range l.idle {
		l.closeIdle(b)
	}
	l.in.Release()
	l.set.Close()
	l.w.px.FDs.Add(-2)
}

// watch registers fd with the loop, edge-triggered for everything it may
// wait for, and returns its slot.
func (l *evLoop) watch(fd int, h loopFD) (int32, error) {
	var slot int32
	if n := len(l.free); n > 0 {
		slot = l.free[n-1]
		l.free = l.free[:n-1]
		l.slots[slot] = h
	} else {
		slot = int32(len(l.slots))
		l.slots = append(l.slots, h)
	}
	if err := l.set.Add(fd, slot, 0); err != nil {
		l.slots[slot] = nil
		l.freed = append(l.freed, slot)
		return -1, err
	}
	return slot, nil
}

// unwatch forgets slot; del also removes fd from the epoll set, for a
// descriptor that stays open (handed back to a goroutine): closing one
// removes it by itself.
func (l *evLoop) unwatch(slot int32, fd int, del bool) {
	if del {
		l.set.Del(fd)
	}
	l.slots[slot] = nil
	l.freed = append(l.freed, slot)
}

// expire ends the phase of every conn whose deadline has passed.
func (l *evLoop) expire() {
	for len(l.timers) > 0 && l.timers[0].deadline <= l.now {
		lc := l.timers[0]
		heap.Pop(&l.timers)
		lc.expired()
	}
}

// setTimer makes lc's deadline d from now (0: none).
func (l *evLoop) setTimer(lc *loopConn, d time.Duration) {
	if d <= 0 {
		l.stopTimer(lc)
		return
	}
	lc.deadline = l.now + d
	if lc.hidx >= 0 {
		heap.Fix(&l.timers, lc.hidx)
	} else {
		heap.Push(&l.timers, lc)
	}
}

func (l *evLoop) stopTimer(lc *loopConn) {
	if lc.hidx >= 0 {
		heap.Remove(&l.timers, lc.hidx)
	}
}

// timerHeap orders conns by deadline; each knows its index (container/heap).
type timerHeap []*loopConn

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].deadline < h[j].deadline }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hidx, h[j].hidx = i, j
}

func (h *timerHeap) Push(x any) {
	lc := x.(*loopConn)
	lc.hidx = len(*h)
	*h = append(*h, lc)
}

func (h *timerHeap) Pop() any {
	old := *h
	n := len(old) - 1
	lc := old[n]
	old[n] = nil
	lc.hidx = -1
	*h = old[:n]
	return lc
}
