package l7

import (
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/wslb/wslb/access"
)

// BenchmarkPlainRequest is one keep-alive GET through an l7 listener to a
// backend and back, with the access log off and writing to a file: what the
// log costs a request, write(2) included; and with four request_headers
// (nginx's usual proxy_set_header lines) and the log off: what they cost.
// In these the process holds the client and the backend too; proxy-only
// (benchProxy, the peer's get job) counts wslb's costs alone, system calls
// included.
func BenchmarkPlainRequest(b *testing.B) {
	b.Run("proxy-only", func(b *testing.B) { benchProxy(b, "get") })
	var be *countingServer
	asSide("backend", func() {
		be = newBackend(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "hello")
		}))
	})
	for _, tc := range []struct{ name, mode, http string }{
		{"access=off", "off", ""},
		{"access=file", "file", ""},
		{"request_headers=4", "off", `    http: {request_headers: {Host: "${host}", X-Forwarded-Server: "${host}", X-Client: "${client_ip}:${server_port}", X-Powered-By: ""}}` + "\n"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			setup := func(*Proxy) {}
			if tc.mode == "file" {
				f, err := os.Create(filepath.Join(b.TempDir(), "access.log"))
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				setup = func(px *Proxy) { px.Access = access.New(slog.New(slog.NewTextHandler(f, nil))) }
			}
			var l *lb
			asSide("proxy", func() {
				l = startLB(b, "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    mode: l7\n    pool: p\n"+tc.http+
					"pools:\n  - {name: p, backends: [{address: "+be.addr()+"}]}\n", setup)
			})
			benchGETs(b, l.addr)
		})
	}
}

// benchProxy runs b.N of the peer process's job (get: one keep-alive GET;
// ws: one WebSocket client, see BenchmarkHandshake) through an l7 listener
// (access log off) with the client and the backend in the peer: its cpu-ns,
// ctxsw, syscalls and allocs per op are wslb's alone. Two ops run before the
// count starts, so that the conns a steady state keeps open (the client's,
// the backend conn in the idle cache) are already there.
func benchProxy(b *testing.B, job string) {
	p := startPeer(b)
	l := startLB(b, "listeners:\n  - {name: web, listen: 127.0.0.1:0, mode: l7, pool: p}\n"+
		"pools:\n  - {name: p, backends: [{address: "+p.backend+"}]}\n")
	p.run(b, job, l.addr, 2)
	b.ReportAllocs()
	b.ResetTimer()
	stop := meterProxy(b)
	p.run(b, job, l.addr, b.N)
	stop()
}
