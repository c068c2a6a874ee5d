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
	start, _, ok := processCPU()
	return func() {
		end, _, _ := processCPU()
		if ok && b.N > 0 {
			b.ReportMetric(float64(end-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

// meterProxy is meterCPU for a benchmark whose process holds wslb alone
// (the client and the backend run in a peer process, startPeer): it also
// reports the process's context switches (ctxsw/op) and system calls
// (syscalls/op) per op, the counts that the side-by-side table
// compares and that, unlike times, hardly drift on a shared machine. The
// system calls need perf (see openSyscallCounter); without it the
// benchmark says why and reports the rest. Start it after the peer, since a
// process started later would be counted too.
func meterProxy(b *testing.B) (stop func()) {
	sc, err := openSyscallCounter()
	if err != nil {
		b.Logf("no syscalls/op: %v", err)
	}
	var sys0 uint64
	if sc != nil {
		sys0 = sc.count()
	}
	cpu0, csw0, ok := processCPU()
	return func() {
		cpu1, csw1, _ := processCPU()
		var sys1 uint64
		if sc != nil {
			sys1 = sc.count()
			sc.close()
		}
		if b.N == 0 {
			return
		}
		n := float64(b.N)
		if ok {
			b.ReportMetric(float64(cpu1-cpu0)/n, "cpu-ns/op")
			b.ReportMetric(float64(csw1-csw0)/n, "ctxsw/op")
		}
		if sc != nil {
			b.ReportMetric(float64(sys1-sys0)/n, "syscalls/op")
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
