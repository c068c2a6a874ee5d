//go:build linux

package l7

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// syscallCounter counts the system calls the process makes, on every
// thread, from the raw_syscalls:sys_enter tracepoint: what `perf stat -e
// raw_syscalls:sys_enter -p PID` counts, read from inside. perf counts per
// thread, so there is one counter per thread that exists when it is opened,
// each inherited by the threads that thread starts later (the Go runtime
// starts its threads from threads it already has). A process started
// (forked) after it is opened inherits it too: start children first.
type syscallCounter struct{ fds []int }

// openSyscallCounter opens the counter. It needs the tracepoint's id from
// tracefs and perf_event_paranoid ≤ 1, or CAP_PERFMON (root).
func openSyscallCounter() (*syscallCounter, error) {
	id, err := tracepointID("raw_syscalls/sys_enter")
	if err != nil {
		return nil, err
	}
	attr := unix.PerfEventAttr{Type: unix.PERF_TYPE_TRACEPOINT, Config: id, Bits: unix.PerfBitInherit}
	attr.Size = uint32(unsafe.Sizeof(attr))
	sc := &syscallCounter{}
	opened := map[int]bool{}
	// A thread started by one not yet opened escapes inheritance: pass
	// again until a pass finds no new thread.
	for range 5 {
		tids, err := threadIDs()
		if err != nil {
			sc.close()
			return nil, err
		}
		added := false
		for _, tid := range tids {
			if opened[tid] {
				continue
			}
			fd, err := unix.PerfEventOpen(&attr, tid, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
			if errors.Is(err, unix.ESRCH) {
				continue // the thread exited meanwhile
			}
			if err != nil {
				sc.close()
				return nil, fmt.Errorf("perf_event_open raw_syscalls:sys_enter on thread %d (perf_event_paranoid ≤ 1 or root needed): %w", tid, err)
			}
			opened[tid], added = true, true
			sc.fds = append(sc.fds, fd)
		}
		if !added {
			break
		}
	}
	return sc, nil
}

// count is the number of system calls made since the counter was opened:
// each thread's, its descendants' included.
func (sc *syscallCounter) count() uint64 {
	var sum uint64
	var buf [8]byte
	for _, fd := range sc.fds {
		if n, err := unix.Read(fd, buf[:]); err == nil && n == len(buf) {
			sum += binary.NativeEndian.Uint64(buf[:])
		}
	}
	return sum
}

func (sc *syscallCounter) close() {
	for _, fd := range sc.fds {
		unix.Close(fd)
	}
	sc.fds = nil
}

// tracepointID reads a tracepoint's id from tracefs, where it is mounted.
func tracepointID(name string) (uint64, error) {
	var errs []error
	for _, dir := range []string{"/sys/kernel/tracing/events/", "/sys/kernel/debug/tracing/events/"} {
		b, err := os.ReadFile(dir + name + "/id")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	}
	return 0, fmt.Errorf("tracepoint %s: %w", name, errors.Join(errs...))
}

// threadIDs lists the process's threads.
func threadIDs() ([]int, error) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, fmt.Errorf("list threads: %w", err)
	}
	tids := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}

// TestSyscallCounter checks the counter the benchmarks report syscalls/op
// from: a known number of system calls, on this thread and on a thread
// started after the counter was opened and gone before it is read, are
// all counted, and little else.
func TestSyscallCounter(t *testing.T) {
	sc, err := openSyscallCounter()
	if err != nil {
		t.Skipf("no counter here: %v", err)
	}
	defer sc.close()
	const n = 1000
	before := sc.count()
	for range n {
		unix.Getppid()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		for range n {
			unix.Getppid()
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the counting goroutine did not finish")
	}
	got := sc.count() - before
	// The slack is the runtime's own calls meanwhile (the thread's start
	// and exit, sysmon, the reads of the counter).
	if got < 2*n || got > 2*n+500 {
		t.Errorf("counted %d system calls, want %d and a few", got, 2*n)
	}
}
