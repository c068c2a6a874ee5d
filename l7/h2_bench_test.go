package l7

import (
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/wslb/wslb/internal/certtest"
)

// BenchmarkH2Get: GETs over one h2 conn, from concurrent streams, each
// forwarded to the backend over HTTP/1.1 from the idle cache.
func BenchmarkH2Get(b *testing.B) {
	be := newBackend(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	certFile, keyFile, roots := certtest.SelfSigned(b)
	l := startLB(b, simpleYAML(fmt.Sprintf("    tls: {cert: %s, key: %s}\n", certFile, keyFile), be.addr()))
	c := h2ClientTB(b, roots)
	url := "https://" + l.addr + "/x"
	b.ReportAllocs()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
