package l7

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wslb/wslb/internal/certtest"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
)

// Request bodies the client gets wrong: stalled, trickling, malformed or
// abandoned. Each is answered as the client's doing (408, 400, or 499 in the
// access log when nobody is left to answer), and none is counted against
// the backend.

// readingBackend reads each request body whole before answering how many
// bytes it got; with early, it sends its answer's head and a first chunk
// before reading, as a stream would.
func readingBackend(t *testing.T, early bool) *countingServer {
	return newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if early {
			// net/http answers only after the body unless told otherwise.
			if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
				t.Error(err)
			}
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: started\n\n")
			w.(http.Flusher).Flush()
		}
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			return // wslb cut the body: nothing to answer
		}
		io.WriteString(w, strconv.FormatInt(n, 10))
	}))
}

// TestClientBodyStalls: a body with no new bytes for timeouts.client_body
// gets 408, or a close once the answer began; it is a timeout, and the
// backend, silent meanwhile for longer than timeouts.idle, is not blamed.
func TestClientBodyStalls(t *testing.T) {
	const keys = "    timeouts: {client_body: 300ms, idle: 100ms}\n    http: {min_body_rate: 0}\n"
	t.Run("no answer yet", func(t *testing.T) {
		f := startFaultLB(t, keys, readingBackend(t, false).addr(), 0)
		c, br, resp, body := sendRaw(t, f.addr, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789", "POST")
		checkOwnAnswer(t, resp, body, http.StatusRequestTimeout)
		c.CloseWrite() // wslb's linger ends at once
		expectClosed(t, br, c)
		f.ended(t, 408, "timeout", map[string]float64{"timeout": 1})
		if n := f.requests("p", "408"); n != 1 {
			t.Errorf("wslb_http_requests_total{p, 408} = %v", n)
		}
	})
	t.Run("answer begun", func(t *testing.T) {
		// timeouts.idle at its default: the stream's backend waits for
		// the body, as silent as it likes.
		f := startFaultLB(t, "    timeouts: {client_body: 300ms}\n    http: {min_body_rate: 0}\n", readingBackend(t, true).addr(), 0)
		c := tcptest.Dial(t, f.addr)
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
		begun, fed := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(fed)
			for range 200 { // 10 s at most
				io.WriteString(c, chunk([]byte("part")))
				select { // pacing: the body is alive until the answer has begun
				case <-begun:
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}()
		br := bufio.NewReader(c)
		c.SetReadDeadline(time.Now().Add(wait.Timeout))
		resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
		close(begun)
		<-fed
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("answer head: %v %v", resp, err)
		}
		expectCutStream(t, c, br)
		f.ended(t, 200, "timeout", map[string]float64{"timeout": 1})
	})
}

// startStream writes raw on a new conn and reads the head of the answer, a
// stream, and its first line.
func startStream(t *testing.T, addr, raw string) (*net.TCPConn, *bufio.Reader) {
	t.Helper()
	c := tcptest.Dial(t, addr)
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(wait.Timeout))
	resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("answer head: %v %v", resp, err)
	}
	return c, br
}

// expectCutStream reads the rest of a chunked answer and expects it cut
// before its end.
func expectCutStream(t *testing.T, c *net.TCPConn, br *bufio.Reader) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(wait.Timeout))
	rest, err := io.ReadAll(br)
	if err != nil && !isReset(err) {
		t.Fatalf("the stream was not cut: %v", err)
	}
	if bytes.HasSuffix(rest, []byte("0\r\n\r\n")) {
		t.Fatalf("the stream ended cleanly: %q", rest)
	}
}

