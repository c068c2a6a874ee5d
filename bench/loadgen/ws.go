package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/coder/websocket"
)

// wsClient is an HTTP client for WebSocket dials only: every dial is a new
// TCP conn (the upgraded conn is handed over, never pooled).
func wsClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext:        (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			DisableCompression: true,
			DisableKeepAlives:  true,
		},
		Timeout: 10 * time.Second,
	}
}

func wsDial(ctx context.Context, hc *http.Client, addr, path string) (*websocket.Conn, error) {
	return wsDialURL(ctx, hc, "ws://"+addr+path)
}

// wsDialURL opens a WebSocket to url (ws:// or wss://) through hc.
func wsDialURL(ctx context.Context, hc *http.Client, url string) (*websocket.Conn, error) {
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(1 << 20)
	return c, nil
}

// readMsg reads one whole message into buf (reused), as io.ReadAll would.
func readMsg(ctx context.Context, c *websocket.Conn, buf []byte) ([]byte, error) {
	_, rd, err := c.Reader(ctx)
	if err != nil {
		return buf, err
	}
	b := bytes.NewBuffer(buf[:0])
	_, err = b.ReadFrom(rd)
	return b.Bytes(), err
}

// dialAll opens n WebSockets with at most par dials at once.
func dialAll(c *common, n, par int, path string) ([]*websocket.Conn, error) {
	hc := wsClient()
	conns := make([]*websocket.Conn, n)
	errs := make([]error, n)
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conns[i], errs[i] = wsDial(ctx, hc, c.addr(i), path)
		}(i)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, x := range conns {
			if x != nil {
				x.CloseNow()
			}
		}
		return nil, err
	}
	return conns, nil
}

// runWSEcho: -c conns each echo -size byte binary messages. Unpaced, every
// conn has one message in flight (send, wait for the echo, send again).
// With -rate R, sends are scheduled at fixed times (R/s in total, every
// 1/R s, round robin over the conns) whether or not the echoes came back,
// and each round trip is measured from the message's scheduled send time,
// so a stall shows up in the latencies instead of silently delaying the
// schedule (no coordinated omission).
func runWSEcho(args []string) error {
	fs := flag.NewFlagSet("wsecho", flag.ExitOnError)
	var c common
	c.register(fs, "127.0.0.1:18080")
	n := fs.Int("c", 50, "WebSocket conns")
	size := fs.Int("size", 128, "message size in bytes (>= 16)")
	rate := fs.Float64("rate", 0, "total msgs/s, paced; 0: unpaced, as fast as echoes return")
	path := fs.String("path", "/ws", "WebSocket path")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if *n < 1 || *n > 5000 || *size < 16 || *size > 1<<20 || *rate < 0 || *rate > 1e6 {
		return fmt.Errorf("flags out of range: -c 1..5000, -size 16..1MiB, -rate 0..1e6")
	}
	conns, err := dialAll(&c, *n, 50, *path)
	if err != nil {
		return err
	}
	defer func() {
		for _, x := range conns {
			x.CloseNow()
		}
	}()
	r := &Result{Target: c.target, Round: c.round, Name: "wsecho", Addr: c.addrFlag, Conns: *n, RateUnit: "msgs/s"}
	if *rate > 0 {
		r.Name = "wsecho-paced"
		r.TargetRate = *rate
		return emitAfter(r, wsPaced(&c, r, conns, *size, *rate))
	}
	return emitAfter(r, wsUnpaced(&c, r, conns, *size))
}

func emitAfter(r *Result, err error) error {
	if err != nil {
		return err
	}
	return emit(r)
}

// watchdog closes every conn once grace has passed after end, so that no
// read stays blocked on a proxy that stopped answering.
func watchdog(conns []*websocket.Conn, at time.Time) *time.Timer {
	return time.AfterFunc(time.Until(at), func() {
		for _, x := range conns {
			x.CloseNow()
		}
	})
}

