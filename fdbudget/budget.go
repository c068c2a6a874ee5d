// Package fdbudget counts the file descriptors wslb holds against its
// RLIMIT_NOFILE, so that running out is a decision taken before the kernel
// says EMFILE, not a failure blamed on whatever asked last: with only the
// reserve left, new client conns are answered at once and closed, dials are
// not attempted, health checks are skipped (no result), and the reserve
// stays for established conns, the admin listener and those refusals.
//
// The count is one atomic add per descriptor opened or closed: frontend
// (listening sockets, client conns), pool (a backend's reservations and idle
// conns), health (check conns), tunnel (the engine's epoll sets and pipes)
// and admin (its socket and conns) keep it, each where a descriptor's life
// already has one owner. Exhausted is the one test of a local resource error.
package fdbudget

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// MaxReserve is the reserve kept when the limit is 256 or more: room for the
// admin listener, a burst of refusals and what the count does not see (a
// DNS lookup, a file read at reload, the Go runtime's own).
const MaxReserve = 32

// logEvery bounds the "only the reserve is left" warnings: a count hovering
// at the line would otherwise log every conn.
const logEvery = 10 * time.Second

// Budget is the process's descriptor count against its limit. A nil *Budget
// counts nothing and never refuses, so tests and tools may leave it out.
type Budget struct {
	limit    int64
	reserve  int64
	share    int64 // limit - reserve: what new work may bring the count to
	baseline int64
	used     atomic.Int64

	log      *slog.Logger
	short    atomic.Bool  // the last decision refused
	warned   atomic.Bool  // a warning was logged for the current shortage
	lastWarn atomic.Int64 // unix nanoseconds of the last warning
}

// New reads RLIMIT_NOFILE (as the Go runtime left it: raised to the hard
// limit at start) and the descriptors open now, once: the baseline that the
// count starts from. log gets one warning when only the reserve is left (at
// most every 10 s) and one line when descriptors are free again.
func New(log *slog.Logger) (*Budget, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return nil, fmt.Errorf("read RLIMIT_NOFILE: %w", err)
	}
	open, err := CountOpen()
	if err != nil {
		return nil, err
	}
	limit := int64(min(rl.Cur, 1<<40))
	return WithLimit(limit, int64(open), log), nil
}

// WithLimit is a Budget for limit descriptors of which used are open: New
// without asking the kernel, for tests.
func WithLimit(limit, used int64, log *slog.Logger) *Budget {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := ReserveFor(limit)
	b := &Budget{limit: limit, reserve: r, share: limit - r, baseline: used, log: log}
	b.used.Store(used)
	return b
}

// ReserveFor is the reserve kept under limit: MaxReserve, or an eighth of a
// limit under 256, at least 1.
func ReserveFor(limit int64) int64 { return max(1, min(MaxReserve, limit/8)) }

// Add counts n descriptors opened (n < 0: closed) whatever the count: what
// must go on in the reserve (a listening socket, a pipe of an established
// tunnel, an admin conn) or what a reservation already decided.
func (b *Budget) Add(n int) {
	if b != nil {
		b.used.Add(int64(n))
	}
}

// Accept counts the descriptor of a conn just accepted and reports whether
// it may be served: false when it took the count into the reserve, and the
// conn should be answered at once and closed (it stays counted until then;
// Add(-1) when it is closed, either way).
func (b *Budget) Accept() bool {
	if b == nil {
		return true
	}
	return b.decide(b.used.Add(1) <= b.share)
}

// Take counts one descriptor for new work (a health check's conn) when the
// count leaves the reserve free, and reports whether it did; on false
// nothing is counted and the work should not start.
func (b *Budget) Take() bool {
	if b == nil {
		return true
	}
	if b.used.Add(1) <= b.share {
		return b.decide(true)
	}
	b.used.Add(-1)
	return b.decide(false)
}

// Spare reports whether the count, the caller's own already included (a
// backend reservation), leaves the reserve free: whether a dial may start.
func (b *Budget) Spare() bool {
	if b == nil {
		return true
	}
	return b.decide(b.used.Load() <= b.share)
}

// Scarce reports whether less than half the reserve is left: a conn being
// refused is closed at once rather than lingering for its client to read the
// answer, so refusals cannot eat the reserve the admin listener relies on.
func (b *Budget) Scarce() bool {
	return b != nil && b.limit-b.used.Load() < b.reserve/2
}

// Used is the count: the baseline plus every descriptor counted since.
func (b *Budget) Used() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// Limit is RLIMIT_NOFILE as read at start.
func (b *Budget) Limit() int64 {
	if b == nil {
		return 0
	}
	return b.limit
}

// Reserve is the reserve kept under Limit.
func (b *Budget) Reserve() int64 {
	if b == nil {
		return 0
	}
	return b.reserve
}

// Baseline is what was open when the count started: what Used returns once
// everything counted since is closed.
func (b *Budget) Baseline() int64 {
	if b == nil {
		return 0
	}
	return b.baseline
}

// decide logs the edges of a shortage and returns ok.
func (b *Budget) decide(ok bool) bool {
	switch {
	case !ok && !b.short.Swap(true):
		now := time.Now().UnixNano()
		if last := b.lastWarn.Load(); now-last >= int64(logEvery) && b.lastWarn.CompareAndSwap(last, now) {
			b.warned.Store(true)
			b.log.Warn("out of file descriptors: only the reserve is left; new conns are refused at once, "+
				"dials and health checks wait, established conns go on (raise the limit: ulimit -n, LimitNOFILE)",
				"limit", b.limit, "reserve", b.reserve, "used", b.used.Load())
		}
	case ok && b.short.Load() && b.short.CompareAndSwap(true, false):
		if b.warned.Swap(false) {
			b.log.Info("file descriptors free again; new conns are served", "limit", b.limit, "used", b.used.Load())
		}
	}
	return ok
}

// Exhausted reports whether err is a local shortage (the process or the
// system is out of descriptors, socket buffers or memory) rather than
// anything about the peer: never a backend's fault, never a client's.
func Exhausted(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

// CountOpen counts the descriptors open in the process now, by listing
// /proc/self/fd (or /dev/fd). It costs a directory read: for the baseline at
// start and for tests, never per conn.
func CountOpen() (int, error) {
	var err error
	for _, dir := range []string{"/proc/self/fd", "/dev/fd"} {
		var ents []os.DirEntry
		if ents, err = os.ReadDir(dir); err == nil {
			return len(ents) - 1, nil // the listing's own descriptor
		}
	}
	return 0, fmt.Errorf("count open file descriptors: %w", err)
}
