//go:build linux

package l7

import (
	"bytes"
	"container/heap"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

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
	w          *worker
	epfd, evfd int

	mu      sync.Mutex
	adds    []*loopConn
	cancels []*loopConn
	purges  []*pool.Backend // removed backends whose idle conns must go
	closing bool
	stopped bool // evfd is closed: nobody may wake the loop
	done    chan struct{}

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
	pf       *os.File
	prc      syscall.RawConn
	// src is what the head being parsed is read from.
	src bytes.Reader
}

// loopFD is what a slot holds: a client conn or a backend conn.
type loopFD interface{ event(ev uint32) }

// wakeSlot marks the eventfd's epoll events.
const wakeSlot = -1

// loopReadSize is the loop's read buffer: a head or an answer read in one
// call, most of the time.
const loopReadSize = 64 << 10

func newEvLoop(w *worker) (*evLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeSlot}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		unix.Close(evfd)
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll_ctl eventfd: %w", err)
	}
	w.px.FDs.Add(2)
	return &evLoop{
		w: w, epfd: epfd, evfd: evfd, done: make(chan struct{}), start: time.Now(),
		events: make([]unix.EpollEvent, 256), rbuf: make([]byte, loopReadSize),
		idle: map[*pool.Backend][]*loopBackend{}, idleStop: map[*pool.Backend]func() bool{},
	}, nil
}

// run serves events until close. It blocks its thread in epoll_wait, as the
// tunnel engine's loops do (tunnel/loop_linux.go says why), but only when
// there is nothing to do: while busy it polls without blocking and without
// telling the scheduler (pollNow), so that its P is never seen in a long
// system call. sysmon hands such a P to another thread, which the loop must
// then win back (a futex wake, a context switch), and every such retake
// keeps sysmon waking every 20 µs (a nanosleep each: half the context
// switches of a busy proxy, measured). For the same reason it yields now
// and then while busy: a goroutine that runs 10 ms without a scheduling
// point is preempted with a signal.
func (l *evLoop) run() {
	defer close(l.done)
	defer l.release()
	busy := false
	var load int32 // events per batch, ×16, averaged over about 8 batches
	var yielded time.Duration
	for {
		var n int
		if busy {
			n = l.park(l.timeout())
		} else {
			var err error
			n, err = unix.EpollWait(l.epfd, l.events, l.timeout())
			if err != nil && err != unix.EINTR {
				// Only a bug (EBADF, EFAULT) gets here; spinning would hide it.
				panic(fmt.Sprintf("epoll_wait: %v", err))
			}
		}
		// A batch of one event is a request at a time: then the next wait
		// most likely blocks, and parking would cost two calls more (the
		// poll that finds nothing, and the one after the wake-up). The
		// average over recent batches decides, so that a single small batch
		// under load does not switch to the blocking wait.
		load = load - load/8 + int32(max(n, 0))*2
		busy = load > 24
		l.now = l.clock()
		woken := false
		for _, ev := range l.events[:max(n, 0)] {
			if ev.Fd == wakeSlot {
				woken = true
				continue
			}
			if h := l.slots[ev.Fd]; h != nil {
				h.event(ev.Events)
			}
		}
		l.expire()
		// A slot freed by this batch is reused only after it: the batch may
		// still hold events for its old owner.
		l.free = append(l.free, l.freed...)
		l.freed = l.freed[:0]
		if woken && l.inbox() {
			return
		}
		if busy && l.now-yielded > time.Millisecond {
			yielded = l.now
			runtime.Gosched()
		}
	}
}

// pollNow is epoll_wait with a timeout of 0 as a raw system call: it cannot
// block, so the scheduler need not know of it.
func pollNow(epfd int, events []unix.EpollEvent) int {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0 // EINTR: the blocking wait follows
	}
	return int(n)
}

// timeout is how long a wait may last: until the first deadline, or -1.
func (l *evLoop) timeout() int {
	if len(l.timers) == 0 {
		return -1
	}
	return max(int((l.timers[0].deadline-l.clock()+time.Millisecond-1)/time.Millisecond), 0)
}

func (l *evLoop) clock() time.Duration { return time.Since(l.start) }

