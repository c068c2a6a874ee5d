// Package proctest runs test backends in processes of their own, so that a
// test can do to a backend what happens to real servers: SIGKILL, SIGSTOP
// and SIGCONT, and a restart on the same address. Build compiles the
// backend program (backend/: a WebSocket echo and plain HTTP answers, which
// fail on request) for a test, and its Start runs one.
package proctest

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wslb/wslb/internal/syncbuf"
	"github.com/wslb/wslb/internal/wait"
)

// Listening starts the first line a backend prints, followed by the
// address it bound.
const Listening = "listening "

// FaultPrefix starts a WebSocket message that makes a backend act on its
// tunnel instead of echoing: "fault:" and then a query, as the query of a
// request that asks for a fault (see backend/).
const FaultPrefix = "fault:"

// Program is the backend program, built for one test.
type Program struct{ path string }

// Build compiles the backend program into t's temporary folder, for t and
// its subtests. It is built plainly, without the race detector even when
// the test runs under it: a backend is the test's scenery, and a race-built
// one costs several times the CPU and memory, and takes up to seconds to
// be torn down when killed on a loaded machine.
func Build(t testing.TB) *Program {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	exe := filepath.Join(t.TempDir(), "backend")
	out, err := exec.CommandContext(ctx, "go", "build", "-o", exe, "github.com/wslb/wslb/internal/proctest/backend").CombinedOutput()
	if err != nil {
		t.Fatalf("go build the backend: %v\n%s", err, out)
	}
	return &Program{path: exe}
}

// Backend is a backend process that Start started.
type Backend struct {
	// Name is the name the backend greets WebSocket clients with.
	Name string
	// Addr is the host:port it listens on.
	Addr string

	t      testing.TB
	prog   *Program
	cmd    *exec.Cmd
	stdin  io.Closer       // closing it makes the backend exit
	output *syncbuf.Buffer // stdout and stderr, for failure reports
	done   chan struct{}   // closed once the process has exited
}

// Start runs a backend called name on addr ("" for a free loopback port)
// and returns once it listens. When the test ends the process is killed if
// it still runs (a stopped one included). It also dies with the test
// process: its stdin is a pipe from it, and on Linux the kernel kills it
// when the test process ends.
func (p *Program) Start(t testing.TB, name, addr string) *Backend {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	cmd := exec.Command(p.path, name, addr)
	out := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = dieWithParent()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start backend %s: %v", name, err)
	}
	b := &Backend{Name: name, t: t, prog: p, cmd: cmd, stdin: stdin, output: out, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(b.done)
	}()
	t.Cleanup(func() {
		b.stdin.Close()
		if !b.Exited() {
			cmd.Process.Kill()
		}
		b.waitExit()
	})
	if !wait.Until(10*time.Second, func() bool {
		b.Addr = b.listening()
		return b.Addr != "" || b.Exited()
	}) || b.Addr == "" {
		t.Fatalf("backend %s printed no address; its output:\n%s", name, out.String())
	}
	return b
}

// listening returns the address of the backend's first line, or "" before
// it is printed.
func (b *Backend) listening() string {
	line, _, complete := strings.Cut(b.output.String(), "\n")
	if !complete {
		return ""
	}
	addr, _ := strings.CutPrefix(line, Listening)
	return addr
}

// pid is the backend's process id.
func (b *Backend) pid() int { return b.cmd.Process.Pid }

// Exited reports whether the process has exited.
func (b *Backend) Exited() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// Kill sends SIGKILL and returns once the process has exited: the kernel
// has closed its sockets, each with a FIN, or an RST where bytes were left
// unread.
func (b *Backend) Kill() {
	b.t.Helper()
	if err := b.cmd.Process.Signal(syscall.SIGKILL); err != nil && !b.Exited() {
		b.t.Fatalf("kill backend %s: %v", b.Name, err)
	}
	b.waitExit()
}

// Stop sends SIGSTOP and returns once the process is stopped. The kernel
// still completes handshakes on its listening socket and takes the bytes
// sent to its conns, up to their buffers; nothing answers.
func (b *Backend) Stop() {
	b.t.Helper()
	b.signal(syscall.SIGSTOP)
	wait.For(b.t, "backend "+b.Name+" stopped", func() bool { return processState(b.pid()) == 'T' })
}

// Cont sends SIGCONT and returns once the process runs again.
func (b *Backend) Cont() {
	b.t.Helper()
	b.signal(syscall.SIGCONT)
	wait.For(b.t, "backend "+b.Name+" running", func() bool { return processState(b.pid()) != 'T' })
}

// Restart kills the backend if it still runs and starts a new one with the
// same name on the same address.
func (b *Backend) Restart() *Backend {
	b.t.Helper()
	if !b.Exited() {
		b.Kill()
	}
	return b.prog.Start(b.t, b.Name, b.Addr)
}

func (b *Backend) signal(sig syscall.Signal) {
	b.t.Helper()
	if err := b.cmd.Process.Signal(sig); err != nil {
		b.t.Fatalf("%v to backend %s: %v", sig, b.Name, err)
	}
}

// waitExit waits up to 5 s for the process to exit.
func (b *Backend) waitExit() {
	b.t.Helper()
	select {
	case <-b.done:
	case <-time.After(wait.Timeout):
		b.t.Errorf("backend %s (pid %d) still running %v after SIGKILL", b.Name, b.pid(), wait.Timeout)
	}
}

// processState returns the state letter of process pid from
// /proc/PID/stat (R running, S sleeping, T stopped, ...), or 0 when it
// cannot be read.
func processState(pid int) byte {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// "pid (comm) S ...": comm may hold spaces and parentheses, the state
	// follows the last ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return 0
	}
	return s[i+2]
}
