// Command loadgen drives the side-by-side benchmark of bench/run.sh. It is not
// part of wslb. Each workload subcommand prints one JSON line (a Result) on
// stdout and its progress on stderr:
//
//	loadgen http      keep-alive GET req/s (wrk when installed, else a Go client)
//	loadgen handshake WebSocket handshakes/s: connect, upgrade, one echo, close
//	loadgen wsecho    WebSocket echo msgs/s over N conns; -rate R paces R msgs/s
//	                  in total and reports the round-trip p50/p99/max
//	loadgen bulk      raw TCP bulk MiB/s over -streams streams into a sink
//	loadgen idle      open N WebSockets (-mode ws; over TLS: wss, one conn each, or h2,
//	                  RFC 8441 streams sharing conns) or raw TCP conns (-mode tcp),
//	                  measure the proxy's RSS and fds per conn, check a sample
//	loadgen storm     N WebSocket clients at once (a reconnect storm), each
//	                  doing its handshake and one echo: time until all have,
//	                  handshake p50/p99, failures, the backends' peak accept
//	                  rate, the proxy's peak RSS (run.sh's storm phase,
//	                  bench/storm.sh)
//	loadgen stormtable  storm results as a markdown table
//	loadgen probe     wait until a proxy (or the backends) answers
//	loadgen procstat  print a proxy process tree's CPU, RSS and fds
//	loadgen report    turn the JSON lines into the markdown table
//
// With -proxy-pid, CPU (utime+stime) of that process and all its descendants
// is read from /proc before and after the measured window, and perf stat
// (-perf) counts their syscalls and context switches in between. Every loop is
// bounded by a duration and every conn by deadlines, so nothing runs forever.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"time"
)

func main() {
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	log.SetPrefix("loadgen: ")
	if len(os.Args) < 2 {
		usage()
	}
	cmd, args := os.Args[1], os.Args[2:]
	var err error
	switch cmd {
	case "http":
		err = runHTTP(args)
	case "handshake":
		err = runHandshake(args)
	case "wsecho":
		err = runWSEcho(args)
	case "bulk":
		err = runBulk(args)
	case "idle":
		err = runIdle(args)
	case "storm":
		err = runStorm(args)
	case "stormtable":
		err = runStormTable(args)
	case "probe":
		err = runProbe(args)
	case "procstat":
		err = runProcstat(args)
	case "report":
		err = runReport(args)
	default:
		usage()
	}
	if err != nil {
		log.Printf("%s: %v", cmd, err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: loadgen http|handshake|wsecho|bulk|idle|storm|stormtable|probe|procstat|report [flags] (-h for flags)")
	os.Exit(2)
}

// Result is one workload's outcome, printed as one JSON line.
type Result struct {
	Target string `json:"target"`
	// Name identifies the figure group: http, handshake, wsecho,
	// wsecho-paced, bulk-1, bulk-8, idle-l7, idle-l4.
	Name     string  `json:"name"`
	Round    int     `json:"round,omitempty"` // which round of run.sh (0: not said)
	Addr     string  `json:"addr"`
	Engine   string  `json:"engine,omitempty"`
	Conns    int     `json:"conns,omitempty"`
	Seconds  float64 `json:"seconds"`         // the measured window
	Ops      int64   `json:"ops"`             // requests, handshakes, messages echoed, or bytes (bulk)
	Errors   int64   `json:"errors"`          // failed ops (and, for paced echo, lost messages)
	Rate     float64 `json:"rate"`            // ops per second; MiB/s for bulk
	RateUnit string  `json:"rate_unit"`       // req/s, handshakes/s, msgs/s, MiB/s
	Note     string  `json:"note,omitempty"`  // anything odd, in words
	Extra    string  `json:"extra,omitempty"` // engine output worth keeping

	// Proxy CPU over the window (absent without -proxy-pid): seconds, and per
	// op in µs (per GiB in ms for bulk).
	ProxyCPU   *float64 `json:"proxy_cpu_s,omitempty"`
	CPUPerOp   *float64 `json:"cpu_per_op,omitempty"`
	CPUPerUnit string   `json:"cpu_per_unit,omitempty"`
	ProxyProcs int      `json:"proxy_procs,omitempty"`

	// Syscalls and context switches of the proxy's processes over the
	// window (perf stat), per PerfUnit (request, handshake, msg, MiB,
	// client); PerfNA says why they are missing when perf cannot count.
	Syscalls      *int64   `json:"syscalls,omitempty"`
	CtxSwitches   *int64   `json:"ctx_switches,omitempty"`
	SyscallsPerOp *float64 `json:"syscalls_per_op,omitempty"`
	CtxSwPerOp    *float64 `json:"ctx_switches_per_op,omitempty"`
	PerfUnit      string   `json:"perf_unit,omitempty"`
	PerfNA        string   `json:"perf_na,omitempty"`

	// Paced echo.
	TargetRate float64 `json:"target_rate,omitempty"`
	Sent       int64   `json:"sent,omitempty"`
	P50us      float64 `json:"p50_us,omitempty"`
	P99us      float64 `json:"p99_us,omitempty"`
	P999us     float64 `json:"p999_us,omitempty"`
	MaxUs      float64 `json:"max_us,omitempty"`
	// How late the load generator itself sent (included in the round trips above).
	SendLagP99us float64 `json:"send_lag_p99_us,omitempty"`
	SendLagMaxUs float64 `json:"send_lag_max_us,omitempty"`
	// Conns that had at least one round trip over 10 ms: a few means
	// single tunnels stalled, all of them a stall of the whole machine.
	SlowConns int `json:"slow_conns,omitempty"`

	// Idle.
	Requested  int      `json:"requested,omitempty"`
	Opened     int      `json:"opened,omitempty"`
	Failed     int      `json:"failed,omitempty"`
	SampleTry  int      `json:"sample_tried,omitempty"`
	SampleOK   int      `json:"sample_ok,omitempty"`
	Before     *Snap    `json:"before,omitempty"`
	After      *Snap    `json:"after,omitempty"`
	RSSPerConn *float64 `json:"rss_kb_per_conn,omitempty"`
	FDsPerConn *float64 `json:"fds_per_conn,omitempty"`

	// Reconnect storm (loadgen storm), its fields inlined.
	*Storm
}

func emit(r *Result) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = fmt.Printf("%s\n", b)
	return err
}

// common holds the flags every workload takes.
type common struct {
	target   string
	addrs    []string
	addrFlag string
	dur      time.Duration
	pid      int
	deadline time.Duration
	round    int
	perf     string // perf binary; "" counts no syscalls
	perfNA   string // why not, when perf is ""
}

func (c *common) register(fs *flag.FlagSet, defAddr string) {
	fs.StringVar(&c.target, "target", "", "target name written into the result (direct, nginx, haproxy, wslb)")
	fs.StringVar(&c.addrFlag, "addr", defAddr, "host:port to load, or a comma-separated list used round robin (direct to backends)")
	fs.DurationVar(&c.dur, "d", 5*time.Second, "measured duration")
	fs.IntVar(&c.pid, "proxy-pid", 0, "pid of the proxy (its descendants are included); 0: no proxy CPU")
	fs.DurationVar(&c.deadline, "deadline", 0, "give up entirely after this long (default: duration + 60s)")
	fs.IntVar(&c.round, "round", 0, "round number written into the result")
	fs.StringVar(&c.perf, "perf", "perf", "perf binary that counts the proxy's syscalls and context switches; empty: none")
	fs.StringVar(&c.perfNA, "perf-na", "", "with -perf \"\": why perf cannot count, written into the result")
}

func (c *common) parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, a := range strings.Split(c.addrFlag, ",") {
		if a = strings.TrimSpace(a); a != "" {
			c.addrs = append(c.addrs, a)
		}
	}
	if len(c.addrs) == 0 {
		return fmt.Errorf("no -addr")
	}
	if c.dur <= 0 || c.dur > time.Hour {
		return fmt.Errorf("-d %v: must be in (0, 1h]", c.dur)
	}
	if c.deadline == 0 {
		c.deadline = c.dur + 60*time.Second
	}
	// A watchdog: whatever happens, the process ends.
	time.AfterFunc(c.deadline, func() {
		log.Printf("overall deadline %v passed, exiting", c.deadline)
		os.Exit(3)
	})
	return nil
}