func wsUnpaced(c *common, r *Result, conns []*websocket.Conn, size int) error {
	var ok, bad atomic.Int64
	cpu := c.startCPU()
	start := time.Now()
	end := start.Add(c.dur)
	wd := watchdog(conns, end.Add(10*time.Second))
	defer wd.Stop()
	var wg sync.WaitGroup
	for _, x := range conns {
		wg.Add(1)
		go func(x *websocket.Conn) {
			defer wg.Done()
			ctx := context.Background()
			msg := make([]byte, size)
			buf := make([]byte, 0, size)
			var err error
			for time.Now().Before(end) {
				if err = x.Write(ctx, websocket.MessageBinary, msg); err != nil {
					bad.Add(1)
					return
				}
				if buf, err = readMsg(ctx, x, buf); err != nil || len(buf) != size {
					bad.Add(1)
					return
				}
				ok.Add(1)
			}
		}(x)
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	r.Seconds, r.Ops, r.Errors = el, ok.Load(), bad.Load()
	r.Rate = float64(r.Ops) / el
	cpu.finish(r, float64(r.Ops), 1e6, "µs/msg")
	return nil
}

func wsPaced(c *common, r *Result, conns []*websocket.Conn, size int, rate float64) error {
	n := len(conns)
	interval := time.Duration(float64(time.Second) / rate)
	if interval <= 0 {
		return fmt.Errorf("rate %v too high", rate)
	}
	total := int64(c.dur / interval)
	lats := make([][]time.Duration, n)
	sent := make([]int64, n)
	var lags []time.Duration // how late the writers sent, every 16th message of each conn
	var bad atomic.Int64
	cpu := c.startCPU()
	// Start a little ahead so every reader is waiting when the schedule begins.
	t0 := time.Now().Add(20 * time.Millisecond)
	end := t0.Add(c.dur)
	grace := end.Add(2 * time.Second) // echoes later than this count as lost
	var got atomic.Int64
	var rwg sync.WaitGroup
	for i, x := range conns {
		lats[i] = make([]time.Duration, 0, total/int64(n)+2)
		rwg.Add(1)
		go func(i int, x *websocket.Conn) { // reader, until its conn is closed
			defer rwg.Done()
			ctx := context.Background()
			buf := make([]byte, 0, size)
			var err error
			for {
				if buf, err = readMsg(ctx, x, buf); err != nil {
					return
				}
				now := time.Since(t0)
				if len(buf) != size {
					bad.Add(1)
					continue
				}
				sched := time.Duration(binary.LittleEndian.Uint64(buf[8:16]))
				lats[i] = append(lats[i], now-sched)
				got.Add(1)
			}
		}(i, x)
	}
	// The pacer: one goroutine on its own OS thread hands message k to conn
	// k%n's writer at t0 + k*interval, sleeping with nanosleep in between.
	// Go's timers (time.Sleep) wake up to a millisecond late when the
	// process is idle, which would be measured as latency; nanosleep with a
	// 1µs timer slack is late by a few µs. The writers, one per conn, send
	// what they are handed at once; their queues hold the whole run, so a
	// conn whose proxy stops reading delays its own messages only, never the
	// schedule of the others. A late send is never re-based: its round trip
	// counts from its scheduled time.
	queues := make([]chan time.Duration, n)
	lagsBy := make([][]time.Duration, n)
	var wwg sync.WaitGroup
	for i, x := range conns {
		queues[i] = make(chan time.Duration, total/int64(n)+1)
		wwg.Add(1)
		go func(i int, x *websocket.Conn) { // writer
			defer wwg.Done()
			ctx := context.Background()
			msg := make([]byte, size)
			var k int64
			for sched := range queues[i] {
				if k%16 == 0 {
					lagsBy[i] = append(lagsBy[i], time.Since(t0)-sched)
				}
				k++
				binary.LittleEndian.PutUint64(msg[0:8], uint64(k))
				binary.LittleEndian.PutUint64(msg[8:16], uint64(sched))
				if err := x.Write(ctx, websocket.MessageBinary, msg); err != nil {
					bad.Add(1)
					for range queues[i] { // drain: the rest are lost
					}
					return
				}
				sent[i]++
			}
		}(i, x)
	}
	go func() {
		// Never unlocked: the thread, with its priority, ends with the goroutine.
		runtime.LockOSThread()
		setTimerSlack(1000)
		setFIFO()
		for k := int64(0); k < total; k++ {
			sched := time.Duration(k) * interval
			if d := sched - time.Since(t0); d > 0 {
				nanosleep(d)
			}
			queues[k%int64(n)] <- sched
		}
		for _, q := range queues {
			close(q)
		}
	}()
	wwg.Wait()
	var nsent int64
	for _, v := range sent {
		nsent += v
	}
	for _, l := range lagsBy {
		lags = append(lags, l...)
	}
	// Once every echo is back (or at the grace time), close the conns, which
	// ends the readers.
	for got.Load() < nsent && time.Now().Before(grace) {
		time.Sleep(time.Millisecond)
	}
	for _, x := range conns {
		x.CloseNow()
	}
	rwg.Wait()
	el := time.Since(t0).Seconds()
	var all []time.Duration
	for i := range n {
		all = append(all, lats[i]...)
		if slices.ContainsFunc(lats[i], func(d time.Duration) bool { return d > 10*time.Millisecond }) {
			r.SlowConns++
		}
	}
	r.Seconds = c.dur.Seconds()
	r.Sent = nsent
	r.Ops = int64(len(all))
	r.Errors = bad.Load() + (nsent - r.Ops)
	r.Rate = float64(r.Ops) / c.dur.Seconds()
	r.P50us, r.P99us, r.P999us, r.MaxUs = latencies(all)
	_, r.SendLagP99us, _, r.SendLagMaxUs = latencies(lags)
	if lost := nsent - r.Ops; lost > 0 {
		r.Note = fmt.Sprintf("%d of %d messages not echoed within 2s of the end", lost, nsent)
	}
	cpu.finish(r, float64(r.Ops), 1e6, "µs/msg")
	logf("wsecho-paced", "%d sent, %d echoed, window+drain %.2fs, send lag p99 %.0fµs max %.0fµs, %d conns had a round trip over 10ms",
		nsent, r.Ops, el, r.SendLagP99us, r.SendLagMaxUs, r.SlowConns)
	return nil
}

// nanosleep sleeps d on the calling OS thread (the pacer locks its thread).
func nanosleep(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	for {
		var rem syscall.Timespec
		if err := syscall.Nanosleep(&ts, &rem); err != syscall.EINTR {
			return
		}
		ts = rem
	}
}

// setFIFO makes the calling thread SCHED_FIFO (priority 10), so that it runs
// as soon as its sleep ends instead of waiting for a busy CPU's time slice.
// Without the privilege (not root) it stays as it is.
func setFIFO() {
	param := [1]int32{10}
	syscall.RawSyscall(syscall.SYS_SCHED_SETSCHEDULER, 0, 1 /* SCHED_FIFO */, uintptr(unsafe.Pointer(&param[0])))
}

// setTimerSlack sets the calling thread's timer slack (PR_SET_TIMERSLACK):
// how late the kernel may wake a sleep, 50µs by default.
func setTimerSlack(ns uintptr) {
	const prSetTimerSlack = 29
	syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, ns, 0)
}

