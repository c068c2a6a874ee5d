package l7

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/wslb/wslb/internal/tcptest"
)

// TestLongHeads checks heads longer than a conn's first 4 KiB reader and
// within max_header_bytes: the reader grows (growReader) and the head is
// served whole, as the first request, on a kept-alive conn, and in one write
// with a short request behind it.
func TestLongHeads(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Long"))
	}))
	l := simpleLB(t, "", be.addr())
	long := strings.Repeat("a", 20<<10)
	head := "GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + long + "\r\n\r\n"
	short := "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	c := tcptest.Dial(t, l.addr)
	br := bufio.NewReader(c)
	for i, step := range []struct {
		write string
		want  []string
	}{
		{head, []string{long}},             // the first request: ServeConn's reader
		{head, []string{long}},             // the next: the kept-alive path
		{short + head, []string{"", long}}, // a long head behind a short one
		{head + short, []string{long, ""}}, // and the other way round
	} {
		if _, err := io.WriteString(c, step.write); err != nil {
			t.Fatal(err)
		}
		for _, want := range step.want {
			resp, body := readResp(t, br, "GET")
			if resp.StatusCode != http.StatusOK || body != want {
				t.Fatalf("step %d: %d, a body of %d bytes, want 200 and %d", i, resp.StatusCode, len(body), len(want))
			}
		}
	}
}
