//go:build linux

package l7

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wslb/wslb/fdbudget"
	"github.com/wslb/wslb/header"
	"github.com/wslb/wslb/internal/loopback"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
	"github.com/wslb/wslb/pool"
)

// The event loop (loop_linux.go) serves a kept-alive conn's requests after
// its first. Each test here runs its scenario as a later request on a conn
// that is seen to have moved there, holds the answer, access line and
// metrics to what the goroutine path gives for the same request (the first
// on a fresh conn), and checks that every count is back where it was once
// the clients are gone.

// loopLB is a listener whose conns and loops count their descriptors, and
// whose access lines are kept.
type loopLB struct {
	*lb
	lines accessLines
	fds   *fdbudget.Budget
	base  int64 // fds.Used() with no client conn: the sockets and the loops

	mu         sync.Mutex
	dialErrors []string // the backends the passive checks were told of
}

// failedDials returns the backends whose failed dials the passive checks
// were told of.
func (f *loopLB) failedDials() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.dialErrors)
}

// loopWorkers is startLBConfig's worker count: as many listening sockets
// and event loops (an epoll set and an eventfd each).
const loopWorkers = 2

func startLoopLB(t *testing.T, yaml string) *loopLB {
	t.Helper()
	f := &loopLB{fds: fdbudget.WithLimit(1<<20, 0, nil)}
	f.lb = startLB(t, yaml, f.lines.setup, func(px *Proxy) {
		px.FDs = f.fds
		px.OnDialError = func(b *pool.Backend, err error) {
			f.mu.Lock()
			f.dialErrors = append(f.dialErrors, b.String())
			f.mu.Unlock()
		}
	})
	f.base = loopWorkers + 2*loopWorkers
	wait.For(t, "the workers and their loops", func() bool { return f.fds.Used() == f.base })
	return f
}

// loopYAML is simpleYAML with the listener counting descriptors.
func simpleLoopLB(t *testing.T, extra string, backends ...string) *loopLB {
	t.Helper()
	return startLoopLB(t, simpleYAML(extra, backends...))
}

// loopClient is a client conn with its reader.
type loopClient struct {
	c  net.Conn
	br *bufio.Reader
}

// onLoop dials f, has first answered on the conn's goroutine and waits until
// the conn has moved to its worker's event loop.
func (f *loopLB) onLoop(t *testing.T, first string) *loopClient {
	t.Helper()
	before := f.proxy.loopConns.Load()
	lc := &loopClient{c: tcptest.Dial(t, f.addr)}
	lc.br = bufio.NewReader(lc.c)
	if resp, body := lc.do(t, first, "GET"); resp.StatusCode != 200 {
		t.Fatalf("first request: %d %q", resp.StatusCode, body)
	}
	wait.For(t, "the conn on the event loop", func() bool { return f.proxy.loopConns.Load() == before+1 })
	// The loop may have waited for the first head too (ServeInline), and
	// logs its line after the answer went out.
	wait.For(t, "the first request's access line", func() bool { return len(f.linesOf(t, lc.c)) == 1 })
	return lc
}

