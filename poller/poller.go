//go:build linux

// Package poller is the epoll set an event loop of wslb waits on (the tunnel
// engine's loops, l7's keep-alive loops), the inbox through which other
// goroutines hand a loop work (inbox.go), and the raw reads and writes the
// loops make on their non-blocking sockets.
//
// The Go runtime is why this is a package and not three lines of epoll_wait.
// A loop that blocks its thread in epoll_wait is a goroutine in a system call
// to the scheduler: when the other Ps are busy, sysmon takes its P away after
// 20 µs and hands it to another thread, which the loop must win back (a futex
// wake, a context switch) when the call returns; and every such retake keeps
// sysmon itself waking every 20 µs, each wake a nanosleep and a context
// switch. Measured on keep-alive HTTP with 50 conns, that was half of the
// proxy's context switches. So while the loop is busy, Set.Wait parks it in
// Go's netpoller instead (its thread and P go back to the scheduler, which
// retakes nothing), and reads and writes never enter the scheduler at all
// (RawSyscall: they cannot block). A loop that serves one event at a time
// still blocks in epoll_wait: parking costs two calls more per wake-up (the
// poll that finds nothing, and the one after it), and nothing else wants
// the P then anyway.
//
// The price, measured: a loop the netpoller wakes waits in the scheduler's
// queue behind the goroutines already runnable. With the process
// overloaded (two soak tests at once under -race, 2,000 client goroutines
// in it), a killed backend's tunnels took up to 0.6-1 s to close, against
// 0.25-0.7 s with loops that always block; alone, the soak closes them
// within 0.13 s either way. Loops that always block gave back half of
// what parking won in the side-by-side bench (keep-alive HTTP 0.37 -> 0.78
// context switches per request, echo 0.21 -> 0.53), so the loops park.
package poller

import (
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Set is one loop's epoll set. Its methods but Close belong to the loop's
// goroutine.
type Set struct {
	fd int
	// f is fd on Go's netpoller, from the first time the loop is busy
	// (parkable): from then on the netpoller also wakes at the first event
	// after every drain, which a loop that is never busy should not pay.
	f  *os.File
	rc syscall.RawConn
	// load is the events per wait, ×16, averaged over about 8 waits.
	load int32
}

// New creates an epoll set.
func New() (*Set, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	return &Set{fd: fd}, nil
}

// Add registers fd, edge-triggered for everything a loop may wait for
// (EPOLLIN, EPOLLOUT, EPOLLRDHUP), with slot and pad as the event's data.
func (s *Set) Add(fd int, slot, pad int32) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: slot, Pad: pad}
	if err := s.ctl(unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

// AddLevel registers fd level-triggered for reading (an eventfd).
func (s *Set) AddLevel(fd int, slot int32) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: slot}
	if err := unix.EpollCtl(s.fd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

// Del removes fd, which stays open; closing it removes it by itself.
func (s *Set) Del(fd int) { _ = s.ctl(unix.EPOLL_CTL_DEL, fd, nil) }

// ctl is epoll_ctl as a raw call (calls.go).
func (s *Set) ctl(op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(s.fd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// Close closes the set.
func (s *Set) Close() {
	if s.f != nil {
		s.f.Close()
		return
	}
	unix.Close(s.fd)
}

// Wait waits up to timeout ms (-1: no limit) for events, as epoll_wait
// does, parking in Go's netpoller while the loop is busy (see the package
// doc). It never yields on its own: a goroutine that yields goes to the back
// of the scheduler's queue, behind every conn goroutine a storm of
// handshakes has started, and its tunnels would wait with it (measured:
// yielding every millisecond made a killed backend's tunnels take up to
// 1.3 s to close in the soak test under load).
func (s *Set) Wait(events []unix.EpollEvent, timeout int) int {
	var n int
	if s.load > 24 && (s.f != nil || s.parkable()) {
		n = s.park(events, timeout)
	} else {
		var err error
		n, err = unix.EpollWait(s.fd, events, timeout)
		if err != nil && err != unix.EINTR {
			// Only a bug (EBADF, EFAULT) gets here; spinning would hide it.
			panic(fmt.Sprintf("epoll_wait: %v", err))
		}
		n = max(n, 0)
	}
	// A wait that returns one event serves a request at a time: the next
	// most likely blocks. The average over recent waits decides, so that
	// one small batch under load does not switch back to blocking.
	s.load = s.load - s.load/8 + int32(n)*2
	return n
}

// parkable puts the set on Go's netpoller.
func (s *Set) parkable() bool {
	// Non-blocking before os.NewFile looks, so that the file goes on the
	// netpoller; epoll_wait itself does not look at the flag.
	if err := unix.SetNonblock(s.fd, true); err != nil {
		return false
	}
	s.f = os.NewFile(uintptr(s.fd), "epoll") // Close closes it
	s.rc, _ = s.f.SyscallConn()              // fails only once closed
	return true
}

// park polls the set and, when nothing is ready, waits for it to be in Go's
// netpoller, up to timeout ms.
func (s *Set) park(events []unix.EpollEvent, timeout int) int {
	if timeout >= 0 {
		_ = s.f.SetReadDeadline(time.Now().Add(time.Duration(timeout) * time.Millisecond))
	} else {
		_ = s.f.SetReadDeadline(time.Time{})
	}
	n := 0
	// The first call polls before any wait: edges the netpoller saw before
	// this read began are not delivered again.
	_ = s.rc.Read(func(fd uintptr) bool { n = pollNow(int(fd), events); return n > 0 })
	return n
}

// pollNow is epoll_wait with a timeout of 0 as a raw system call: it cannot
// block, so the scheduler need not know of it.
func pollNow(epfd int, events []unix.EpollEvent) int {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0 // EINTR: the caller waits again
	}
	return int(n)
}

// Read reads a non-blocking descriptor without telling the scheduler: it
// cannot block (see the package doc). Errors are unix.Errno values, and
// never EINTR: an interrupted call is made again, here rather than at every
// caller.
func Read(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return rawIO(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), 0, 0, 0)
}

// Write writes a non-blocking descriptor as Read reads one.
func Write(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return rawIO(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), 0, 0, 0)
}

// Splice moves up to n bytes from in to out, both non-blocking (one a pipe),
// as Read reads: SPLICE_F_MOVE|SPLICE_F_NONBLOCK.
func Splice(in, out, n int) (int, error) {
	return rawIO(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
}

// rawIO makes a raw call that moves bytes, again when a signal interrupted
// it (EINTR: nothing moved yet).
func rawIO(trap, a1, a2, a3, a4, a5, a6 uintptr) (int, error) {
	for {
		n, _, e := unix.RawSyscall6(trap, a1, a2, a3, a4, a5, a6)
		switch e {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		}
		return 0, e
	}
}