// TestMinBodyRate: a body trickling in below http.min_body_rate, on
// average over the time it was waited for, gets 408 once the grace has
// passed (5 s; 300 ms here), however regular its bytes; one above the rate
// goes through.
func TestMinBodyRate(t *testing.T) {
	const grace = 300 * time.Millisecond
	f := startFaultLB(t, "    timeouts: {client_body: 10s}\n    http: {min_body_rate: 1000}\n", readingBackend(t, false).addr(), grace)

	c := tcptest.Dial(t, f.addr)
	start := time.Now()
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n")
	done := make(chan struct{})
	trickled := make(chan struct{})
	go func() {
		defer close(trickled)
		for range 200 { // 10 s at most
			if _, err := io.WriteString(c, "0123456789"); err != nil {
				return
			}
			select { // pacing: 10 bytes every 50 ms is 200 bytes/s
			case <-done:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	c.SetReadDeadline(time.Now().Add(wait.Timeout))
	br := bufio.NewReader(c)
	resp, body := readResp(t, br, "POST")
	took := time.Since(start)
	close(done)
	<-trickled
	checkOwnAnswer(t, resp, body, http.StatusRequestTimeout)
	if !strings.Contains(body, "too slow") {
		t.Errorf("body %q", body)
	}
	if took < grace {
		t.Errorf("408 after %v, before the grace of %v", took, grace)
	}
	f.ended(t, 408, "timeout", map[string]float64{"timeout": 1})

	// 10 KB a write is 10 s of credit at 1000 bytes/s: however late the
	// writes of a loaded test machine, this body is fast enough.
	c = tcptest.Dial(t, f.addr)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 30000\r\n\r\n")
	for range 3 {
		c.Write(bytes.Repeat([]byte("b"), 10000))
		time.Sleep(20 * time.Millisecond) // pacing: the body comes in three parts
	}
	resp, body = readResp(t, bufio.NewReader(c), "POST")
	if resp.StatusCode != 200 || body != "30000" {
		t.Fatalf("a body above the rate: %d %q", resp.StatusCode, body)
	}
}

// malformedChunks are chunked bodies net/http refuses, each with what is
// wrong with it.
var malformedChunks = []struct{ name, body string }{
	{"size 0x5", "0x5\r\nhello\r\n0\r\n\r\n"},
	{"size -5", "-5\r\nhello\r\n0\r\n\r\n"},
	{"size of 32 hex digits", strings.Repeat("0", 31) + "5\r\nhello\r\n0\r\n\r\n"},
	{"bare LF after the size", "5\nhello\r\n0\r\n\r\n"},
	{"no CRLF after a chunk", "5\r\nhelloXX0\r\n\r\n"},
	{"bare LF after a chunk", "5\r\nhello\n0\r\n\r\n"},
	{"bad last chunk", "5\r\nhello\r\n0x\r\n\r\n"},
}

// TestMalformedChunkedBody: a malformed chunked body gets 400 (a close once
// the answer began), counted as bad_request, never a 502.
func TestMalformedChunkedBody(t *testing.T) {
	const head = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	be := readingBackend(t, false)
	f := startFaultLB(t, "", be.addr(), 0)
	for i, tc := range malformedChunks {
		t.Run(tc.name, func(t *testing.T) {
			before := mErrCounts(f.lb)
			c, br, resp, body := sendRaw(t, f.addr, head+chunk([]byte("fine"))+tc.body, "POST")
			checkOwnAnswer(t, resp, body, http.StatusBadRequest)
			if !strings.Contains(body, "malformed request body") {
				t.Errorf("body %q", body)
			}
			c.CloseWrite() // wslb's linger ends at once
			expectClosed(t, br, c)
			f.line(t, i+1, 400, "bad_request")
			mExpectErrs(t, f.lb, before, map[string]float64{"bad_request": 1})
		})
	}
	f.notBlamed(t)
	f.released(t)

	t.Run("answer begun", func(t *testing.T) {
		f := startFaultLB(t, "", readingBackend(t, true).addr(), 0)
		c, br := startStream(t, f.addr, head+chunk([]byte("fine")))
		io.WriteString(c, malformedChunks[0].body)
		expectCutStream(t, c, br)
		f.ended(t, 200, "bad_request", map[string]float64{"bad_request": 1})
	})
}

// TestClientAborts: a client that closes mid-upload or mid-answer is logged
// with status 499, as nginx does, and counts as no error of anybody's: no
// 502, no passive failure.
func TestClientAborts(t *testing.T) {
	t.Run("mid-upload", func(t *testing.T) {
		f := startFaultLB(t, "", readingBackend(t, false).addr(), 0)
		c := tcptest.Dial(t, f.addr)
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n"+strings.Repeat("u", 100))
		c.Close()
		f.ended(t, 499, "client", nil)
		if n := f.requests("p", "499"); n != 1 {
			t.Errorf("wslb_http_requests_total{p, 499} = %v", n)
		}
	})
	t.Run("mid-answer", func(t *testing.T) {
		be, cut := hogBackend(t, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true)
		f := startFaultLB(t, "", be.Addr(), 0)
		c, br := startStream(t, f.addr, "GET /stream HTTP/1.1\r\nHost: a\r\n\r\n")
		if _, err := br.Peek(1000); err != nil {
			t.Fatal(err)
		}
		c.Close() // with unread bytes: a reset
		f.expectCut(t, cut)
		f.ended(t, 499, "client", nil)
		if n := f.requests("p", "200"); n != 1 {
			t.Errorf("wslb_http_requests_total{p, 200} = %v: the status sent counts", n)
		}
	})
}

// TestClientBodyAnswers: how each way a body can fail is answered, read
// from bytes alone as a fuzz test would (newClientBody with no conn, then
// bodyAnswer).
func TestClientBodyAnswers(t *testing.T) {
	const chunked = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	cases := []struct {
		name, raw string
		max       int64
		status    int // 0: read whole
		reason    string
	}{
		{"chunked", chunked + "5\r\nhello\r\n0\r\n\r\n", 100, 0, ""},
		{"chunked with a trailer", chunked + "5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", 100, 0, ""},
		{"content-length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", 100, 0, ""},
		{"chunked past max_body_bytes", chunked + "5\r\nhello\r\n0\r\n\r\n", 4, 413, "bad_request"},
		{"short content-length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nhello", 100, 499, "client"},
		{"chunked cut off", chunked + "5\r\nhel", 100, 499, "client"},
	}
	for _, m := range malformedChunks {
		cases = append(cases, struct {
			name, raw string
			max       int64
			status    int
			reason    string
		}{m.name, chunked + m.body, 100, 400, "bad_request"})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(tc.raw)))
			if err != nil {
				t.Fatal(err)
			}
			b := newClientBody(req, tc.max, nil, nil)
			_, err = io.ReadAll(b)
			status, reason, _, ok := bodyAnswer(err)
			switch {
			case tc.status == 0 && err != nil:
				t.Fatalf("read: %v", err)
			case tc.status == 0:
				if !b.eof.Load() {
					t.Errorf("read whole, but not at its end")
				}
			case !ok || status != tc.status || reason != tc.reason:
				t.Fatalf("%v: answered %d %q (%v), want %d %q", err, status, reason, ok, tc.status, tc.reason)
			}
		})
	}
	if _, _, _, ok := bodyAnswer(fmt.Errorf("dial: %w", io.EOF)); ok {
		t.Error("an error that is not the body's was taken for the client's")
	}
}

