package l7

import (
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/wslb/wslb/internal/certtest"
)

// BenchmarkBackendTLS is one keep-alive GET through an l7 listener to a
// backend and back, the client's conn kept alive, with the backend conn:
//
//   - plain/reused: plain TCP from the worker's idle cache (the baseline);
//   - tls/reused: TLS from the idle cache, as pools[].tls runs by default;
//   - tls/fresh-resumed: a new TLS conn per request (idle_per_worker: 0),
//     resuming the session the last one left in the backend's session cache;
//   - tls/fresh-full: a new TLS conn and a full handshake per request (the
//     backend issues no session tickets), what reuse and the cache save.
//
// The process holds client, wslb and backend, so cpu-ns/op, B/op and
// allocs/op count the backend's side of each handshake too.
func BenchmarkBackendTLS(b *testing.B) {
	ca := certtest.NewCA(b)
	caFile := ca.WriteRoots(b)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })
	for _, bc := range []struct {
		name    string
		tls     bool
		idle    int
		tickets bool
	}{
		{name: "plain/reused", idle: 32},
		{name: "tls/reused", tls: true, idle: 32, tickets: true},
		{name: "tls/fresh-resumed", tls: true, idle: 0, tickets: true},
		{name: "tls/fresh-full", tls: true, idle: 0},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var be *countingServer
			poolTLS := ""
			asSide("backend", func() {
				if !bc.tls {
					be = newBackend(b, handler)
					return
				}
				conf := serverTLS(b, ca)
				conf.SessionTicketsDisabled = !bc.tickets
				be = newTLSBackend(b, handler, conf)
				poolTLS = ", tls: {ca: " + caFile + "}"
			})
			var l *lb
			asSide("proxy", func() {
				l = startLBFile(b, fmt.Sprintf("listeners:\n  - {name: web, listen: 127.0.0.1:0, mode: l7, pool: p}\n"+
					"pools:\n  - {name: p, idle_per_worker: %d, health: {check: none}, backends: [{address: %s}]%s}\n", bc.idle, be.addr(), poolTLS))
			})
			benchGETs(b, l.addr)
			b.ReportMetric(float64(be.handshakes.Load())/float64(b.N), "handshakes/op")
		})
	}
}
