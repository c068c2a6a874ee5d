//go:build linux

package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// This file is the one place in wslb with raw socket syscalls. An idle
// tunnel under Relay.Run costs two goroutines, their stacks and two netpoll
// registrations: 50 KB and more. Here it costs one loopTunnel struct: its two
// sockets are taken out of Go's netpoller and registered, edge-triggered,
// with the epoll set of one of a few loops. When bytes move, a loop copies a message through
// its small buffer (one recv, one send) or splices a stream through its one
// pipe, so bulk bytes never enter user space. Bytes the peer cannot take yet
// wait in a pipe the tunnel keeps (the loop takes a spare), and while they
// wait the tunnel reads no more from that side: backpressure.

// pipeSize is each pipe's capacity and the most one splice moves. Larger
// pipes mean fewer syscalls per GiB for bulk streams, and cost nothing while
// empty; F_SETPIPE_SZ may refuse it (pipe-user-pages-soft), which leaves the
// default 64 KiB.
const pipeSize = 1 << 18

// copySize is the per-loop buffer small reads go through. A message (a chat
// line, a ping) costs one recv and one send, as in any proxy: a recv that
// returns less than the buffer has drained the socket, which a splice cannot
// tell (it may stop short for lack of pipe slots), so splicing a message
// would cost a third call that finds nothing. A recv that fills the buffer
// switches the direction to splicing until a splice moves a message-sized
// amount.
const copySize = 16 << 10

// messageSize: a splice that moves less than this was a message, not part of
// a stream, and the direction goes back to copying.
const messageSize = 2 << 10

// budget is how many reads one direction gets per turn, so that one bulk
// stream cannot starve the other tunnels of its loop; a direction with more
// to read goes back on the loop's ready list.
const budget = 4

// spares caps the pipes a loop keeps ready for tunnels under backpressure;
// more are closed when returned.
const spares = 16

// ErrEngineClosed is the Cause of tunnels ended because their Engine closed.
var ErrEngineClosed = errors.New("tunnel engine closed")

// Engine relays plain-TCP tunnels on a fixed set of event loops, each owned
// by one goroutine. Create it with NewEngine and stop it with Close. A nil
// *Engine is usable: its Start relays every tunnel on goroutines.
type Engine struct {
	loops []*loop
	wg    sync.WaitGroup
}

// NewEngine starts n loops (n ≤ 0 means GOMAXPROCS). Each holds an epoll set,
// an eventfd and a pipe.
func NewEngine(n int) (*Engine, error) {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	e := &Engine{}
	for range n {
		l, err := newLoop()
		if err != nil {
			e.Close()
			return nil, err
		}
		e.loops = append(e.loops, l)
		e.wg.Go(l.run)
	}
	return e, nil
}

// Close ends every tunnel still open (EndCanceled, Cause ErrEngineClosed),
// waits for the loops to stop and frees their descriptors. A nil Engine's
// Close does nothing.
func (e *Engine) Close() {
	if e == nil {
		return
	}
	for _, l := range e.loops {
		l.mu.Lock()
		l.closing = true
		l.wakeLocked()
		l.mu.Unlock()
	}
	e.wg.Wait()
}

// Tunnels returns the number of tunnels the engine holds.
func (e *Engine) Tunnels() int {
	if e == nil {
		return 0
	}
	n := 0
	for _, l := range e.loops {
		n += int(l.live.Load())
	}
	return n
}

// pick returns the loop with the fewest tunnels.
func (e *Engine) pick() *loop {
	l := e.loops[0]
	for _, o := range e.loops[1:] {
		if o.live.Load() < l.live.Load() {
			l = o
		}
	}
	return l
}

