package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// Storm is what a reconnect storm adds to a Result.
type Storm struct {
	RateLimit float64 `json:"max_accept_rate"` // the proxy's, as told by -rate-label
	// AllConnectedS is from the start to the last handshake done (only
	// when every client got one).
	AllConnectedS float64 `json:"all_connected_s,omitempty"`
	// BackendPeak is the most conns the backends accepted together in one
	// 100 ms window, and BackendPeakRate the same per second.
	BackendPeak     int     `json:"backend_peak_100ms"`
	BackendPeakRate float64 `json:"backend_peak_per_s"`
	// BackendPeak1s is the most they accepted in any 1 s (ten windows in
	// a row): max_accept_rate's burst lands in one 100 ms window, its rate
	// shows over a second.
	BackendPeak1s int `json:"backend_peak_1s"`
	Refused       int `json:"refused"`
	Reset         int `json:"reset"`
	Timeouts      int `json:"timeouts"`
	Other         int `json:"other"`
	// PeakRSSKB is the most VmRSS the proxy's processes held together,
	// sampled every 50 ms from the start until every client had echoed.
	PeakRSSKB int64 `json:"peak_rss_kb,omitempty"`
}

// runStorm connects -n WebSocket clients at once (a reconnect storm after a
// backend restart), each waiting up to -timeout for its handshake and then
// echoing one message, and reports the time until all were connected and had
// echoed, the handshake latencies, the failures by kind and the backends'
// peak accept rate (their GET /accepts). Every conn stays open until all
// are done. With -proxy-pid it adds the proxy's peak RSS, and its CPU,
// syscalls and context switches per client.
func runStorm(args []string) error {
	fs := flag.NewFlagSet("storm", flag.ExitOnError)
	var c common
	c.register(fs, "127.0.0.1:18080")
	n := fs.Int("n", 9000, "clients, all started at once")
	path := fs.String("path", "/ws", "WebSocket path")
	timeout := fs.Duration("timeout", 60*time.Second, "a client's dial and handshake, SYN retries included")
	backends := fs.String("backends", "127.0.0.1:19001,127.0.0.1:19002,127.0.0.1:19003", "the backends' HTTP addresses, for GET /accepts")
	rate := fs.Float64("rate-label", 0, "the proxy's max_accept_rate, written into the result")
	fs.Set("deadline", "5m")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if *n < 1 || *n > 20000 {
		return fmt.Errorf("-n 1..20000")
	}
	hc := &http.Client{Transport: &http.Transport{
		DialContext:       (&net.Dialer{Timeout: *timeout}).DialContext,
		DisableKeepAlives: true,
	}}
	lat := make([]time.Duration, *n)  // dial to 101
	done := make([]time.Duration, *n) // dial to the echo back
	errs := make([]error, *n)
	conns := make([]*websocket.Conn, *n)
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i := range *n {
		wg.Go(func() {
			<-gate
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), *timeout)
			defer cancel()
			if conns[i], errs[i] = wsDial(ctx, hc, c.addr(i), *path); errs[i] != nil {
				return
			}
			lat[i] = time.Since(start)
			errs[i] = echoOnce(ctx, conns[i])
			done[i] = time.Since(start)
		})
	}
	cpu := c.startCPU()
	rss := sampleRSS(c.pid)
	t0 := time.Now()
	close(gate)
	wg.Wait()
	end := time.Now()
	peak := rss.stop()

	r := &Result{Target: c.target, Name: "storm", Addr: c.addrFlag, Requested: *n, RateUnit: "conns", Seconds: end.Sub(t0).Seconds()}
	s := &Storm{RateLimit: *rate, PeakRSSKB: peak}
	r.Storm = s
	cpu.finish(r, float64(*n), 1e6, "µs/client")
	var ok []time.Duration
	var last time.Duration
	for i, err := range errs {
		if conns[i] != nil {
			conns[i].CloseNow()
		}
		if err == nil {
			ok = append(ok, lat[i])
			last = max(last, done[i])
			continue
		}
		s.tally(i, err)
	}
	r.Opened, r.Failed = len(ok), *n-len(ok)
	if r.Failed == 0 {
		s.AllConnectedS = last.Seconds()
	}
	r.P50us, r.P99us, r.P999us, r.MaxUs = latencies(ok)
	s.BackendPeak, s.BackendPeak1s, r.Note = backendPeak(split(*backends), t0, end)
	s.BackendPeakRate = float64(s.BackendPeak) * float64(time.Second/acceptWindow)
	log.Printf("storm: %d/%d connected, all in %.2fs, p50 %.0fms p99 %.0fms, backend peak %d per 100ms, %d per 1s, failed %d (refused %d, reset %d, timeout %d, other %d)",
		r.Opened, *n, s.AllConnectedS, r.P50us/1000, r.P99us/1000, s.BackendPeak, s.BackendPeak1s, r.Failed, s.Refused, s.Reset, s.Timeouts, s.Other)
	return emit(r)
}

