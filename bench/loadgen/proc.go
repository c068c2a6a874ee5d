package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clkTck is USER_HZ, the unit of utime and stime in /proc/PID/stat. It is 100
// on every Linux architecture Go supports (the kernel exports USER_HZ, not
// CONFIG_HZ, there); `getconf CLK_TCK` confirms it.
const clkTck = 100

// Snap is a process tree's resources at one moment: the root process and every
// descendant (nginx master and workers, haproxy, wslb).
type Snap struct {
	Procs      int     `json:"procs"`
	CPUSeconds float64 `json:"cpu_s"` // utime+stime, all threads, summed over the tree
	RSSKB      int64   `json:"rss_kb"`
	FDs        int     `json:"fds"`
}

type procStat struct {
	ppid  int
	ticks int64
}

// readStat parses /proc/PID/stat: the fields after the command name, which
// is in parentheses and may itself hold spaces or parentheses.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	return parseStat(b)
}

func parseStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("stat: no ')'")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("stat: %d fields", len(f))
	}
	ppid, err1 := strconv.Atoi(f[1])
	ut, err2 := strconv.ParseInt(f[11], 10, 64)
	st, err3 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return procStat{}, fmt.Errorf("stat: bad number")
	}
	return procStat{ppid: ppid, ticks: ut + st}, nil
}

// tree returns root and its descendants, with their stat.
func tree(root int) (map[int]procStat, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	all := map[int]procStat{}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil {
			continue // gone meanwhile
		}
		all[pid] = st
		children[st.ppid] = append(children[st.ppid], pid)
	}
	if _, ok := all[root]; !ok {
		return nil, fmt.Errorf("no process %d", root)
	}
	out := map[int]procStat{}
	queue := []int{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if _, seen := out[p]; seen {
			continue
		}
		out[p] = all[p]
		queue = append(queue, children[p]...)
	}
	return out, nil
}

// snapshot sums CPU, VmRSS and open fds over root's tree.
func snapshot(root int) (Snap, error) {
	t, err := tree(root)
	if err != nil {
		return Snap{}, err
	}
	var s Snap
	var ticks int64
	for pid, st := range t {
		s.Procs++
		ticks += st.ticks
		s.RSSKB += vmRSS(pid)
		if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
			s.FDs += len(fds)
		}
	}
	s.CPUSeconds = float64(ticks) / clkTck
	return s, nil
}

// vmRSS returns VmRSS in KB from /proc/PID/status, 0 when unreadable.
func vmRSS(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

func runProcstat(args []string) error {
	fs := flag.NewFlagSet("procstat", flag.ExitOnError)
	pid := fs.Int("pid", 0, "root pid of the tree")
	fs.Parse(args)
	s, err := snapshot(*pid)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(s)
	fmt.Printf("%s\n", b)
	return nil
}