// take starts the tunnel on the engine when both conns are plain TCP; see
// Engine.Start. It reports false, having done nothing, for any other conn.
func (e *Engine) take(ctx context.Context, r *Relay, c, b net.Conn, done func(Stats)) (stop func(cause error), ok bool) {
	ct, ok1 := c.(*net.TCPConn)
	bt, ok2 := b.(*net.TCPConn)
	if e == nil || !ok1 || !ok2 {
		return nil, false
	}
	if ctx.Err() != nil {
		// Drained while the tunnel was being set up; its client conn may
		// already be closed, which detach would report as an error.
		c.Close()
		b.Close()
		go done(Stats{End: EndCanceled, Cause: context.Cause(ctx)})
		return func(error) {}, true
	}
	t := &loopTunnel{idle: r.Idle, live: [2]Adder{clientSide: r.Rx, backendSide: r.Tx}, fullClose: r.FullClose, slot: -1, hidx: -1}
	// Bytes read ahead go out while the conns are still Go's: a write
	// that blocks holds the caller's goroutine, not a loop.
	n, err := writeAhead(b, r.ToBackend, r.Rx)
	t.count[clientSide] = int64(n)
	if err == nil {
		n, err = writeAhead(c, r.ToClient, r.Tx)
		t.count[backendSide] = int64(n)
		if err != nil {
			err = fmt.Errorf("write to client: %w", err)
		}
	} else {
		err = fmt.Errorf("write to backend: %w", err)
	}
	if err == nil {
		var cfd, bfd int
		if cfd, err = detach(ct); err != nil {
			b.Close()
		} else if bfd, err = detach(bt); err != nil {
			unix.Close(cfd)
		}
		t.fd = [2]int32{clientSide: int32(cfd), backendSide: int32(bfd)}
	}
	if err != nil {
		c.Close()
		b.Close()
		end := EndError
		if errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET) {
			// The side being written to went away.
			end = EndBackend
			if t.count[clientSide] == int64(len(r.ToBackend)) {
				end = EndClient
			}
		}
		s := Stats{Rx: t.count[clientSide], Tx: t.count[backendSide], End: end, Err: err}
		go done(s)
		return func(error) {}, true
	}
	t.l = e.pick()
	// A cancel that beats the add is kept in t.cause and honoured when
	// the loop registers t.
	stopCtx := context.AfterFunc(ctx, func() { t.cancel(context.Cause(ctx)) })
	t.done = func(s Stats) {
		stopCtx()
		done(s)
	}
	t.l.add(t)
	return t.cancel, true
}

// add queues t for the loop to register.
func (l *loop) add(t *loopTunnel) {
	l.live.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		l.live.Add(-1)
		t.cause = ErrEngineClosed
		t.finish(EndCanceled, nil)
		return
	}
	l.adds = append(l.adds, t)
	l.wakeLocked()
}

// detach takes c's socket out of Go's runtime: it duplicates the descriptor
// and closes c, which removes the original from Go's netpoller. The duplicate
// shares the open file, so it stays non-blocking.
func detach(c *net.TCPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return -1, err
	}
	fd := -1
	cerr := rc.Control(func(s uintptr) {
		fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	})
	c.Close()
	if cerr != nil {
		return -1, cerr
	}
	if err != nil {
		return -1, fmt.Errorf("dup socket: %w", err)
	}
	return fd, nil
}

// side names one of a loopTunnel's two sockets, and indexes its per-socket
// arrays; it also names the direction that reads from that socket:
// clientSide's direction moves client→backend.
type side uint8

const (
	clientSide side = iota
	backendSide
)

// end is the End that names s as the side that ended a tunnel.
func (s side) end() End {
	if s == clientSide {
		return EndClient
	}
	return EndBackend
}

// peer is the other side: where s's direction writes.
func (s side) peer() side { return 1 - s }

// loopTunnel is one tunnel held by an Engine. Apart from cause (under l.mu),
// its fields belong to the loop goroutine.
type loopTunnel struct {
	// An idle tunnel costs this struct and little else, so it is packed.
	l        *loop
	done     func(Stats)
	live     [2]Adder
	count    [2]int64 // bytes written to the other side, by the reading side
	dirs     [2]direction
	cause    error
	idle     time.Duration
	last     time.Duration // loop clock when a byte last moved
	deadline time.Duration // its key in the loop's idle heap
	hidx     int32         // its index there, -1 when not in it
	slot     int32
	fd       [2]int32
	readable [2]bool // edge-triggered state: the socket may have bytes to read
	writable [2]bool // and room to write
	// rdhup: the peer shut down its writing; an EOF waits behind the data,
	// so a short read does not mean the socket is drained.
	rdhup [2]bool
	// first is the side whose stream ended first (set with firstSet): after
	// a half-close it names the reason.
	first     side
	firstSet  bool
	fullClose bool
	queued    bool // on the loop's ready list
	ended     bool
}

// direction is the state of bytes moving from one socket to the other.
type direction struct {
	p    *pipe // bytes read but not yet written (the peer was not writable)
	n    int32 // how many (at most pipeSize)
	eof  bool  // the reading socket ended; the writing one got a shutdown
	bulk bool  // splice: the last read filled the copy buffer
}

