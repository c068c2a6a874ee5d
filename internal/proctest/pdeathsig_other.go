//go:build !linux

package proctest

import "syscall"

// dieWithParent is nil where the kernel has no parent-death signal: the
// backend still exits on its stdin's EOF.
func dieWithParent() *syscall.SysProcAttr { return nil }
