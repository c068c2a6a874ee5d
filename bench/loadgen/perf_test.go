package main

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestParsePerf(t *testing.T) {
	for _, c := range []struct {
		name     string
		in       string
		sys, css int64
		bad      bool
	}{
		{name: "counted", in: "# started on Sat Dec  5 06:35:38 2026\n\n15400,,raw_syscalls:sys_enter,441504256,100.00,,\n208,,context-switches,441532640,100.00,,\n", sys: 15400, css: 208},
		{name: "not counted", in: "<not counted>,,raw_syscalls:sys_enter,0,100.00,,\n<not counted>,,context-switches,0,100.00,,\n"},
		{name: "one missing", in: "12,,raw_syscalls:sys_enter,1,100.00,,\n", bad: true},
		{name: "empty", in: "", bad: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			sys, css, err := parsePerf([]byte(c.in))
			if (err != nil) != c.bad {
				t.Fatalf("err = %v, want error %v", err, c.bad)
			}
			if sys != c.sys || css != c.css {
				t.Errorf("got %d syscalls, %d switches, want %d, %d", sys, css, c.sys, c.css)
			}
		})
	}
}

// TestPerfNACell: a result without perf counts says why in its cells, and
// storm rows read the inlined Storm fields.
func TestPerfNACell(t *testing.T) {
	one, cpu := 3.0, 120.0
	rs := []*Result{
		{Target: "haproxy", Name: "http", Ops: 10, Rate: 10, SyscallsPerOp: &one, CtxSwPerOp: &one},
		{Target: "wslb", Name: "http", Ops: 10, Rate: 10, PerfNA: "no | tracefs"},
		{Target: "haproxy", Name: "storm", Requested: 9, Opened: 9, P99us: 2000, CPUPerOp: &cpu,
			Storm: &Storm{AllConnectedS: 1.5, PeakRSSKB: 2048}},
	}
	out := report(rs, []string{"haproxy", "wslb"}, nil)
	for _, want := range []string{
		"| HTTP: proxy syscalls/request | ↓ | 3.00 | n/a (perf cannot count here: no / tracefs) |",
		"| storm: s until all connected and echoed | ↓ | 1.50 |",
		"| storm: proxy peak RSS MiB | ↓ | 2.00 |",
		"| storm: proxy CPU µs/client | ↓ | 120 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

// TestPerfCounts counts a short-lived child that makes syscalls; skipped
// where perf is missing or cannot count (not root, no tracefs).
func TestPerfCounts(t *testing.T) {
	if err := exec.Command("perf", "stat", "-e", perfEvents, "true").Run(); err != nil {
		t.Skipf("perf cannot count here: %v", err)
	}
	cmd := exec.Command("sh", "-c", "while :; do cat /proc/self/stat >/dev/null; sleep 0.01; done")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	p, err := startPerf("perf", []int{cmd.Process.Pid})
	if err != nil {
		t.Skipf("perf cannot count here: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	if p.syscalls < 100 {
		t.Errorf("perf counted %d syscalls of a busy shell loop", p.syscalls)
	}
}