// echoOnce sends one 16-byte message and waits for it to come back.
func echoOnce(ctx context.Context, x *websocket.Conn) error {
	msg := []byte("storm-echo-16-b!")
	if err := x.Write(ctx, websocket.MessageBinary, msg); err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	b, err := readMsg(ctx, x, make([]byte, 0, 32))
	if err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	if string(b) != string(msg) {
		return fmt.Errorf("echo mismatch")
	}
	return nil
}

// rssSampler sums VmRSS over the proxy's processes every 50 ms and keeps
// the largest sum: VmHWM is per process, and nginx's workers peak apart.
type rssSampler struct {
	stopc chan struct{}
	peak  chan int64
}

func sampleRSS(pid int) *rssSampler {
	s := &rssSampler{stopc: make(chan struct{}), peak: make(chan int64, 1)}
	pids, err := treePIDs(pid)
	if pid <= 0 || err != nil {
		s.peak <- 0
		return s
	}
	go func() {
		var peak int64
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			var sum int64
			for _, p := range pids {
				sum += vmRSS(p)
			}
			peak = max(peak, sum)
			select {
			case <-s.stopc:
				s.peak <- peak
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// stop ends the sampling (after one last sample) and returns the peak in KB.
func (s *rssSampler) stop() int64 {
	close(s.stopc)
	return <-s.peak
}

// tally counts client i's failure by kind, logging the first few odd ones.
func (s *Storm) tally(i int, err error) {
	switch failure(err) {
	case "refused":
		s.Refused++
	case "reset":
		s.Reset++
	case "timeout":
		s.Timeouts++
	default:
		if s.Other < 5 {
			log.Printf("storm: client %d: %v", i, err)
		}
		s.Other++
	}
}

// acceptWindow is the width of bench/backend's accept windows.
const acceptWindow = 100 * time.Millisecond

// failure names the kind of a failed client: what a user of the client
// would see.
func failure(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "other"
}

// backendPeak sums the backends' accepts per 100 ms window between from and
// to (a window either side included) and returns the largest sum, and the
// largest over ten windows in a row, or a note saying why it could not.
func backendPeak(addrs []string, from, to time.Time) (peak, peak1s int, note string) {
	hc := &http.Client{Timeout: 5 * time.Second}
	sum := map[int64]int{}
	lo, hi := from.Add(-acceptWindow).UnixMilli(), to.Add(acceptWindow).UnixMilli()
	for _, a := range addrs {
		resp, err := hc.Get("http://" + a + "/accepts")
		if err != nil {
			return 0, 0, fmt.Sprintf("backend %s: %v", a, err)
		}
		var got struct {
			Windows map[string]int `json:"windows"`
		}
		err = json.NewDecoder(bufio.NewReader(resp.Body)).Decode(&got)
		resp.Body.Close()
		if err != nil {
			return 0, 0, fmt.Sprintf("backend %s: /accepts: %v", a, err)
		}
		for k, v := range got.Windows {
			if w, err := strconv.ParseInt(k, 10, 64); err == nil && w >= lo && w <= hi {
				sum[w] += v
			}
		}
	}
	step := acceptWindow.Milliseconds()
	for w, v := range sum {
		peak = max(peak, v)
		second := 0
		for i := range int64(10) {
			second += sum[w+i*step]
		}
		peak1s = max(peak1s, second)
	}
	return peak, peak1s, ""
}

// runStormTable prints the storm results of -in (JSON lines of runStorm) as
// a markdown table, one row per run.
func runStormTable(args []string) error {
	fs := flag.NewFlagSet("stormtable", flag.ExitOnError)
	in := fs.String("in", "", "JSON lines written by loadgen storm")
	fs.Parse(args)
	f, err := os.Open(*in)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Println("| max_accept_rate | clients | connected | all connected after | handshake p50 | p99 | max | backends' peak accepts in 100 ms (as a rate) | in 1 s | failed: refused / reset / timeout / other |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r Result // Storm's fields are inlined in the line
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return fmt.Errorf("%s: %w", *in, err)
		}
		if r.Storm == nil {
			return fmt.Errorf("%s: not a storm result: %s", *in, sc.Bytes())
		}
		limit, all := "0 (unlimited)", "not all"
		if r.RateLimit > 0 {
			limit = strconv.FormatFloat(r.RateLimit, 'f', -1, 64) + "/s"
		}
		if r.AllConnectedS > 0 {
			all = fmt.Sprintf("%.2f s", r.AllConnectedS)
		}
		fmt.Printf("| %s | %d | %d | %s | %s | %s | %s | %d (%.0f/s) | %d | %d: %d / %d / %d / %d |\n",
			limit, r.Requested, r.Opened, all, ms(r.P50us), ms(r.P99us), ms(r.MaxUs),
			r.BackendPeak, r.BackendPeakRate, r.BackendPeak1s, r.Failed, r.Refused, r.Reset, r.Timeouts, r.Other)
	}
	return sc.Err()
}

// ms writes µs as milliseconds, or seconds from 10 s up.
func ms(us float64) string {
	if us >= 10e6 {
		return fmt.Sprintf("%.1f s", us/1e6)
	}
	return fmt.Sprintf("%.0f ms", us/1e3)
}
