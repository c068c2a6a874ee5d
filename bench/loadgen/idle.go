package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// idleConn is one held conn: a WebSocket (l7) or a raw TCP echo conn (l4).
type idleConn interface {
	// echo sends p and waits for it to come back.
	echo(ctx context.Context, p []byte) error
	close()
}

type wsIdle struct{ c *websocket.Conn }

func (w wsIdle) echo(ctx context.Context, p []byte) error {
	if err := w.c.Write(ctx, websocket.MessageBinary, p); err != nil {
		return err
	}
	b, err := readMsg(ctx, w.c, nil)
	if err != nil {
		return err
	}
	if !bytes.Equal(b, p) {
		return fmt.Errorf("echo mismatch")
	}
	return nil
}

func (w wsIdle) close() { w.c.CloseNow() }

type tcpIdle struct{ c net.Conn }

func (t tcpIdle) echo(ctx context.Context, p []byte) error {
	dl, _ := ctx.Deadline()
	t.c.SetDeadline(dl)
	defer t.c.SetDeadline(time.Time{})
	if _, err := t.c.Write(p); err != nil {
		return err
	}
	b := make([]byte, len(p))
	if _, err := io.ReadFull(t.c, b); err != nil {
		return err
	}
	if !bytes.Equal(b, p) {
		return fmt.Errorf("echo mismatch")
	}
	return nil
}

func (t tcpIdle) close() { t.c.Close() }

// dialTCPEcho opens a raw conn in echo mode and waits for one byte to come
// back, so the whole path (proxy and its backend conn) is up.
func dialTCPEcho(addr string) (idleConn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("e.")); err != nil {
		c.Close()
		return nil, err
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != '.' {
		c.Close()
		return nil, fmt.Errorf("echo check: %v", err)
	}
	c.SetDeadline(time.Time{})
	return tcpIdle{c}, nil
}