func (lc *loopClient) send(t *testing.T, raw string) {
	t.Helper()
	if _, err := io.WriteString(lc.c, raw); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// do sends raw and reads one answer to method.
func (lc *loopClient) do(t *testing.T, raw, method string) (*http.Response, string) {
	t.Helper()
	lc.send(t, raw)
	return readResp(t, lc.br, method)
}

// closed checks that wslb closed the conn, with nothing more sent.
func (lc *loopClient) closed(t *testing.T) {
	t.Helper()
	rest, err := io.ReadAll(lc.br)
	if err != nil && !isReset(err) {
		t.Fatalf("conn not closed: %v", err)
	}
	if len(rest) > 0 {
		t.Errorf("%q after the last answer", rest)
	}
}

// settle closes the clients and waits until nothing is left of them: no
// conn on a loop or live in the listener, no reservation, no active gauge,
// no descriptor but the listener's and the loops'.
func (f *loopLB) settle(t *testing.T, clients ...*loopClient) {
	t.Helper()
	for _, c := range clients {
		c.c.Close()
	}
	wait.For(t, "every conn gone and every count back", func() bool {
		if f.proxy.loopConns.Load() != 0 || f.fl.Active() != 0 || f.fds.Used() != f.base {
			return false
		}
		for _, p := range f.pools {
			for _, b := range p.Backends() {
				active := f.metrics.ConnectionsActive.WithLabelValues("web", p.Name(), b.String())
				if b.Active() != 0 || testutil.ToFloat64(active) != 0 {
					return false
				}
			}
		}
		return true
	})
}

// requests reads wslb_http_requests_total{pool, code}.
func (f *loopLB) requests(pool string, code int) float64 {
	return testutil.ToFloat64(f.metrics.HTTPRequests.WithLabelValues("web", pool, fmt.Sprint(code)))
}

// sameAnswer checks that two answers to one request match, but for Date.
func sameAnswer(t *testing.T, what string, got, want *http.Response, gotBody, wantBody string) {
	t.Helper()
	if got.StatusCode != want.StatusCode || got.Proto != want.Proto || gotBody != wantBody {
		t.Errorf("%s: on the loop %d %s %q, on a goroutine %d %s %q", what,
			got.StatusCode, got.Proto, gotBody, want.StatusCode, want.Proto, wantBody)
	}
	if got.ContentLength != want.ContentLength || !slices.Equal(got.TransferEncoding, want.TransferEncoding) || got.Close != want.Close {
		t.Errorf("%s: framing on the loop %d %v close=%v, on a goroutine %d %v close=%v", what,
			got.ContentLength, got.TransferEncoding, got.Close, want.ContentLength, want.TransferEncoding, want.Close)
	}
	g, w := got.Header.Clone(), want.Header.Clone()
	g.Del("Date")
	w.Del("Date")
	if fmt.Sprint(g) != fmt.Sprint(w) {
		t.Errorf("%s: headers on the loop %v, on a goroutine %v", what, g, w)
	}
}

// viaBoth sends raw as the first request of a fresh conn (its goroutine)
// and on lc, on the loop, and checks that both get the same answer; it
// returns the loop's.
func (f *loopLB) viaBoth(t *testing.T, lc *loopClient, raw, method string) (*http.Response, string) {
	t.Helper()
	fresh := &loopClient{c: tcptest.Dial(t, f.addr)}
	fresh.br = bufio.NewReader(fresh.c)
	defer fresh.c.Close()
	want, wantBody := fresh.do(t, raw, method)
	before := len(f.linesOf(t, lc.c))
	got, gotBody := lc.do(t, raw, method)
	sameAnswer(t, strings.SplitN(raw, "\r\n", 2)[0], got, want, gotBody, wantBody)
	f.sameLines(t, fresh.c, lc.c, before)
	return got, gotBody
}

// exchangeMethod is exchange for an answer to method (HEAD has no body).
func exchangeMethod(t *testing.T, addr, raw, method string) (*http.Response, string) {
	t.Helper()
	c := tcptest.Dial(t, addr)
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	return readResp(t, bufio.NewReader(c), method)
}

// get is a GET of path with Host x.
func get(path string) string { return "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n" }

// rawBackend answers each request by its path with the raw bytes of
// answers[path], on kept-alive conns; an answer that ends in "\x00close" is
// sent without that marker and the conn closed, and "\x00pause" in an
// answer pauses the writer there. It counts conns in conns.
func rawBackend(t *testing.T, answers map[string]string, conns chan<- struct{}) string {
	t.Helper()
	return tcptest.Serve(t, func(c net.Conn) {
		if conns != nil {
			conns <- struct{}{}
		}
		br := bufio.NewReader(c)
		for range 100 {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			a, ok := answers[req.URL.Path]
			if !ok {
				a = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
			}
			a, closing := strings.CutSuffix(a, "\x00close")
			for i, piece := range strings.Split(a, "\x00pause") {
				if i > 0 {
					// Pacing, deliberately: the answer is meant to
					// arrive in pieces, as from a slow backend.
					time.Sleep(20 * time.Millisecond)
				}
				if _, err := io.WriteString(c, piece); err != nil {
					return
				}
			}
			if closing {
				return
			}
		}
	}).Addr()
}

const okHello = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"

// helloBackend answers /hello with "hello" and echoes what a request's
// forwarding headers said at /headers.
func helloBackend(t *testing.T) *countingServer {
	return newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/headers":
			w.Header().Set("X-From", "backend")
			fmt.Fprintf(w, "host=%s xff=%s xrip=%s proto=%s conn=%q", r.Host,
				r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Real-IP"),
				r.Header.Get("X-Forwarded-Proto"), r.Header.Values("Connection"))
		case "/chunked":
			// Chunked, but sent in one write when the handler returns: an
			// answer flushed in pieces may pause between them, which the
			// loop rightly hands to a goroutine (TestLoopStreamsAnswer),
			// and these tests need it to stay on the loop.
			w.Header().Set("Transfer-Encoding", "chunked")
			for i := range 3 {
				fmt.Fprintf(w, "part %d;", i)
			}
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.WriteHeader(http.StatusNotModified)
		case "/big":
			w.Header().Set("Content-Length", fmt.Sprint(bigAnswer))
			w.Write([]byte(strings.Repeat("b", bigAnswer)))
		case "/103":
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			io.WriteString(w, "after hints")
		default:
			io.WriteString(w, "hello")
		}
	}))
}

// bigAnswer is larger than the loop relays itself (maxLoopResponse).
const bigAnswer = 200 << 10

