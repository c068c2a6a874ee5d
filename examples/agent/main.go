// Command agent is an example agent for wslb's agent check (HAProxy's
// protocol): it runs next to one backend and answers every conn with one
// line, "ready N%", where N falls from 100 to 0 as the backend's established
// conns rise from 0 to -capacity. Every wslb replica asks it, so each one
// weighs the backend by its load across the whole fleet of replicas, not by
// the conns it holds itself (see docs/agent.md).
//
// The conns are counted from /proc/net/tcp and /proc/net/tcp6 (ESTABLISHED
// sockets whose local port is -port): no help from the app, nothing to
// install, and right whatever speaks on the port. It sees the network
// namespace it runs in, so run it on the backend's host, or as a sidecar in
// the backend's pod.
//
//	go run ./examples/agent -listen :9777 -port 9001 -capacity 5000
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", ":9777", "address to answer on (pools[].health.agent.port)")
	port := flag.Int("port", 9001, "the backend's port: established conns to it are its load")
	capacity := flag.Int("capacity", 1000, "conns at which the backend is full (0%)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *port < 1 || *port > 65535 || *capacity < 1 {
		log.Error("-port must be from 1 to 65535 and -capacity at least 1")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, *listen, uint16(*port), *capacity, log); err != nil {
		log.Error("agent", "err", err)
		os.Exit(1)
	}
}

// serve answers each conn on addr in turn: an answer takes microseconds, and
// one at a time keeps a burst of checks from costing more than one count each.
func serve(ctx context.Context, addr string, port uint16, capacity int, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	context.AfterFunc(ctx, func() { ln.Close() })
	log.Info("agent listening", "addr", ln.Addr().String(), "backend_port", port, "capacity", capacity)
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		answer(c, port, capacity, log)
	}
}

func answer(c net.Conn, port uint16, capacity int, log *slog.Logger) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	n, err := established(port)
	if err != nil {
		// Saying nothing leaves wslb's last report standing.
		log.Warn("cannot count conns", "err", err)
		return
	}
	fmt.Fprintf(c, "%s\n", line(n, capacity))
}

// line is the answer for n conns out of capacity: the percentage of the
// backend's weight it should get, 100 when idle, 0 when full.
func line(n, capacity int) string {
	pct := 100 * max(capacity-n, 0) / capacity
	return fmt.Sprintf("ready %d%%", pct)
}

// established counts the ESTABLISHED TCP sockets whose local port is port,
// IPv4 and IPv6.
func established(port uint16) (int, error) {
	total := 0
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(f)
		if errors.Is(err, os.ErrNotExist) {
			continue // no IPv6 here
		}
		if err != nil {
			return 0, err
		}
		n, err := countEstablished(fh, port)
		fh.Close()
		if err != nil {
			return 0, fmt.Errorf("%s: %w", f, err)
		}
		total += n
	}
	return total, nil
}

// tcpEstablished is the kernel's TCP_ESTABLISHED in /proc/net/tcp's st column.
const tcpEstablished = "01"

// countEstablished reads a /proc/net/tcp table: a header line, then one
// socket a line, "sl local_address rem_address st ...", addresses in hex as
// ADDR:PORT.
func countEstablished(r io.Reader, port uint16) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Scan() // the header
	n := 0
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[3] != tcpEstablished {
			continue
		}
		i := strings.LastIndexByte(f[1], ':')
		p, err := strconv.ParseUint(f[1][i+1:], 16, 16)
		if err == nil && uint16(p) == port {
			n++
		}
	}
	return n, sc.Err()
}
