package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// runBulk: -streams raw TCP conns each send 's' (sink mode) then write -buf
// byte buffers as fast as they go until the duration ends, half-close, and
// wait for the backend's count of the bytes it received. Throughput counts
// only bytes the backend confirmed, over the time until the last count came.
func runBulk(args []string) error {
	fs := flag.NewFlagSet("bulk", flag.ExitOnError)
	var c common
	c.register(fs, "127.0.0.1:18081")
	streams := fs.Int("streams", 1, "parallel streams")
	bufSize := fs.Int("buf", 256<<10, "bytes per write")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if *streams < 1 || *streams > 256 || *bufSize < 1 || *bufSize > 64<<20 {
		return fmt.Errorf("-streams 1..256, -buf 1..64MiB")
	}
	conns := make([]*net.TCPConn, *streams)
	for i := range conns {
		x, err := net.DialTimeout("tcp", c.addr(i), 5*time.Second)
		if err != nil {
			return fmt.Errorf("dial %s: %w", c.addr(i), err)
		}
		defer x.Close()
		conns[i] = x.(*net.TCPConn)
		if _, err := conns[i].Write([]byte{'s'}); err != nil {
			return err
		}
	}
	type res struct {
		wrote, acked int64
		err          error
	}
	out := make([]res, len(conns))
	cpu := c.startCPU()
	start := time.Now()
	end := start.Add(c.dur)
	var wg sync.WaitGroup
	for i, x := range conns {
		wg.Add(1)
		go func(i int, x *net.TCPConn) {
			defer wg.Done()
			x.SetDeadline(end.Add(30 * time.Second))
			buf := make([]byte, *bufSize)
			for j := range buf {
				buf[j] = byte(j)
			}
			var w int64
			for time.Now().Before(end) {
				n, err := x.Write(buf)
				w += int64(n)
				if err != nil {
					out[i] = res{wrote: w, err: err}
					return
				}
			}
			if err := x.CloseWrite(); err != nil {
				out[i] = res{wrote: w, err: err}
				return
			}
			line, err := bufio.NewReader(x).ReadString('\n')
			if err != nil {
				out[i] = res{wrote: w, err: fmt.Errorf("reading the count: %w", err)}
				return
			}
			n, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
			if err != nil {
				out[i] = res{wrote: w, err: fmt.Errorf("count %q: %w", line, err)}
				return
			}
			out[i] = res{wrote: w, acked: n}
		}(i, x)
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	r := &Result{Target: c.target, Round: c.round, Name: fmt.Sprintf("bulk-%d", *streams), Addr: c.addrFlag, Conns: *streams, RateUnit: "MiB/s"}
	var notes []string
	for i, o := range out {
		r.Ops += o.acked
		if o.err != nil {
			r.Errors++
			notes = append(notes, fmt.Sprintf("stream %d: %v", i, o.err))
		} else if o.acked != o.wrote {
			r.Errors++
			notes = append(notes, fmt.Sprintf("stream %d: wrote %d, backend counted %d", i, o.wrote, o.acked))
		}
	}
	r.Note = strings.Join(notes, "; ")
	r.Seconds = el
	r.Rate = float64(r.Ops) / (1 << 20) / el
	cpu.finish(r, float64(r.Ops)/(1<<30), 1e3, "ms/GiB")
	return emit(r)
}