// TestLoopPlainRequests: GETs and HEADs on the loop get the goroutine path's
// answers, headers included, over one backend conn, with an access line and
// wslb_http_requests_total each.
func TestLoopPlainRequests(t *testing.T) {
	be := helloBackend(t)
	f := simpleLoopLB(t, "    http:\n      response_headers: {X-Frame-Options: DENY}\n", be.addr())
	b := f.pools["p"].Backends()[0]
	lc := f.onLoop(t, get("/hello"))
	f.lines.waitLines(t, 1)
	conns := be.conns.Load()

	const n = 10
	for i := range n {
		resp, body := lc.do(t, get(fmt.Sprintf("/hello?i=%d", i)), "GET")
		if resp.StatusCode != 200 || body != "hello" || resp.Header.Get("X-Frame-Options") != "DENY" {
			t.Fatalf("GET %d: %d %q %v", i, resp.StatusCode, body, resp.Header)
		}
		resp, body = lc.do(t, "HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n", "HEAD")
		if resp.StatusCode != 200 || body != "" || resp.ContentLength != 5 {
			t.Fatalf("HEAD %d: %d %q length %d", i, resp.StatusCode, body, resp.ContentLength)
		}
	}
	if got := be.conns.Load(); got != conns {
		t.Errorf("%d backend conns for %d requests on the loop, want the first request's", got-conns, 2*n)
	}
	if f.proxy.loopConns.Load() != 1 {
		t.Errorf("the conn left the loop: loopConns %d", f.proxy.loopConns.Load())
	}
	lines := f.lines.waitLines(t, 1+2*n)
	checkFields(t, lines[1], map[string]any{"msg": "request", "pool": "p", "backend": be.addr(),
		"method": "GET", "path": "/hello", "status": 200.0, "tx": 5.0, "reason": "done"})
	checkFields(t, lines[2], map[string]any{"method": "HEAD", "status": 200.0, "tx": 0.0, "backend": be.addr()})
	if got := f.requests("p", 200); got != 1+2*n {
		t.Errorf("wslb_http_requests_total{p,200} = %v, want %d", got, 1+2*n)
	}
	if got := testutil.ToFloat64(f.metrics.ConnectionsTotal.WithLabelValues("web", "p", be.addr())); got != 1+2*n {
		t.Errorf("wslb_connections_total = %v, want %d", got, 1+2*n)
	}
	wait.For(t, "the backend conn idle", func() bool { return b.Idle() == 1 })

	// The same answers as a goroutine gives, headers and framing included.
	for _, raw := range []string{
		get("/headers"),
		"GET /headers HTTP/1.1\r\nHost: y.test\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n\r\n",
		get("/chunked"), get("/204"), get("/304"),
		"HEAD /chunked HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		method := strings.Fields(raw)[0]
		f.viaBoth(t, lc, raw, method)
	}
	// The fresh conns moved there too, and are closed: lc is what is left.
	wait.For(t, "only the conn on the loop", func() bool { return f.proxy.loopConns.Load() == 1 })
	f.settle(t, lc)
}

// TestLoopHTTP10KeepAlive: an HTTP/1.0 client that asks for keep-alive
// keeps its conn on the loop, and gets Connection: keep-alive each time;
// one that does not ask is answered and closed.
func TestLoopHTTP10KeepAlive(t *testing.T) {
	be := helloBackend(t)
	f := simpleLoopLB(t, "", be.addr())
	const ka = "GET /hello HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
	lc := f.onLoop(t, ka)
	for range 3 {
		resp, body := f.viaBoth(t, lc, ka, "GET")
		if body != "hello" || !strings.EqualFold(resp.Header.Get("Connection"), "keep-alive") {
			t.Fatalf("HTTP/1.0 keep-alive: %q %v", body, resp.Header)
		}
	}
	resp, body := lc.do(t, "GET /hello HTTP/1.0\r\nHost: x\r\n\r\n", "GET")
	if resp.StatusCode != 200 || body != "hello" {
		t.Fatalf("HTTP/1.0: %d %q", resp.StatusCode, body)
	}
	lc.closed(t)
	f.lines.waitLines(t, 1+3*2+1)
	f.settle(t, lc)
}

// TestLoopPipelined: heads sent in one write are answered in order, those
// the loop serves and one it hands back alike.
func TestLoopPipelined(t *testing.T) {
	be := helloBackend(t)
	f := simpleLoopLB(t, "", be.addr())
	lc := f.onLoop(t, get("/hello"))
	lc.send(t, get("/a")+"HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n"+get("/chunked")+get("/b"))
	for i, want := range []string{"hello", "", "part 0;part 1;part 2;", "hello"} {
		method := "GET"
		if i == 1 {
			method = "HEAD"
		}
		if resp, body := readResp(t, lc.br, method); resp.StatusCode != 200 || body != want {
			t.Fatalf("answer %d: %d %q, want %q", i, resp.StatusCode, body, want)
		}
	}
	// Then a POST with a GET behind it: the loop hands both back.
	lc.send(t, "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"+get("/c"))
	for i := range 2 {
		if resp, body := readResp(t, lc.br, "GET"); resp.StatusCode != 200 || body != "hello" {
			t.Fatalf("answer %d after the POST: %d %q", i, resp.StatusCode, body)
		}
	}
	lines := f.lines.waitLines(t, 7)
	for i, p := range []string{"/hello", "/a", "/hello", "/chunked", "/b", "/p", "/c"} {
		checkFields(t, lines[i], map[string]any{"path": p, "status": 200.0})
	}
	f.settle(t, lc)
}