// cancel ends t with EndCanceled and the given cause, from any goroutine. It
// does nothing once t has ended. It is the stop func Engine.Start returns.
func (t *loopTunnel) cancel(cause error) {
	l := t.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if t.cause == nil && !l.stopped {
		t.cause = cause
		l.cancels = append(l.cancels, t)
		l.wakeLocked()
	}
}

// pipe is a kernel pipe used as the splice buffer.
type pipe struct{ r, w int }

func newPipe() (*pipe, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("pipe: %w", err)
	}
	_, _ = unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, pipeSize)
	return &pipe{r: p[0], w: p[1]}, nil
}

func (p *pipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
}

// wakeSlot marks the eventfd's epoll events.
const wakeSlot = -1

// loop is one event loop: one goroutine, one epoll set.
type loop struct {
	epfd, evfd int
	live       atomic.Int64 // tunnels added and not yet ended

	mu      sync.Mutex
	adds    []*loopTunnel
	cancels []*loopTunnel
	closing bool
	stopped bool // evfd is closed: nobody may wake the loop

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

func newLoop() (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	l := &loop{epfd: epfd, evfd: -1, start: time.Now(), events: make([]unix.EpollEvent, 256), buf: make([]byte, copySize)}
	if l.evfd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		l.release()
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeSlot}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, l.evfd, &ev); err != nil {
		l.release()
		return nil, fmt.Errorf("epoll_ctl eventfd: %w", err)
	}
	if l.pipe, err = newPipe(); err != nil {
		l.release()
		return nil, err
	}
	return l, nil
}

func (l *loop) release() {
	unix.Close(l.epfd)
	l.mu.Lock()
	l.stopped = true
	if l.evfd >= 0 {
		unix.Close(l.evfd)
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

// wakeLocked interrupts the loop's epoll_wait; l.mu is held, so that the
// eventfd cannot have been closed (and its number reused) meanwhile.
func (l *loop) wakeLocked() {
	if !l.stopped {
		_, _ = unix.Write(l.evfd, one)
	}
}

// run blocks its thread in epoll_wait. Parking the goroutine in Go's
// netpoller on the epoll fd instead (a thread-free wait) was measured: it
// costs a second epoll_wait per wake-up, about a quarter more CPU per GiB in
// bulk, and gained nothing per message.
func (l *loop) run() {
	defer l.release()
	for {
		timeout := -1
		if len(l.ready) > 0 {
			timeout = 0
		} else if len(l.heap) > 0 {
			timeout = max(int((l.heap[0].deadline-l.clock()+time.Millisecond-1)/time.Millisecond), 0)
		}
		n, err := unix.EpollWait(l.epfd, l.events, timeout)
		if err != nil && err != unix.EINTR {
			// Only a bug (EBADF, EFAULT) gets here; spinning would hide it.
			panic(fmt.Sprintf("epoll_wait: %v", err))
		}
		l.now = l.clock()
		woken := false
		for _, ev := range l.events[:max(n, 0)] {
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
		if woken && l.inbox() {
			return
		}
	}
}

func (l *loop) clock() time.Duration { return time.Since(l.start) }

// inbox registers new tunnels and ends cancelled ones. It reports whether
// the engine is closing, after ending every tunnel.
func (l *loop) inbox() bool {
	var buf [8]byte
	_, _ = unix.Read(l.evfd, buf[:])
	l.mu.Lock()
	adds, cancels, closing := l.adds, l.cancels, l.closing
	l.adds, l.cancels = nil, nil
	l.mu.Unlock()
	for _, t := range adds {
		l.register(t)
	}
	for _, t := range cancels {
		if t.slot >= 0 { // else register ends it when its add comes
			t.end(EndCanceled, nil)
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
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: t.slot, Pad: int32(s)}
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev); err != nil {
			t.end(EndError, fmt.Errorf("epoll_ctl: %w", err))
			return
		}
	}
	if t.idle > 0 {
		t.deadline = t.last + t.idle
		l.heap.push(t)
	}
	l.mu.Lock()
	canceled := t.cause != nil
	l.mu.Unlock()
	if canceled {
		t.end(EndCanceled, nil)
	}
}

// event records what epoll reported for one socket and moves what can move.
func (t *loopTunnel) event(s side, ev uint32) {
	if t.ended {
		return
	}
	if ev&unix.EPOLLERR != 0 {
		err := unix.ENOTCONN
		if n, gerr := unix.GetsockoptInt(int(t.fd[s]), unix.SOL_SOCKET, unix.SO_ERROR); gerr == nil && n != 0 {
			err = unix.Errno(n)
		}
		t.end(classify(err, s.end(), s.end()), err)
		return
	}
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP) != 0 {
		t.readable[s] = true
	}
	if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP) != 0 {
		t.rdhup[s] = true
	}
	if ev&(unix.EPOLLOUT|unix.EPOLLHUP) != 0 {
		t.writable[s] = true
	}
	t.progress()
}

