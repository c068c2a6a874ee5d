//go:build unix

package l7

import (
	"syscall"
	"time"
)

// processCPU is the CPU time the process has used, user and system, and the
// context switches of all its threads, voluntary and not (those of threads
// that have exited included), or false where they cannot be read.
func processCPU() (time.Duration, int64, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), int64(ru.Nvcsw + ru.Nivcsw), true
}