// TestLoopHandsBack: requests the loop does not serve go back to a
// goroutine, which answers them as it answers a fresh conn's, and the conn
// goes on where it did there.
func TestLoopHandsBack(t *testing.T) {
	be := helloBackend(t)
	dir := t.TempDir()
	if err := os.Mkdir(dir+"/files", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/files/page.txt", []byte("static page"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := startLoopLB(t, fmt.Sprintf(`listeners:
  - name: web
    listen: 127.0.0.1:0
    mode: l7
    http: {max_header_bytes: 1024}
    routes:
      - {path: /files/, static: %s, fallback: ""}
      - {path: /app/, pool: p}
      - {path: /hello, pool: p}
pools:
  - name: p
    backends: [{address: %s}]
`, dir, be.addr()))
	for _, tc := range []struct {
		name   string
		raw    string
		status int
		closes bool // the goroutine path closes the conn after its answer
	}{
		{"static", get("/files/page.txt"), 200, false},
		{"static 404", get("/files/nowhere"), 404, false},
		{"no route", get("/nowhere"), 404, false},
		{"redirect route", get("/app"), 308, false},
		{"pool route", get("/app/x"), 200, false},
		{"head over max_header_bytes", "GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 1100) + "\r\n\r\n", 431, true},
		{"malformed head", "GET /hello HTTP/1.1\r\nHost x\r\n\r\n", 400, true},
		{"bad path", "GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n", 400, true},
		{"post", "POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody", 200, false},
		{"chunked post", "POST /hello HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n", 200, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lc := f.onLoop(t, get("/hello"))
			resp, body := f.viaBoth(t, lc, tc.raw, "GET")
			if resp.StatusCode != tc.status {
				t.Fatalf("%d %q, want %d", resp.StatusCode, body, tc.status)
			}
			if tc.closes {
				lc.closed(t)
			} else if resp, body := lc.do(t, get("/hello"), "GET"); resp.StatusCode != 200 || body != "hello" {
				t.Fatalf("the next request: %d %q", resp.StatusCode, body)
			}
			f.settle(t, lc)
		})
	}
}

// TestLoopHeadInPieces: a head that arrives in several writes is served
// once whole, however it was cut.
func TestLoopHeadInPieces(t *testing.T) {
	be := helloBackend(t)
	f := simpleLoopLB(t, "", be.addr())
	head := []byte("GET /headers HTTP/1.1\r\nHost: pieces.test\r\nX-Forwarded-For: 192.0.2.1\r\n\r\n")
	for _, cut := range tcptest.Cuts(len(head)) {
		t.Run(cut.Name, func(t *testing.T) {
			lc := f.onLoop(t, get("/hello"))
			tcptest.Trickle(t, lc.c, head, cut)
			resp, body := readResp(t, lc.br, "GET")
			if resp.StatusCode != 200 || !strings.Contains(body, "host=pieces.test") {
				t.Fatalf("%d %q", resp.StatusCode, body)
			}
			if f.proxy.loopConns.Load() != 1 {
				t.Errorf("the conn left the loop")
			}
			f.settle(t, lc)
		})
	}
}

// viaBothThen is viaBoth that also sends a GET of /hello after the answer
// on both conns, and checks that both either answer it or have closed.
func (f *loopLB) viaBothThen(t *testing.T, lc *loopClient, raw, method string) (resp *http.Response, body string, open bool) {
	t.Helper()
	fresh := &loopClient{c: tcptest.Dial(t, f.addr)}
	fresh.br = bufio.NewReader(fresh.c)
	defer fresh.c.Close()
	fresh.send(t, raw)
	want, wantBody := readFinal(t, fresh.br, method)
	before := len(f.linesOf(t, lc.c))
	lc.send(t, raw)
	got, gotBody := readFinal(t, lc.br, method)
	sameAnswer(t, strings.SplitN(raw, "\r\n", 2)[0], got, want, gotBody, wantBody)
	wantOpen, gotOpen := fresh.next(t), lc.next(t)
	if gotOpen != wantOpen {
		t.Errorf("%q: the conn goes on: on the loop %v, on a goroutine %v", raw, gotOpen, wantOpen)
	}
	fresh.c.Close()
	f.sameLines(t, fresh.c, lc.c, before)
	return got, gotBody, gotOpen
}

// linesOf returns the access lines of the conn whose client end is c.
func (f *loopLB) linesOf(t *testing.T, c net.Conn) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range f.lines.all(t) {
		if l["client"] == c.LocalAddr().String() {
			out = append(out, l)
		}
	}
	return out
}

// sameLines checks that the access line of the request a fresh conn sent
// (its goroutine's) agrees with the next line of loop's, after the before
// it had.
func (f *loopLB) sameLines(t *testing.T, goroutine, loop net.Conn, before int) {
	t.Helper()
	var a, b []map[string]any
	wait.For(t, "both access lines", func() bool {
		a, b = f.linesOf(t, goroutine), f.linesOf(t, loop)
		return len(a) >= 1 && len(b) > before
	})
	for _, k := range []string{"status", "tx", "rx", "backend", "pool", "route", "reason", "method", "path"} {
		if a[0][k] != b[before][k] {
			t.Errorf("access line: %s %v on a goroutine, %v on the loop", k, a[0][k], b[before][k])
		}
	}
}

// readFinal reads the final answer to method, after any interim ones,
// and what came of its body: a body cut short ends in "<cut>".
func readFinal(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	for range 10 {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("read response: %v", err)
		}
		if resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			body = append(body, "<cut>"...)
		}
		return resp, string(body)
	}
	t.Fatal("ten interim answers")
	return nil, ""
}

// next sends a GET of /hello and reports whether it was answered "hello";
// false when the conn was closed.
func (lc *loopClient) next(t *testing.T) bool {
	t.Helper()
	if _, err := io.WriteString(lc.c, get("/hello")); err != nil {
		return false
	}
	resp, err := http.ReadResponse(lc.br, nil)
	if err != nil {
		return false
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 || string(body) != "hello" {
		t.Fatalf("the next request: %d %q %v", resp.StatusCode, body, err)
	}
	return true
}

// TestLoopAnswers: every kind of answer a backend gives to a request the
// loop sent reaches the client as on a goroutine, whether the loop relays
// it or hands it back, and the conn goes on where it goes on there.
func TestLoopAnswers(t *testing.T) {
	big := strings.Repeat("x", bigAnswer)
	addr := rawBackend(t, map[string]string{
		"/hello":      okHello,
		"/length":     "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: 1\r\n\r\nabc",
		"/chunked":    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-T: t\r\n\r\n",
		"/204":        "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
		"/304":        "HTTP/1.1 304 Not Modified\r\nETag: \"a\"\r\n\r\n",
		"/big":        "HTTP/1.1 200 OK\r\nContent-Length: " + fmt.Sprint(len(big)) + "\r\n\r\n" + big,
		"/bigchunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk([]byte(big)) + "0\r\n\r\n",
		"/slow":       "HTTP/1.1 200\x00pause OK\r\nContent-Length: 10\r\n\x00pause\r\n01234\x00pause56789",
		"/slowchunks": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n\x00pause2\r\nde\r\n\x00pause0\r\n\r\n",
		"/continue":   "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/hints":      "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/http10":     "HTTP/1.0 200 OK\r\nX-A: 1\r\n\r\nuntil the close\x00close",
		"/noframing":  "HTTP/1.1 200 OK\r\n\r\nuntil the close\x00close",
		"/malformed":  "HTTP/1.1 abc\r\n\r\n\x00close",
		"/badchunks":  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n\x00close",
		"/101":        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x00close",
		"/close":      "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok\x00close",
		"/truncated":  "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc\x00close",
	}, nil)
	f := simpleLoopLB(t, "", addr)
	b := f.pools["p"].Backends()[0]
	for _, tc := range []struct {
		path, method string
		status       int
	}{
		{"/length", "GET", 200}, {"/length", "HEAD", 200}, {"/chunked", "GET", 200},
		{"/204", "GET", 204}, {"/304", "GET", 304}, {"/big", "GET", 200}, {"/bigchunked", "GET", 200},
		{"/slow", "GET", 200}, {"/slowchunks", "GET", 200}, {"/continue", "GET", 200},
		{"/hints", "GET", 200}, {"/http10", "GET", 200}, {"/noframing", "GET", 200},
		{"/malformed", "GET", 502}, {"/badchunks", "GET", 200}, {"/101", "GET", 502},
		{"/close", "GET", 200}, {"/truncated", "GET", 200},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			lc := f.onLoop(t, get("/hello"))
			raw := tc.method + " " + tc.path + " HTTP/1.1\r\nHost: x\r\n\r\n"
			resp, body, _ := f.viaBothThen(t, lc, raw, tc.method)
			if resp.StatusCode != tc.status {
				t.Errorf("%d %q, want %d", resp.StatusCode, body, tc.status)
			}
			f.settle(t, lc)
			if b.Active() != 0 {
				t.Errorf("%d reservations left", b.Active())
			}
		})
	}
}

// TestLoopIdleBackendConnClosed: a backend conn idle in the loop's cache
// that the backend closes is dropped when it does (EPOLLRDHUP), and the
// next request gets a new one.
func TestLoopIdleBackendConnClosed(t *testing.T) {
	conns := make(chan struct{}, 10)
	addr := rawBackend(t, map[string]string{
		"/hello": okHello,
		"/bye":   okHello + "\x00close", // kept-alive by its head, closed after
	}, conns)
	f := simpleLoopLB(t, "", addr)
	b := f.pools["p"].Backends()[0]
	lc := f.onLoop(t, get("/hello"))
	if resp, body := lc.do(t, get("/bye"), "GET"); resp.StatusCode != 200 || body != "hello" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	wait.For(t, "the closed conn dropped from the cache", func() bool { return b.Idle() == 0 })
	for range 3 {
		if resp, body := lc.do(t, get("/hello"), "GET"); resp.StatusCode != 200 || body != "hello" {
			t.Fatalf("after the close: %d %q", resp.StatusCode, body)
		}
	}
	if len(conns) != 2 {
		t.Errorf("%d backend conns, want 2", len(conns))
	}
	mExpectErrs(t, f.lb, nil, nil)
	f.settle(t, lc)
}

// TestLoopReplay: a cached backend conn that dies unnoticed between an
// answer and the next request (the backend closes it as the request goes
// out) costs the request nothing: it goes again on a new conn, as on a
// goroutine; a request that may not be replayed gets the goroutine's 502.
func TestLoopReplay(t *testing.T) {
	var mu sync.Mutex
	served := map[string]int{} // per path, requests answered
	addr := tcptest.Serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for i := 0; i < 100; i++ {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			// The second request on a conn finds it dead, as if the
			// backend's keep-alive timer had just fired.
			if i > 0 && strings.HasPrefix(req.URL.Path, "/flaky") {
				return
			}
			mu.Lock()
			served[req.URL.Path]++
			mu.Unlock()
			io.WriteString(c, okHello)
		}
	}).Addr()
	f := simpleLoopLB(t, "", addr)
	lc := f.onLoop(t, get("/hello"))
	for _, path := range []string{"/flaky1", "/flaky2"} {
		if resp, body := lc.do(t, get(path), "GET"); resp.StatusCode != 200 || body != "hello" {
			t.Fatalf("GET %s: %d %q", path, resp.StatusCode, body)
		}
	}
	mu.Lock()
	if served["/flaky1"] != 1 || served["/flaky2"] != 1 {
		t.Errorf("served %v", served)
	}
	mu.Unlock()
	mExpectErrs(t, f.lb, nil, nil)
	lines := f.lines.waitLines(t, 3)
	checkFields(t, lines[1], map[string]any{"path": "/flaky1", "status": 200.0, "tx": 5.0})
	f.settle(t, lc)
}

// TestLoopBackendFaults: no backend, a refused connect (the other backend
// tried, the passive check told), a backend that never answers, a connect
// that never completes: wslb's own answers, as on a goroutine, counted the
// same way.
func TestLoopBackendFaults(t *testing.T) {
	good := helloBackend(t)
	silent := tcptest.Serve(t, func(c net.Conn) {
		http.ReadRequest(bufio.NewReader(c))
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		io.Copy(io.Discard, c)
	}).Addr()
	dead, dead2 := loopback.DeadAddr(t), loopback.DeadAddr(t)
	stuck := unacceptedAddr(t)
	f := startLoopLB(t, fmt.Sprintf(`listeners:
  - name: web
    listen: 127.0.0.1:0
    mode: l7
    timeouts: {idle: 300ms, connect: 300ms}
    routes:
      - {path: /hello, pool: p}
      - {path: /down/, pool: down}
      - {path: /two/, pool: two}
      - {path: /silent/, pool: silent}
      - {path: /stuck/, pool: stuck}
pools:
  - {name: p, backends: [{address: %s}]}
  - {name: down, backends: [{address: %s}]}
  - {name: two, balance: round_robin, backends: [{address: %s}, {address: %s}]}
  - {name: silent, backends: [{address: %s}]}
  - {name: stuck, backends: [{address: %s}]}
`, good.addr(), dead, dead2, good.addr(), silent, stuck))
	for _, tc := range []struct {
		name, path string
		status     int
		errs       map[string]float64 // both requests'
		dials      []string           // the passive checks told, both requests
	}{
		{"refused", "/down/x", 502, map[string]float64{"dial": 2}, []string{dead, dead}},
		{"silent", "/silent/x", 504, map[string]float64{"timeout": 2}, nil},
		{"connect timeout", "/stuck/x", 502, map[string]float64{"dial": 2}, []string{stuck, stuck}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lc := f.onLoop(t, get("/hello"))
			before, dials := mErrCounts(f.lb), len(f.failedDials())
			resp, body, open := f.viaBothThen(t, lc, get(tc.path), "GET")
			if resp.StatusCode != tc.status || open {
				t.Errorf("%d %q, the conn going on: %v; want %d and a close", resp.StatusCode, body, open, tc.status)
			}
			mExpectErrs(t, f.lb, before, tc.errs)
			if got := f.failedDials()[dials:]; !slices.Equal(got, tc.dials) {
				t.Errorf("passive checks told of %v, want %v", got, tc.dials)
			}
			f.settle(t, lc)
		})
	}

	t.Run("the other backend", func(t *testing.T) {
		lc := f.onLoop(t, get("/hello"))
		before, dials := mErrCounts(f.lb), len(f.failedDials())
		// Round robin: one of the two requests picks the refusing backend
		// first, and the good one answers it.
		for i := range 2 {
			if resp, body := lc.do(t, get("/two/x"), "GET"); resp.StatusCode != 200 || body != "hello" {
				t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
			}
		}
		// Each pick of the refusing backend is a failed dial, counted and
		// told to the passive checks, and nothing else is.
		told := f.failedDials()[dials:]
		moved := mErrMoves(before, mErrCounts(f.lb))
		if len(told) == 0 || moved["dial"] != float64(len(told)) || len(moved) != 1 {
			t.Errorf("errors_total moved by %v; passive checks told of %v", moved, told)
		}
		for _, b := range told {
			if b != dead2 {
				t.Errorf("passive checks told of %s, want only %s", b, dead2)
			}
		}
		f.settle(t, lc)
	})

	t.Run("no backend", func(t *testing.T) {
		f.pools["down"].Backends()[0].SetAgentDown(true)
		lc := f.onLoop(t, get("/hello"))
		before := mErrCounts(f.lb)
		resp, body, open := f.viaBothThen(t, lc, get("/down/x"), "GET")
		if resp.StatusCode != 503 || open {
			t.Errorf("%d %q, the conn going on: %v; want 503 and a close", resp.StatusCode, body, open)
		}
		mExpectErrs(t, f.lb, before, map[string]float64{"no_backend": 2})
		f.settle(t, lc)
	})
}

// unacceptedAddr is a loopback address whose listener never accepts and
// whose accept queue is full: a connect to it is never answered (the
// kernel drops the SYN), until timeouts.connect.
func unacceptedAddr(t *testing.T) string {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
	// A backlog of 0 holds one conn; fill it (and then some) so that the
	// next SYN is dropped.
	for range 2 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
	}
	return addr
}

// TestLoopUpgradeLater: a WebSocket upgrade as a later request on a conn
// on the loop goes back to a goroutine and becomes a tunnel.
func TestLoopUpgradeLater(t *testing.T) {
	addr := tcptest.Serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for range 10 {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if req.Header.Get("Upgrade") == "" {
				io.WriteString(c, okHello)
				continue
			}
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
				"Sec-WebSocket-Accept: "+header.AcceptKey(req.Header.Get("Sec-WebSocket-Key"))+"\r\n\r\n")
			io.Copy(c, br) // the tunnel: an echo
			return
		}
	}).Addr()
	f := simpleLoopLB(t, "", addr)
	lc := f.onLoop(t, get("/hello"))
	if resp, body := lc.do(t, get("/hello"), "GET"); resp.StatusCode != 200 || body != "hello" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	lc.send(t, upgradeHead("/ws"))
	resp, err := http.ReadResponse(lc.br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	lc.send(t, "ping")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(lc.br, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("through the tunnel: %q %v", buf, err)
	}
	wait.For(t, "the conn off the loop", func() bool { return f.proxy.loopConns.Load() == 0 })
	lines := f.lines.waitLines(t, 2)
	checkFields(t, lines[1], map[string]any{"path": "/hello", "status": 200.0})
	f.settle(t, lc)
	checkFields(t, f.lines.waitLines(t, 3)[2], map[string]any{"path": "/ws", "status": 101.0, "upgrade": true})
}

// TestLoopClientFaults: a client that stops reading, closes mid-request,
// idles, sends its head too slowly, or half-closes after its request:
// each ends as on a goroutine, and nothing is left of it.
func TestLoopClientFaults(t *testing.T) {
	release := make(chan struct{}) // lets /wait answer
	requested := make(chan struct{}, 10)
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/wait":
			requested <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
			io.WriteString(w, "late")
		case "/60k":
			w.Write([]byte(strings.Repeat("s", 60<<10)))
		default:
			io.WriteString(w, "hello")
		}
	}))
	f := simpleLoopLB(t, "    timeouts: {send: 300ms, keepalive: 400ms, handshake: 300ms}\n", be.addr())

	t.Run("stops reading", func(t *testing.T) {
		lc := f.onLoop(t, get("/hello"))
		before := mErrCounts(f.lb)
		// Answers the loop relays itself, many more than the sockets hold.
		lc.send(t, strings.Repeat(get("/60k"), 100))
		wait.For(t, "a stuck write to time out", func() bool { return mErrCounts(f.lb)["timeout"] > before["timeout"] })
		mExpectErrs(t, f.lb, before, map[string]float64{"timeout": 1})
		f.settle(t, lc)
	})

	t.Run("closes mid-request", func(t *testing.T) {
		// On a fresh conn (its goroutine) and on the loop alike. The
		// fresh one is dialled once the other is on the loop: a conn
		// whose first head is late waits for it on the loop too, and
		// would count there.
		lc := f.onLoop(t, get("/hello"))
		fresh := tcptest.Dial(t, f.addr)
		for _, c := range []net.Conn{fresh, lc.c} {
			io.WriteString(c, get("/wait"))
			<-requested
			c.Close()
			release <- struct{}{}
		}
		f.sameLines(t, fresh, lc.c, 1)
		f.settle(t, lc)
	})

	t.Run("keepalive", func(t *testing.T) {
		lc := f.onLoop(t, get("/hello"))
		before := mErrCounts(f.lb)
		lc.closed(t) // after timeouts.keepalive
		mExpectErrs(t, f.lb, before, nil)
		f.settle(t, lc)
	})

	t.Run("slow head", func(t *testing.T) {
		lc := f.onLoop(t, get("/hello"))
		before, lines := mErrCounts(f.lb), len(f.lines.all(t))
		lc.send(t, "GET /hello HTTP/1.1\r\n")
		lc.closed(t) // after timeouts.handshake, with no answer
		mExpectErrs(t, f.lb, before, map[string]float64{"timeout": 1})
		f.settle(t, lc)
		if got := len(f.lines.all(t)); got != lines {
			t.Errorf("%d access lines for a slow head, want none", got-lines)
		}
	})

	t.Run("half-closes", func(t *testing.T) {
		lc := f.onLoop(t, get("/hello"))
		fresh := tcptest.Dial(t, f.addr)
		for _, c := range []net.Conn{fresh, lc.c} {
			io.WriteString(c, get("/hello"))
			c.(*net.TCPConn).CloseWrite()
		}
		want, err := io.ReadAll(fresh)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(lc.br)
		if err != nil {
			t.Fatal(err)
		}
		g, _, _ := strings.Cut(string(got), "Date:")
		w, _, _ := strings.Cut(string(want), "Date:")
		if g != w || !strings.HasSuffix(string(got), "hello") {
			t.Errorf("after a half-close, on the loop %q, on a goroutine %q", got, want)
		}
		fresh.Close()
		f.settle(t, lc)
	})
}

// TestLoopDrain: a drain ends a conn idle on the loop at once, and one
// whose request is in flight with a 499 whose access line says drain; then
// the loops close, and every descriptor wslb opened is closed.
func TestLoopDrain(t *testing.T) {
	requested := make(chan struct{}, 1)
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wait" {
			requested <- struct{}{}
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		}
		io.WriteString(w, "hello")
	}))
	f := simpleLoopLB(t, "", be.addr())
	// With the listener, its loops and its tunnel engine open: the drain
	// closes all but the engine, which closes when the test ends.
	open, err := fdbudget.CountOpen()
	if err != nil {
		t.Fatal(err)
	}
	b := f.pools["p"].Backends()[0]
	idle := f.onLoop(t, get("/hello"))
	busy := f.onLoop(t, get("/hello"))
	busy.send(t, get("/wait"))
	<-requested
	lines := len(f.lines.all(t))

	f.fl.Close() // stop accepting, as a shutdown does first
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	f.fl.Drain(ctx, 0, 0)
	idle.closed(t)
	busy.closed(t)
	got := f.lines.waitLines(t, lines+1)[lines]
	checkFields(t, got, map[string]any{"path": "/wait", "status": 499.0, "reason": "drain", "backend": be.addr()})
	if n := f.requests("p", 499); n != 0 {
		t.Errorf("wslb_http_requests_total{499} = %v for a drain", n)
	}
	active := f.metrics.ConnectionsActive.WithLabelValues("web", "p", be.addr())
	if f.proxy.loopConns.Load() != 0 || f.fl.Active() != 0 || b.Active() != 0 || testutil.ToFloat64(active) != 0 || b.Idle() != 0 {
		t.Errorf("after the drain: loopConns %d, conns %d, reservations %d, active gauge %v, idle %d",
			f.proxy.loopConns.Load(), f.fl.Active(), b.Active(), testutil.ToFloat64(active), b.Idle())
	}
	if n := f.fds.Used(); n != 0 {
		t.Errorf("%d descriptors counted after the drain, want 0", n)
	}
	idle.c.Close()
	busy.c.Close()
	// The process's own count: the backend closes its ends once wslb's are
	// closed.
	if !wait.Until(wait.Timeout, func() bool {
		n, err := fdbudget.CountOpen()
		return err == nil && n <= open-int(f.base)
	}) {
		n, _ := fdbudget.CountOpen()
		t.Errorf("%d descriptors open after the drain, want at most %d", n, open-int(f.base))
	}
}

// TestLoopManyConns: many conns on the loops at once, each with requests
// of its own, get each its own answers, over a few backend conns.
func TestLoopManyConns(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Query().Get("q"))
	}))
	f := simpleLoopLB(t, "", be.addr())
	const conns, reqs = 20, 20
	clients := make([]*loopClient, conns)
	for i := range clients {
		clients[i] = f.onLoop(t, get("/?q=first"))
	}
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i, lc := range clients {
		wg.Go(func() {
			for j := range reqs {
				q := fmt.Sprintf("c%dr%d", i, j)
				if _, err := io.WriteString(lc.c, get("/?q="+q)); err != nil {
					errs <- err
					return
				}
				resp, err := http.ReadResponse(lc.br, nil)
				if err != nil {
					errs <- err
					return
				}
				body, err := io.ReadAll(resp.Body)
				if err != nil || string(body) != q {
					errs <- fmt.Errorf("conn %d request %d: %q %v", i, j, body, err)
					return
				}
			}
		})
	}
	wait.Group(t, "every conn's requests", &wg)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := f.requests("p", 200); got != conns*(reqs+1) {
		t.Errorf("wslb_http_requests_total{200} = %v, want %d", got, conns*(reqs+1))
	}
	if n := be.conns.Load(); n > conns {
		t.Errorf("%d backend conns for %d client conns", n, conns)
	}
	f.lines.waitLines(t, conns*(reqs+1))
	f.settle(t, clients...)
}

// TestLoopStreamsAnswer checks that an answer whose body pauses short of
// its end (Server-Sent Events) reaches the client as it comes on a
// kept-alive conn too: the loop hands it to a goroutine rather than wait
// for the rest.
func TestLoopStreamsAnswer(t *testing.T) {
	release := make(chan struct{})
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/events" {
			io.WriteString(w, "hello")
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "data: two\n\n")
	}))
	f := simpleLoopLB(t, "", be.addr())
	lc := f.onLoop(t, get("/hello"))
	lc.send(t, get("/events"))
	resp, err := http.ReadResponse(lc.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	events := bufio.NewReader(resp.Body)
	lc.c.SetReadDeadline(time.Now().Add(wait.Timeout))
	if line, err := events.ReadString('\n'); err != nil || line != "data: one\n" {
		t.Fatalf("first event %q, %v: want it before the second is written", line, err)
	}
	close(release)
	if line, _ := events.ReadString('\n'); line != "\n" {
		t.Fatalf("after the first event %q", line)
	}
	if line, err := events.ReadString('\n'); err != nil || line != "data: two\n" {
		t.Fatalf("second event %q, %v", line, err)
	}
	resp.Body.Close()
	f.settle(t, lc)
}
