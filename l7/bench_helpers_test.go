package l7

import (
	"context"
	"runtime/pprof"
	"testing"
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
