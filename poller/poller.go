//go:build linux

// Package poller is the epoll set an event loop of wslb waits on (the tunnel
// engine's loops, l7's keep-alive loops), and the raw reads, writes and
// splices the loops make on their non-blocking sockets.
//
// A loop blocks its thread in epoll_wait. Its reads, writes and splices
// cannot block, so they are raw system calls (RawSyscall) that the Go
// scheduler never sees: a goroutine the scheduler sees in a system call may
// have its P taken by sysmon and given to another thread, which the loop
// then has to win back (a futex wake, a context switch) when the call
// returns.
//
// Parking a busy loop in Go's netpoller instead of blocking in epoll_wait
// was measured and rejected: it spared sysmon's retakes of the blocked
// thread (keep-alive HTTP under 50 conns: 0.45 -> 0.35 context switches per
// request), but a loop woken by the netpoller waits in the scheduler's
// queue behind every runnable goroutine, and under load (the soak test:
// 1,000 clients in the same process, under -race) the tunnels of a killed
// backend then took up to 1.3 s to close instead of 0.25 s. A thread that
// returns from epoll_wait runs at once.
package poller

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Set is one loop's epoll set. Its methods but Close belong to the loop's
// goroutine.
type Set struct {
	fd int
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
	if err := unix.EpollCtl(s.fd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
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
func (s *Set) Del(fd int) { _ = unix.EpollCtl(s.fd, unix.EPOLL_CTL_DEL, fd, nil) }

// Close closes the set.
func (s *Set) Close() { unix.Close(s.fd) }

// Wait waits up to timeout ms (-1: no limit) for events, as epoll_wait
// does, and returns how many it put in events.
func (s *Set) Wait(events []unix.EpollEvent, timeout int) int {
	n, err := unix.EpollWait(s.fd, events, timeout)
	if err != nil && err != unix.EINTR {
		// Only a bug (EBADF, EFAULT) gets here; spinning would hide it.
		panic(fmt.Sprintf("epoll_wait: %v", err))
	}
	return max(n, 0)
}

// Read reads a non-blocking descriptor without telling the scheduler: it
// cannot block (see the package doc). Errors are unix.Errno values.
func Read(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// Write writes a non-blocking descriptor as Read reads one.
func Write(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// Splice moves up to n bytes from in to out, both non-blocking (one a pipe),
// as Read reads: SPLICE_F_MOVE|SPLICE_F_NONBLOCK.
func Splice(in, out, n int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}