// TestBodyInPiecesReachesBackendWhole: a Content-Length body that arrives in
// pieces reaches the backend byte for byte, over TLS too. (A TLS conn has no
// ReadFrom, and bufio's own copy loop read each piece into the buffer that
// flushingBody had just flushed from under it: the backend got stale bytes.)
func TestBodyInPiecesReachesBackendWhole(t *testing.T) {
	digest := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%x", sha256.Sum256(b))
	})
	ca := certtest.NewCA(t)
	for _, tc := range []struct {
		name string
		lb   func() *lb
	}{
		{"plain", func() *lb { return simpleLB(t, "", newBackend(t, digest).addr()) }},
		{"tls", func() *lb {
			be := newTLSBackend(t, digest, serverTLS(t, ca))
			return tlsBackendLB(t, "", "ca: "+ca.WriteRoots(t), []string{be.addr()})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := tc.lb()
			body := randomBytes(200 << 10)
			c := tcptest.Dial(t, l.addr)
			fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", len(body))
			for part := range slices.Chunk(body, 20000) {
				c.Write(part)
				time.Sleep(5 * time.Millisecond) // pacing: each part is a read of its own
			}
			resp, got := readResp(t, bufio.NewReader(c), "POST")
			if want := fmt.Sprintf("%x", sha256.Sum256(body)); resp.StatusCode != 200 || got != want {
				t.Fatalf("%d: the backend got a body whose SHA-256 is %s, want %s", resp.StatusCode, got, want)
			}
		})
	}
}
