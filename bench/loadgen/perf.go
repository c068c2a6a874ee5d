package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// perfEvents are what perf stat counts for the proxy: every syscall entry
// and every context switch, of all its processes and threads. Unlike CPU
// time, these counts barely move between runs on a noisy shared machine.
const perfEvents = "raw_syscalls:sys_enter,context-switches"

// perfCounter runs `perf stat -p PIDS` on the proxy's process tree for one
// measured window. perf starts with its events disabled (-D -1) and is
// enabled and disabled through its control fds, each time waiting for its
// ack, so the counts cover exactly the window and not perf's own start-up.
type perfCounter struct {
	cmd      *exec.Cmd
	ctl      *os.File // we write "enable"/"disable" here
	ack      *bufio.Reader
	ackFile  *os.File
	out      string // perf's -o file
	stderr   bytes.Buffer
	syscalls int64
	switches int64
}

// startPerf attaches perf to pids and enables counting; the error says
// why perf cannot count here.
func startPerf(bin string, pids []int) (*perfCounter, error) {
	out, err := os.CreateTemp("", "loadgen-perf-*.csv")
	if err != nil {
		return nil, fmt.Errorf("perf output file: %w", err)
	}
	out.Close()
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	ackR, ackW, err := os.Pipe()
	if err != nil {
		ctlR.Close()
		ctlW.Close()
		return nil, err
	}
	list := make([]string, len(pids))
	for i, p := range pids {
		list[i] = strconv.Itoa(p)
	}
	p := &perfCounter{ctl: ctlW, ack: bufio.NewReader(ackR), ackFile: ackR, out: out.Name()}
	// fds 3 and 4 in perf are ExtraFiles[0] and [1].
	p.cmd = exec.Command(bin, "stat", "-x,", "-o", p.out, "-e", perfEvents,
		"-D", "-1", "--control", "fd:3,4", "-p", strings.Join(list, ","))
	p.cmd.ExtraFiles = []*os.File{ctlR, ackW}
	p.cmd.Stderr = &p.stderr
	err = p.cmd.Start()
	ctlR.Close()
	ackW.Close()
	if err != nil {
		p.close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	if err := p.command("enable"); err != nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
		p.close()
		return nil, fmt.Errorf("%w: %s", err, p.why())
	}
	return p, nil
}

// command sends "enable" or "disable" and waits for perf's ack. A perf
// that cannot count exits instead, which closes the ack pipe.
func (p *perfCounter) command(c string) error {
	if _, err := p.ctl.WriteString(c + "\n"); err != nil {
		return fmt.Errorf("perf %s: %w", c, err)
	}
	p.ackFile.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := p.ack.ReadString('\n')
	if err != nil {
		return fmt.Errorf("perf %s: no ack: %w", c, err)
	}
	// perf writes "ack\n" with C's terminating NUL: the NUL arrives
	// first in the next read.
	if strings.Trim(line, "\x00\n ") != "ack" {
		return fmt.Errorf("perf %s: ack %q", c, line)
	}
	return nil
}

// why is perf's own complaint, shortened to one line.
func (p *perfCounter) why() string {
	for l := range strings.Lines(p.stderr.String()) {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "Events") {
			return l
		}
	}
	return "perf said nothing"
}

// stop disables counting, ends perf and reads its counts.
func (p *perfCounter) stop() error {
	defer p.close()
	err := p.command("disable")
	p.cmd.Process.Signal(syscall.SIGINT) // perf stat writes its counts on SIGINT
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-done
		return fmt.Errorf("perf did not end after SIGINT")
	}
	if err != nil {
		return err
	}
	b, err := os.ReadFile(p.out)
	if err != nil {
		return fmt.Errorf("perf output: %w", err)
	}
	p.syscalls, p.switches, err = parsePerf(b)
	return err
}

func (p *perfCounter) close() {
	p.ctl.Close()
	p.ackFile.Close()
	os.Remove(p.out)
}

// parsePerf reads perf stat -x, output: "count,unit,event,...". A count of
// "<not counted>" (the proxy never ran in the window) is 0.
func parsePerf(b []byte) (syscalls, switches int64, err error) {
	found := 0
	for l := range strings.Lines(string(b)) {
		f := strings.Split(strings.TrimSpace(l), ",")
		if len(f) < 3 || strings.HasPrefix(f[0], "#") {
			continue
		}
		var n int64
		if !strings.HasPrefix(f[0], "<") {
			if n, err = strconv.ParseInt(f[0], 10, 64); err != nil {
				return 0, 0, fmt.Errorf("perf output %q: %w", l, err)
			}
		}
		switch f[2] {
		case "raw_syscalls:sys_enter":
			syscalls, found = n, found+1
		case "context-switches", "cs":
			switches, found = n, found+1
		}
	}
	if found != 2 {
		return 0, 0, fmt.Errorf("perf output without both counts: %q", b)
	}
	return syscalls, switches, nil
}

// treePIDs is root and its descendants, sorted (nginx: master and workers).
func treePIDs(root int) ([]int, error) {
	t, err := tree(root)
	if err != nil {
		return nil, err
	}
	var pids []int
	for p := range t {
		pids = append(pids, p)
	}
	slices.Sort(pids)
	return pids, nil
}