// progress moves both directions as far as they go now.
func (t *loopTunnel) progress() {
	more := t.move(clientSide)
	if !t.ended {
		more = t.move(backendSide) || more
	}
	if more && !t.ended && !t.queued {
		t.queued = true
		t.l.ready = append(t.l.ready, t)
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

// move moves bytes from socket src to the other one until one of them would
// block, src ends, or the budget is spent; it reports whether src may still
// have bytes (budget spent).
func (t *loopTunnel) move(src side) bool {
	dst := src.peer()
	d := &t.dirs[src]
	if d.n > 0 && !t.flush(src) {
		return false
	}
	if d.eof {
		return false
	}
	l := t.l
	for range budget {
		if !t.readable[src] || !t.writable[dst] {
			return false
		}
		if !d.bulk {
			n, err := unix.Read(int(t.fd[src]), l.buf)
			if !t.readDone(src, n, err) {
				return false
			}
			if n < len(l.buf) && !t.rdhup[src] {
				t.readable[src] = false // drained: the next byte is a new edge
			} else {
				d.bulk = true
			}
			if !t.send(src, l.buf[:n]) {
				return false
			}
			continue
		}
		if l.pipe == nil && !l.refill() {
			t.end(EndError, errNoPipe)
			return false
		}
		n, err := unix.Splice(int(t.fd[src]), nil, l.pipe.w, nil, pipeSize, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		if !t.readDone(src, int(n), err) {
			return false
		}
		// A short splice in a stream is common (the reader caught up);
		// only a message-sized one sends the direction back to copying,
		// else a stream would pay two copies for every slack moment.
		d.bulk = n >= messageSize
		// The bytes now sit in the loop's pipe. They are this direction's
		// until written: if the peer cannot take them all, the direction
		// keeps the pipe and the loop takes another.
		d.p, d.n = l.pipe, int32(n)
		l.pipe = nil
		if !t.flush(src) {
			return false
		}
	}
	return t.readable[src]
}

// readDone handles what a read from src returned, and reports whether n > 0
// bytes came (else the direction stops for now, or the tunnel ended).
func (t *loopTunnel) readDone(src side, n int, err error) bool {
	switch {
	case err == unix.EAGAIN:
		t.readable[src] = false
	case err == unix.EINTR:
	case err != nil:
		t.end(classify(err, src.end(), EndError), err)
	case n == 0:
		t.readable[src] = false
		t.eof(src)
	default:
		return true
	}
	return false
}

// send writes p, read from src, to the other socket. What the peer cannot
// take now waits in a pipe of the direction's, as spliced bytes do; it
// reports whether all of p went.
func (t *loopTunnel) send(src side, p []byte) bool {
	dst := src.peer()
	n, err := unix.Write(int(t.fd[dst]), p)
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		n = 0
	case err != nil:
		t.end(classify(err, dst.end(), dst.end()), err)
		return false
	}
	t.sent(src, n)
	if n == len(p) {
		return true
	}
	t.writable[dst] = false
	pp, err := t.l.getPipe()
	if err == nil {
		// At most copySize bytes into an empty pipe: it takes them all.
		_, err = unix.Write(pp.w, p[n:])
	}
	if err != nil {
		if pp != nil {
			pp.close()
		}
		t.end(EndError, err)
		return false
	}
	t.dirs[src].p, t.dirs[src].n = pp, int32(len(p)-n)
	return false
}

// sent counts n bytes that src's direction wrote.
func (t *loopTunnel) sent(src side, n int) {
	if n <= 0 {
		return
	}
	t.count[src] += int64(n)
	if a := t.live[src]; a != nil {
		a.Add(float64(n))
	}
	t.last = t.l.now
}

// flush writes the bytes direction src holds in its pipe to the other
// socket, and reports whether all went. A drained pipe goes back to the loop.
func (t *loopTunnel) flush(src side) bool {
	dst := src.peer()
	d := &t.dirs[src]
	for d.n > 0 {
		if !t.writable[dst] {
			return false
		}
		n, err := unix.Splice(d.p.r, nil, int(t.fd[dst]), nil, int(d.n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch {
		case err == unix.EAGAIN:
			t.writable[dst] = false
			return false
		case err == unix.EINTR:
			continue
		case err != nil:
			// A write fails because the peer is gone, whichever way.
			t.end(classify(err, dst.end(), dst.end()), err)
			return false
		}
		d.n -= int32(n)
		t.sent(src, int(n))
	}
	t.l.putPipe(d.p)
	d.p = nil
	return true
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
	return newPipe()
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

// eof handles the end of socket src's stream: the first side to end decides
// the reason; with FullClose, or when the other side had already ended, the
// tunnel ends; otherwise the peer gets a half-close and may still answer.
func (t *loopTunnel) eof(src side) {
	dst := src.peer()
	t.dirs[src].eof = true
	if !t.firstSet {
		t.first, t.firstSet = src, true
	}
	if t.fullClose || t.dirs[dst].eof {
		t.end(t.first.end(), nil)
		return
	}
	if err := unix.Shutdown(int(t.fd[dst]), unix.SHUT_WR); err != nil && err != unix.ENOTCONN {
		t.end(EndError, fmt.Errorf("shutdown: %w", err))
	}
}

// expire ends tunnels idle for their timeout. The heap is lazy: an entry
// whose tunnel moved bytes since it was pushed goes back with a later key.
func (l *loop) expire() {
	for len(l.heap) > 0 && l.heap[0].deadline <= l.now {
		t := l.heap[0]
		if d := t.last + t.idle; d > l.now {
			t.deadline = d
			l.heap.fix(0)
			continue
		}
		t.end(EndIdle, nil)
	}
}

// end closes t's sockets and pipes and reports it, once. e is kept unless
// an earlier half-close already decided the reason.
func (t *loopTunnel) end(e End, err error) {
	if t.ended {
		return
	}
	t.ended = true
	l := t.l
	for _, fd := range t.fd {
		// Closing the only descriptor also removes it from the epoll set.
		unix.Close(int(fd))
	}
	for i := range t.dirs {
		if p := t.dirs[i].p; p != nil {
			p.close()
			t.dirs[i].p = nil
		}
	}
	if t.hidx >= 0 {
		l.heap.remove(int(t.hidx))
	}
	if t.slot >= 0 && int(t.slot) < len(l.slots) && l.slots[t.slot] == t {
		l.slots[t.slot] = nil
		l.free = append(l.free, t.slot)
	}
	l.live.Add(-1)
	l.mu.Lock()
	canceled := t.cause != nil
	l.mu.Unlock()
	if canceled && e != EndIdle {
		e, err = EndCanceled, nil
	} else if t.firstSet && e == EndError {
		e = t.first.end()
	}
	t.finish(e, err)
}

// finish reports the ended tunnel on a goroutine of its own: done may log
// or take locks, and the loop must not wait for it.
func (t *loopTunnel) finish(e End, err error) {
	s := Stats{Rx: t.count[clientSide], Tx: t.count[backendSide], End: e, Err: err}
	if e == EndCanceled {
		s.Cause = t.cause
	}
	go t.done(s)
}

// idleHeap is a min-heap of tunnels by deadline; each knows its index.
type idleHeap []*loopTunnel

func (h *idleHeap) push(t *loopTunnel) {
	t.hidx = int32(len(*h))
	*h = append(*h, t)
	h.up(int(t.hidx))
}

func (h *idleHeap) remove(i int) {
	s := *h
	last := len(s) - 1
	s[i].hidx = -1
	if i != last {
		s[i] = s[last]
		s[i].hidx = int32(i)
	}
	s[last] = nil
	*h = s[:last]
	if i != last {
		h.fix(i)
	}
}

func (h idleHeap) fix(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

func (h idleHeap) less(i, j int) bool { return h[i].deadline < h[j].deadline }

func (h idleHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hidx, h[j].hidx = int32(i), int32(j)
}

func (h idleHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(i, p) {
			return
		}
		h.swap(i, p)
		i = p
	}
}

func (h idleHeap) down(i int) bool {
	start := i
	for {
		c := 2*i + 1
		if c >= len(h) {
			break
		}
		if r := c + 1; r < len(h) && h.less(r, c) {
			c = r
		}
		if !h.less(c, i) {
			break
		}
		h.swap(i, c)
		i = c
	}
	return i > start
}
