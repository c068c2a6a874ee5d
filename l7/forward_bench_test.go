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
func BenchmarkPlainRequest(b *testing.B) {
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
