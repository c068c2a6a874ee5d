package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// runHTTP measures keep-alive GET / requests per second over -c conns.
func runHTTP(args []string) error {
	fs := flag.NewFlagSet("http", flag.ExitOnError)
	var c common
	c.register(fs, "127.0.0.1:18080")
	conns := fs.Int("c", 50, "keep-alive conns")
	engine := fs.String("engine", "auto", "wrk, go, or auto (wrk when it is in PATH)")
	threads := fs.Int("t", 2, "wrk threads")
	path := fs.String("path", "/", "request path")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if *conns < 1 || *conns > 5000 {
		return fmt.Errorf("-c %d: must be 1..5000", *conns)
	}
	eng := *engine
	if eng == "auto" {
		eng = "go"
		if _, err := exec.LookPath("wrk"); err == nil {
			eng = "wrk"
		}
	}
	r := &Result{Target: c.target, Round: c.round, Name: "http", Addr: c.addrFlag, Engine: eng, Conns: *conns, RateUnit: "req/s"}
	var err error
	switch eng {
	case "wrk":
		if len(c.addrs) > 1 {
			r.Note = "wrk loads one address: " + c.addrs[0]
			r.Addr = c.addrs[0]
		}
		err = httpWrk(&c, r, *conns, *threads, *path)
	case "go":
		err = httpGo(&c, r, *conns, *path)
	default:
		return fmt.Errorf("-engine %q: want wrk, go or auto", eng)
	}
	if err != nil {
		return err
	}
	return emit(r)
}

var (
	wrkRPS  = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkReqs = regexp.MustCompile(`(\d+) requests in ([0-9.]+)(us|ms|s|m|h)`)
	wrkSock = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2 = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

func httpWrk(c *common, r *Result, conns, threads int, path string) error {
	secs := int(c.dur.Round(time.Second) / time.Second)
	if secs < 1 {
		secs = 1
	}
	url := "http://" + c.addrs[0] + path
	ctx, cancel := context.WithTimeout(context.Background(), c.dur+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "wrk", "-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns),
		"-d", fmt.Sprintf("%ds", secs), "--timeout", "5s", "--latency", url)
	cpu := c.startCPU()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("wrk: %v: %s", err, out)
	}
	if err := parseWrk(string(out), r); err != nil {
		return err
	}
	cpu.finish(r, float64(r.Ops), 1e6, "µs/req")
	return nil
}

// parseWrk fills Ops, Seconds, Rate, Errors and Extra from wrk's output.
func parseWrk(out string, r *Result) error {
	m := wrkReqs.FindStringSubmatch(out)
	rps := wrkRPS.FindStringSubmatch(out)
	if m == nil || rps == nil {
		return fmt.Errorf("wrk output not understood: %s", out)
	}
	r.Ops, _ = strconv.ParseInt(m[1], 10, 64)
	v, _ := strconv.ParseFloat(m[2], 64)
	switch m[3] {
	case "us":
		v /= 1e6
	case "ms":
		v /= 1e3
	case "m":
		v *= 60
	case "h":
		v *= 3600
	}
	r.Seconds = v
	r.Rate, _ = strconv.ParseFloat(rps[1], 64)
	if s := wrkSock.FindStringSubmatch(out); s != nil {
		for _, x := range s[1:] {
			n, _ := strconv.ParseInt(x, 10, 64)
			r.Errors += n
		}
	}
	if s := wrkNon2.FindStringSubmatch(out); s != nil {
		n, _ := strconv.ParseInt(s[1], 10, 64)
		r.Errors += n
	}
	var lat []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "Latency ") || strings.HasPrefix(l, "50%") || strings.HasPrefix(l, "99%") {
			lat = append(lat, strings.Join(strings.Fields(l), " "))
		}
	}
	r.Extra = strings.Join(lat, "; ")
	return nil
}

// httpGo is the fallback engine: each conn sends GET, reads the answer
// (status line, headers, Content-Length body), and repeats until the end.
func httpGo(c *common, r *Result, conns int, path string) error {
	req := []byte("GET " + path + " HTTP/1.1\r\nHost: bench\r\nUser-Agent: loadgen\r\n\r\n")
	cl := make([]net.Conn, 0, conns)
	defer func() {
		for _, x := range cl {
			x.Close()
		}
	}()
	for i := 0; i < conns; i++ {
		x, err := net.DialTimeout("tcp", c.addr(i), 5*time.Second)
		if err != nil {
			return fmt.Errorf("dial %s: %w", c.addr(i), err)
		}
		cl = append(cl, x)
	}
	var ok, bad atomic.Int64
	cpu := c.startCPU()
	start := time.Now()
	end := start.Add(c.dur)
	var wg sync.WaitGroup
	for _, x := range cl {
		wg.Add(1)
		go func(x net.Conn) {
			defer wg.Done()
			x.SetDeadline(end.Add(10 * time.Second))
			br := bufio.NewReaderSize(x, 16<<10)
			for time.Now().Before(end) {
				if _, err := x.Write(req); err != nil {
					bad.Add(1)
					return
				}
				status, err := readResponse(br)
				if err != nil {
					bad.Add(1)
					return
				}
				if status != 200 {
					bad.Add(1)
					continue
				}
				ok.Add(1)
			}
		}(x)
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	r.Seconds, r.Ops, r.Errors = el, ok.Load(), bad.Load()
	r.Rate = float64(r.Ops) / el
	cpu.finish(r, float64(r.Ops), 1e6, "µs/req")
	return nil
}

var errBadResponse = errors.New("bad response")

// readResponse reads one HTTP/1.1 response with a Content-Length body and
// returns its status code.
func readResponse(br *bufio.Reader) (int, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, errBadResponse
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, errBadResponse
	}
	length := -1
	for {
		h, err := br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if len(bytes.TrimRight(h, "\r\n")) == 0 {
			break
		}
		if len(h) > 15 && bytes.EqualFold(h[:15], []byte("content-length:")) {
			length, err = strconv.Atoi(string(bytes.TrimSpace(h[15:])))
			if err != nil {
				return 0, errBadResponse
			}
		}
	}
	if length < 0 {
		return 0, fmt.Errorf("%w: no Content-Length", errBadResponse)
	}
	if _, err := br.Discard(length); err != nil {
		return 0, err
	}
	return status, nil
}

// logf is log.Printf with the workload's name in front.
func logf(name, format string, args ...any) {
	log.Printf(name+": "+format, args...)
}