// runIdle opens -n conns, -par at a time, measures the proxy tree before
// (this process's start, so the caller starts the proxy fresh) and after
// (once all are open and -d has passed), prints READY on stderr, optionally
// holds them until SIGUSR1, a line on stdin, or -hold, then checks that a
// sample spread over the set still echoes, and closes them all.
func runIdle(args []string) error {
	fs := flag.NewFlagSet("idle", flag.ExitOnError)
	var c common
	c.register(fs, "127.0.0.1:18080")
	fs.Set("d", "3s")
	fs.Set("deadline", "10m")
	mode := fs.String("mode", "ws", "ws: WebSockets on -path (l7); wss: the same over TLS, a conn each; h2: over TLS as HTTP/2 streams (RFC 8441), many per conn; tcp: raw echo conns (l4)")
	n := fs.Int("n", 9000, "conns to open")
	par := fs.Int("par", 100, "dials at once")
	sample := fs.Int("sample", 100, "conns checked for an echo after the wait")
	hold := fs.Duration("hold", 0, "after READY, wait this long at most for SIGUSR1 or a line on stdin (0: go on at once)")
	maxFail := fs.Int("max-fail", 0, "stop opening after this many failed conns (default: max(50, n/50))")
	path := fs.String("path", "/ws", "WebSocket path")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if *n < 1 || *n > 100000 || *par < 1 || *par > 1000 {
		return fmt.Errorf("-n 1..100000, -par 1..1000")
	}
	if *maxFail <= 0 {
		*maxFail = max(50, *n/50)
	}
	name := map[string]string{"ws": "idle-l7", "wss": "idle-wss", "h2": "idle-h2", "tcp": "idle-l4"}[*mode]
	if name == "" {
		return fmt.Errorf("-mode %q: want ws, wss, h2 or tcp", *mode)
	}
	r := &Result{Target: c.target, Round: c.round, Name: name, Addr: c.addrFlag, Requested: *n, RateUnit: "conns"}

	var before *Snap
	if c.pid > 0 {
		s, err := snapshot(c.pid)
		if err != nil {
			return fmt.Errorf("proxy: %w", err)
		}
		before = &s
	}

	hc := wsClient()
	h2d := newH2Dialer()
	dial := func(i int) (idleConn, error) {
		if *mode == "tcp" {
			return dialTCPEcho(c.addr(i))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		switch *mode {
		case "wss":
			return wssDial(ctx, c.addr(i), *path)
		case "h2":
			return h2d.dial(ctx, c.addr(i), *path)
		}
		x, err := wsDial(ctx, hc, c.addr(i), *path)
		if err != nil {
			return nil, err
		}
		return wsIdle{x}, nil
	}

	conns := make([]idleConn, *n)
	var failed atomic.Int64
	var firstErr atomic.Value
	sem := make(chan struct{}, *par)
	var wg sync.WaitGroup
	start := time.Now()
	launched := 0
	for i := 0; i < *n; i++ {
		if failed.Load() >= int64(*maxFail) {
			log.Printf("%s: %d failures, stopping at %d of %d", name, failed.Load(), i, *n)
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		launched++
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			x, err := dial(i)
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			conns[i] = x
		}(i)
		if (i+1)%1000 == 0 {
			log.Printf("%s: %d launched, %d failed", name, i+1, failed.Load())
		}
	}
	wg.Wait()
	open := make([]idleConn, 0, *n)
	for _, x := range conns {
		if x != nil {
			open = append(open, x)
		}
	}
	defer func() {
		for _, x := range open {
			x.close()
		}
	}()
	r.Opened, r.Failed = len(open), int(failed.Load())
	log.Printf("%s: %d open, %d failed in %.1fs; settling %v", name, r.Opened, r.Failed, time.Since(start).Seconds(), c.dur)
	time.Sleep(c.dur)

	if before != nil {
		after, err := snapshot(c.pid)
		if err != nil {
			r.Note = "proxy gone: " + err.Error()
		} else {
			r.Before, r.After = before, &after
			if r.Opened > 0 {
				rss := float64(after.RSSKB-before.RSSKB) / float64(r.Opened)
				fds := float64(after.FDs-before.FDs) / float64(r.Opened)
				r.RSSPerConn, r.FDsPerConn = &rss, &fds
			}
		}
	}
	fmt.Fprintf(os.Stderr, "READY %s opened=%d failed=%d pid=%d\n", name, r.Opened, r.Failed, os.Getpid())
	if *hold > 0 {
		waitRelease(*hold)
	}

	// The sample: evenly spread over the open conns, checked concurrently.
	k := min(*sample, len(open))
	var okN atomic.Int64
	var sw sync.WaitGroup
	for j := range k {
		x := open[j*len(open)/k]
		sw.Add(1)
		go func(j int) {
			defer sw.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := x.echo(ctx, fmt.Appendf(nil, "sample-%d", j)); err != nil {
				firstErr.CompareAndSwap(nil, "sample: "+err.Error())
				return
			}
			okN.Add(1)
		}(j)
	}
	sw.Wait()
	r.SampleTry, r.SampleOK = k, int(okN.Load())
	r.Ops = int64(r.Opened)
	if e, _ := firstErr.Load().(string); e != "" {
		if r.Note != "" {
			r.Note += "; "
		}
		r.Note += "first error: " + e
	}
	r.Errors = int64(r.Failed + (r.SampleTry - r.SampleOK))
	r.Seconds = time.Since(start).Seconds()
	return emit(r)
}

// waitRelease returns on SIGUSR1, a line on stdin, or after d.
func waitRelease(d time.Duration) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	defer signal.Stop(sig)
	line := make(chan struct{}, 1)
	go func() {
		bufio.NewReader(os.Stdin).ReadString('\n')
		line <- struct{}{}
	}()
	select {
	case <-sig:
	case <-line:
	case <-time.After(d):
	}
}

// runProbe waits until GET / answers 200 and a WebSocket on /ws echoes on
// every -l7 address, and a raw echo conn works on every -l4 address.
func runProbe(args []string) error {
	fs := flag.NewFlagSet("probe", flag.ExitOnError)
	l7 := fs.String("l7", "127.0.0.1:18080", "comma-separated HTTP/WebSocket addresses, \"\" to skip")
	l4 := fs.String("l4", "127.0.0.1:18081", "comma-separated raw TCP addresses, \"\" to skip")
	timeout := fs.Duration("timeout", 20*time.Second, "give up after")
	fs.Parse(args)
	until := time.Now().Add(*timeout)
	var last error
	for time.Now().Before(until) {
		if last = probeOnce(split(*l7), split(*l4)); last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %v: %v", *timeout, last)
}

func split(s string) []string {
	var out []string
	for _, a := range bytes.Split([]byte(s), []byte(",")) {
		if a = bytes.TrimSpace(a); len(a) > 0 {
			out = append(out, string(a))
		}
	}
	return out
}

func probeOnce(l7, l4 []string) error {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for _, a := range l7 {
		resp, err := hc.Get("http://" + a + "/")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "hello" {
			return fmt.Errorf("%s: GET / = %d %q", a, resp.StatusCode, body)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		x, err := wsDial(ctx, wsClient(), a, "/ws")
		if err != nil {
			cancel()
			return err
		}
		err = wsIdle{x}.echo(ctx, []byte("probe"))
		x.Close(websocket.StatusNormalClosure, "")
		cancel()
		if err != nil {
			return fmt.Errorf("%s: ws echo: %w", a, err)
		}
	}
	for _, a := range l4 {
		x, err := dialTCPEcho(a)
		if err != nil {
			return fmt.Errorf("%s: %w", a, err)
		}
		x.close()
	}
	return nil
}
