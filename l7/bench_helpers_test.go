package l7

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"runtime/pprof"
	"testing"
	"time"
)

// asSide runs start with the goroutines it starts, and theirs, labelled
// side=name in CPU profiles. A benchmark's process holds the client, wslb
// and the backend; `go tool pprof -tagfocus side=proxy` shows wslb's share.
func asSide(name string, start func()) {
	pprof.Do(context.Background(), pprof.Labels("side", name), func(context.Context) { start() })
}

// meterCPU starts counting the process's CPU time, user and system, for
// the stop function it returns to report per op: the cost that ns/op, a
// latency on a ping-pong, does not show. The process holds client, wslb and
// backend together. Start it just before the benchmark loop, stop it just
// after.
func meterCPU(b *testing.B) (stop func()) {
	start, ok := processCPU()
	return func() {
		end, _ := processCPU()
		if ok && b.N > 0 {
			b.ReportMetric(float64(end-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

// benchGETs runs the benchmark loop: one keep-alive GET per op to addr over
// one client conn, its answer read whole, with allocations and CPU per op
// reported.
func benchGETs(b *testing.B, addr string) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	br := bufio.NewReader(c)
	req := []byte("GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
	b.ReportAllocs()
	stop := meterCPU(b)
	for b.Loop() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	stop()
}
