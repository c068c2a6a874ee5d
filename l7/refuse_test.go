package l7

import (
	"bufio"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/wslb/wslb/internal/tcptest"
)

// TestRefusalAnswersTheRequest: a refused conn's 503 goes out once the
// request has arrived, so a client that writes first and reads after (Go's
// http.Transport, which calls an answer that came before its request
// unsolicited and fails) gets the 503 every time, not an error.
func TestRefusalAnswersTheRequest(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(echoBody))
	l := simpleLB(t, "    max_connections: 1\n", be.addr())
	c1 := tcptest.Dial(t, l.addr)
	io.WriteString(c1, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, _ := readResp(t, bufio.NewReader(c1), "GET"); resp.StatusCode != 200 {
		t.Fatalf("first conn: %d", resp.StatusCode)
	}
	// c1 is kept alive: every other conn is over the limit.
	for i := range 20 {
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := hc.Get("http://" + l.addr + "/")
		if err != nil {
			t.Fatalf("refused request %d: %v, want a 503", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("refused request %d: %d, want 503", i, resp.StatusCode)
		}
	}
}