// runHandshake: -c workers, each repeating connect, upgrade, one echo of a
// 16-byte message, and a clean close (close frame both ways), until the end.
func runHandshake(args []string) error {
	fs := flag.NewFlagSet("handshake", flag.ExitOnError)
	var c common
	c.register(fs, "127.0.0.1:18080")
	workers := fs.Int("c", 50, "concurrent workers")
	path := fs.String("path", "/ws", "WebSocket path")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if *workers < 1 || *workers > 2000 {
		return fmt.Errorf("-c %d: must be 1..2000", *workers)
	}
	hc := wsClient()
	var ok, bad atomic.Int64
	var firstErr atomic.Value
	cpu := c.startCPU()
	start := time.Now()
	end := start.Add(c.dur)
	var wg sync.WaitGroup
	for w := range *workers {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			msg := []byte("handshake-echo!!")
			buf := make([]byte, 0, 64)
			for i := w; time.Now().Before(end); i += *workers {
				if err := oneHandshake(hc, c.addr(i), *path, msg, &buf); err != nil {
					bad.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					// A refusing proxy must not turn this into a busy loop.
					time.Sleep(10 * time.Millisecond)
					continue
				}
				ok.Add(1)
			}
		}(w)
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	r := &Result{Target: c.target, Round: c.round, Name: "handshake", Addr: c.addrFlag, Conns: *workers, RateUnit: "handshakes/s"}
	r.Seconds, r.Ops, r.Errors = el, ok.Load(), bad.Load()
	r.Rate = float64(r.Ops) / el
	if e, _ := firstErr.Load().(string); e != "" {
		r.Note = "first error: " + e
	}
	cpu.finish(r, float64(r.Ops), 1e6, "µs/handshake")
	return emit(r)
}

func oneHandshake(hc *http.Client, addr, path string, msg []byte, buf *[]byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	x, err := wsDial(ctx, hc, addr, path)
	if err != nil {
		return err
	}
	defer x.CloseNow()
	if err := x.Write(ctx, websocket.MessageBinary, msg); err != nil {
		return err
	}
	b, err := readMsg(ctx, x, *buf)
	*buf = b
	if err != nil {
		return err
	}
	if string(b) != string(msg) {
		return fmt.Errorf("echo mismatch")
	}
	return x.Close(websocket.StatusNormalClosure, "")
}
