package proctest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/wslb/wslb/internal/tcptest"
)

// TestLifecycle: a backend answers, a stopped one answers what it was sent
// once continued, a killed one refuses conns, and a restarted one answers
// on the same address.
func TestLifecycle(t *testing.T) {
	b := Build(t).Start(t, "a", "")
	if got := get(t, b.Addr, "/"); got != "HTTP/1.1 200 OK" {
		t.Fatalf("status line %q", got)
	}

	// Stopped, it still takes the conn and the request (the kernel does),
	// and answers them once continued.
	b.Stop()
	c := tcptest.Dial(t, b.Addr)
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	b.Cont()
	if got := statusLine(c); got != "HTTP/1.1 200 OK" {
		t.Fatalf("after SIGCONT: status line %q", got)
	}

	b.Kill()
	if c, err := net.DialTimeout("tcp", b.Addr, time.Second); err == nil {
		c.Close()
		t.Fatal("a killed backend still accepts")
	}
	b2 := b.Restart()
	if b2.Addr != b.Addr {
		t.Fatalf("restarted on %s, want %s", b2.Addr, b.Addr)
	}
	if got := get(t, b2.Addr, "/"); got != "HTTP/1.1 200 OK" {
		t.Fatalf("after the restart: status line %q", got)
	}
}

// TestFaults: each send writes its bytes, then each then ends the conn as
// it says.
func TestFaults(t *testing.T) {
	b := Build(t).Start(t, "a", "")
	const (
		head     = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
		sendHead = head + "Content-Length: 100\r\n" // a head without its end
	)
	for _, tc := range []struct {
		query, want string
		reset       bool
	}{
		{query: "send=head&then=close", want: sendHead},
		{query: "send=partial&then=close", want: head + "Content-Length: 100\r\n\r\n0123456789"},
		{query: "send=chunk&then=rst", want: head + "Transfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n", reset: true},
		{query: "then=rst", reset: true},
	} {
		c := tcptest.Dial(t, b.Addr)
		fmt.Fprintf(c, "GET /?%s HTTP/1.1\r\nHost: x\r\n\r\n", tc.query)
		got, err := io.ReadAll(c)
		if string(got) != tc.want {
			t.Errorf("%s: read %q, want %q", tc.query, got, tc.want)
		}
		if reset := errors.Is(err, syscall.ECONNRESET); reset != tc.reset {
			t.Errorf("%s: read ended with %v, want a reset: %v", tc.query, err, tc.reset)
		}
	}
	// then=wait holds the conn until the client closes it.
	c := tcptest.Dial(t, b.Addr)
	fmt.Fprint(c, "GET /?send=head&then=wait HTTP/1.1\r\nHost: x\r\n\r\n")
	got := make([]byte, len(sendHead))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != sendHead {
		t.Fatalf("read %q, %v", got, err)
	}
	c.CloseWrite()
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("after the client's FIN: %d bytes, %v; want EOF", n, err)
	}
}

// get sends a GET of path and returns the answer's status line, or the
// error that stopped it.
func get(t *testing.T, addr, path string) string {
	c := tcptest.Dial(t, addr)
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
	return statusLine(c)
}

// statusLine reads an answer from c and returns its status line.
func statusLine(c net.Conn) string {
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err.Error()
	}
	resp.Body.Close()
	return "HTTP/1.1 " + resp.Status
}
