package proctest

import "syscall"

// dieWithParent has the kernel kill the backend when the test process
// ends, a stopped backend included, which could not act on its stdin's EOF.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