// wakeLocked interrupts the loop's epoll_wait; l.mu is held, so that the
// eventfd cannot have been closed (and its number reused) meanwhile.
func (l *evLoop) wakeLocked() {
	if !l.stopped {
		_, _ = unix.Write(l.evfd, wakeOne[:])
	}
}

var wakeOne = [8]byte{1}

// add queues lc for the loop to register. It reports false when the loop is
// closing: the caller keeps lc's conn.
func (l *evLoop) add(lc *loopConn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		return false
	}
	l.adds = append(l.adds, lc)
	l.wakeLocked()
	return true
}

// cancel asks the loop to end lc (a drain), from any goroutine.
func (l *evLoop) cancel(lc *loopConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cancels = append(l.cancels, lc)
	l.wakeLocked()
}

// close stops the loop and waits for it. The worker calls it once every
// conn it served has ended, so only cached backend conns are left to close.
func (l *evLoop) close() {
	l.mu.Lock()
	l.closing = true
	l.wakeLocked()
	l.mu.Unlock()
	<-l.done
}

// inbox registers new conns and ends cancelled ones. It reports whether the
// loop is closing.
func (l *evLoop) inbox() bool {
	var buf [8]byte
	_, _ = unix.Read(l.evfd, buf[:])
	l.mu.Lock()
	adds, cancels, purges, closing := l.adds, l.cancels, l.purges, l.closing
	l.adds, l.cancels, l.purges = nil, nil, nil
	l.mu.Unlock()
	for _, b := range purges {
		l.closeIdle(b)
	}
	for _, lc := range adds {
		lc.register()
	}
	for _, lc := range cancels {
		lc.canceled()
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
	l.mu.Lock()
	l.stopped = true
	unix.Close(l.evfd)
	l.mu.Unlock()
	if l.pf != nil {
		l.pf.Close() // the epoll set, through the os.File that parks on it
	} else {
		unix.Close(l.epfd)
	}
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
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: slot}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		l.slots[slot] = nil
		l.freed = append(l.freed, slot)
		return -1, fmt.Errorf("epoll_ctl: %w", err)
	}
	return slot, nil
}

// unwatch forgets slot; del also removes fd from the epoll set, for a
// descriptor that stays open (handed back to a goroutine): closing one
// removes it by itself.
func (l *evLoop) unwatch(slot int32, fd int, del bool) {
	if del {
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
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

// sysRead and sysWrite read and write a non-blocking socket without telling
// the scheduler (RawSyscall): they never block, and a goroutine the runtime
// sees in a system call may have its P handed to another thread by sysmon,
// which the loop then has to win back (a futex wake and a context switch)
// when the call returns. Only epoll_wait, which blocks, goes through
// syscall.Syscall.
func sysRead(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func sysWrite(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// parkable puts the epoll set on Go's netpoller, the first time the loop is
// busy: from then on Go's netpoller also wakes at every first event after
// the set was drained, which costs a loop that serves one request at a time
// about two system calls per request, so a loop that never gets busy never
// pays it.
func (l *evLoop) parkable() bool {
	// Non-blocking before os.NewFile looks, so that the file goes on the
	// netpoller; epoll_wait itself does not look at the flag.
	if err := unix.SetNonblock(l.epfd, true); err != nil {
		return false
	}
	l.pf = os.NewFile(uintptr(l.epfd), "epoll") // release closes it
	l.prc, _ = l.pf.SyscallConn()               // fails only once closed
	return true
}

// park waits for events as a goroutine parked in Go's netpoller on the
// epoll set: the loop's thread and P go back to the scheduler meanwhile,
// rather than sit in a system call that sysmon would retake.
func (l *evLoop) park(timeout int) int {
	if l.pf == nil && !l.parkable() {
		n, _ := unix.EpollWait(l.epfd, l.events, timeout)
		return n
	}
	if timeout >= 0 {
		_ = l.pf.SetReadDeadline(time.Now().Add(time.Duration(timeout) * time.Millisecond))
	} else {
		_ = l.pf.SetReadDeadline(time.Time{})
	}
	n := 0
	_ = l.prc.Read(func(fd uintptr) bool { n = pollNow(int(fd), l.events); return n > 0 })
	return n
}