func (c *common) addr(i int) string { return c.addrs[i%len(c.addrs)] }

// cpuMeter reads the proxy tree's CPU at the start and end of a window, and
// counts its syscalls and context switches in between with perf.
type cpuMeter struct {
	pid    int
	start  Snap
	ok     bool
	perf   *perfCounter
	perfNA string // why there is no perf count
}

func (c *common) startCPU() *cpuMeter {
	m := &cpuMeter{pid: c.pid}
	if c.pid <= 0 {
		return m
	}
	s, err := snapshot(c.pid)
	if err != nil {
		log.Printf("proxy pid %d: %v (no CPU figure)", c.pid, err)
		return m
	}
	m.start, m.ok = s, true
	m.perfNA = c.perfNA
	if c.perf == "" {
		if m.perfNA == "" {
			m.perfNA = "not asked for (-perf \"\")"
		}
		return m
	}
	pids, err := treePIDs(c.pid)
	if err == nil {
		m.perf, err = startPerf(c.perf, pids)
	}
	if err != nil {
		m.perfNA = err.Error()
		log.Printf("proxy pid %d: perf: %v (no syscall counts)", c.pid, err)
	}
	return m
}

// finish fills r's CPU fields; per is the number of ops (or GiB for bulk)
// that the CPU is divided by, scale converts seconds into the unit (µs/req,
// ms/GiB, ...). The perf counts are per op, or per MiB where CPU is per GiB
// (a GiB is hundreds of thousands of syscalls).
func (m *cpuMeter) finish(r *Result, per float64, scale float64, unit string) {
	if !m.ok {
		return
	}
	m.finishPerf(r, per, unit)
	end, err := snapshot(m.pid)
	if err != nil {
		log.Printf("proxy pid %d: %v (no CPU figure)", m.pid, err)
		return
	}
	cpu := end.CPUSeconds - m.start.CPUSeconds
	r.ProxyCPU = &cpu
	r.ProxyProcs = end.Procs
	if per > 0 {
		v := cpu * scale / per
		r.CPUPerOp = &v
		r.CPUPerUnit = unit
	}
}

func (m *cpuMeter) finishPerf(r *Result, per float64, unit string) {
	_, op, _ := strings.Cut(unit, "/")
	if op == "GiB" {
		per, op = per*1024, "MiB"
	}
	r.PerfUnit = op
	if m.perf != nil {
		if err := m.perf.stop(); err != nil {
			m.perfNA = err.Error()
			log.Printf("perf: %v (no syscall counts)", err)
		} else {
			r.Syscalls, r.CtxSwitches = &m.perf.syscalls, &m.perf.switches
			if per > 0 {
				sc, cs := float64(m.perf.syscalls)/per, float64(m.perf.switches)/per
				r.SyscallsPerOp, r.CtxSwPerOp = &sc, &cs
			}
			return
		}
	}
	r.PerfNA = m.perfNA
}
