//go:build !linux

package l7

import "errors"

type syscallCounter struct{}

func openSyscallCounter() (*syscallCounter, error) {
	return nil, errors.New("system calls are counted on Linux only (perf's raw_syscalls:sys_enter)")
}

func (*syscallCounter) count() uint64 { return 0 }
func (*syscallCounter) close()        {}
