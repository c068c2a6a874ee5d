package l7

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/http2"

	"github.com/wslb/wslb/internal/certtest"
	"github.com/wslb/wslb/internal/loopback"
	"github.com/wslb/wslb/internal/wait"
)

// h2LB is an l7 TLS listener (tls.http2 default) over backends, with extra
// listener keys, and a client that speaks HTTP/2 to it only.
func h2LB(t *testing.T, extra string, setup func(*Proxy), backends ...string) (*lb, *http.Client) {
	t.Helper()
	certFile, keyFile, roots := certtest.SelfSigned(t)
	yaml := simpleYAML(fmt.Sprintf("    tls: {cert: %s, key: %s}\n%s", certFile, keyFile, extra), backends...)
	var l *lb
	if setup != nil {
		l = startLB(t, yaml, setup)
	} else {
		l = startLB(t, yaml)
	}
	return l, h2Client(t, roots)
}

// h2Client speaks HTTP/2 over TLS, trusting roots, and nothing else.
func h2Client(t *testing.T, roots *x509.CertPool) *http.Client { return h2ClientTB(t, roots) }

func h2ClientTB(t testing.TB, roots *x509.CertPool) *http.Client {
	tr := &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Timeout: 10 * time.Second, Transport: tr}
}

// do sends req and returns its answer with the whole body.
func do(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	if resp.ProtoMajor != 2 {
		t.Fatalf("%s %s answered over %s, want HTTP/2", req.Method, req.URL, resp.Proto)
	}
	return resp, string(body)
}

func newReq(t *testing.T, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestH2Forward: requests over h2 reach the backend over HTTP/1.1, bodies
// both ways, with the headers an HTTP/1.1 request gets, and the answer's
// hop-by-hop fields never reach the h2 client.
func TestH2Forward(t *testing.T) {
	var mu sync.Mutex
	var seen *http.Request
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = r
		mu.Unlock()
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("X-Hop", "1")
		w.Header().Set("Upgrade", "foo")
		w.Header().Set("X-Echo-Host", r.Host)
		fmt.Fprintf(w, "%s %s %d:%s", r.Method, r.Proto, len(body), body)
	}))
	var lines accessLines
	l, c := h2LB(t, "    http:\n      response_headers: {Strict-Transport-Security: max-age=60}\n", lines.setup, be.addr())
	url := "https://" + l.addr

	resp, body := do(t, c, newReq(t, "GET", url+"/a?b=c", nil))
	if resp.StatusCode != 200 || body != "GET HTTP/1.1 0:" {
		t.Fatalf("GET: %d %q", resp.StatusCode, body)
	}
	for _, h := range []string{"Keep-Alive", "Connection", "X-Hop", "Upgrade", "Transfer-Encoding"} {
		if v, ok := resp.Header[h]; ok {
			t.Errorf("hop-by-hop %s: %q reached the h2 client", h, v)
		}
	}
	if got := resp.Header.Get("Strict-Transport-Security"); got != "max-age=60" {
		t.Errorf("response_headers: Strict-Transport-Security %q", got)
	}
	mu.Lock()
	r := seen
	mu.Unlock()
	if r.Header.Get("X-Forwarded-Proto") != "https" || r.Header.Get("X-Forwarded-For") != "127.0.0.1" {
		t.Errorf("forwarding headers: %v", r.Header)
	}
	if r.URL.RawQuery != "b=c" {
		t.Errorf("query %q", r.URL.RawQuery)
	}

	// A body of unknown length (chunked to the backend) and one with a length.
	big := strings.Repeat("x", 300<<10) // past the stream's flow-control window
	for _, n := range []int64{-1, int64(len(big))} {
		req := newReq(t, "POST", url+"/up", io.NopCloser(strings.NewReader(big)))
		req.ContentLength = n
		resp, body = do(t, c, req)
		if want := fmt.Sprintf("POST HTTP/1.1 %d:%s", len(big), big); resp.StatusCode != 200 || body != want {
			t.Fatalf("POST length %d: %d, body of %d bytes", n, resp.StatusCode, len(body))
		}
	}

	// :authority is the Host the backend sees (with preserve_host off, the
	// backend's address; the access line and X-Forwarded-Host keep it).
	req := newReq(t, "GET", url+"/h", nil)
	req.Host = "example.test"
	do(t, c, req)
	mu.Lock()
	fwdHost := seen.Header.Get("X-Forwarded-Host")
	mu.Unlock()
	if fwdHost != "example.test" {
		t.Errorf("X-Forwarded-Host %q from :authority example.test", fwdHost)
	}

	if n := testutil.ToFloat64(l.metrics.HTTPRequests.WithLabelValues("web", "p", "200")); n != 4 {
		t.Errorf("wslb_http_requests_total{200} = %v, want 4", n)
	}
	got := lines.waitLines(t, 4)
	for _, e := range got {
		if e["proto"] != "HTTP/2.0" || e["status"] != float64(200) {
			t.Errorf("access line %v: want proto HTTP/2.0, status 200", e)
		}
	}
}

// TestH2ConcurrentStreams: many streams at once on one h2 conn go to the
// backend over a few HTTP/1.1 conns, reused from the idle cache.
func TestH2ConcurrentStreams(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", r.Proto, r.URL.Path)
	}))
	l, c := h2LB(t, "", nil, be.addr())
	const streams, rounds = 20, 5
	get := func(round, i int) error {
		path := fmt.Sprintf("/r%d/s%d", round, i)
		resp, err := c.Get("https://" + l.addr + path)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.ProtoMajor != 2 || string(body) != "HTTP/1.1 "+path {
			return fmt.Errorf("%s: %s %q", path, resp.Proto, body)
		}
		return nil
	}
	for round := range rounds {
		errs := make(chan error, streams)
		var wg sync.WaitGroup
		for i := range streams {
			wg.Go(func() { errs <- get(round, i) })
		}
		wait.Group(t, "streams", &wg)
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := be.reqs.Load(); n != streams*rounds {
		t.Fatalf("backend served %d requests, want %d", n, streams*rounds)
	}
	// At most one backend conn per stream open at once, and reused after.
	if n := be.conns.Load(); n > streams {
		t.Fatalf("backend accepted %d conns for %d rounds of %d streams: idle conns not reused", n, rounds, streams)
	}
}

// TestH2Streaming: a response streams to the h2 client piece by piece
// (server-sent events), and a request body streams to the backend.
func TestH2Streaming(t *testing.T) {
	next := make(chan string)
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			// Echo each line as it arrives. Go's HTTP/1 server would
			// read the body before sending the head otherwise.
			if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
				t.Error(err)
			}
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			sc := bufio.NewScanner(r.Body)
			for sc.Scan() {
				fmt.Fprintf(w, "got %s\n", sc.Text())
				w.(http.Flusher).Flush()
			}
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		for {
			select {
			case ev, ok := <-next:
				if !ok {
					return
				}
				fmt.Fprintf(w, "data: %s\n\n", ev)
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				return
			}
		}
	}))
	l, c := h2LB(t, "", nil, be.addr())

	resp, err := c.Get("https://" + l.addr + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		ev := fmt.Sprint("event ", i)
		next <- ev // the next one is sent only once this one arrived
		for _, want := range []string{"data: " + ev + "\n", "\n"} {
			line, err := br.ReadString('\n')
			if err != nil || line != want {
				t.Fatalf("event %d: %q, %v; want %q", i, line, err, want)
			}
		}
	}
	close(next)

	pr, pw := io.Pipe()
	defer pw.Close()
	resp, err = c.Post("https://"+l.addr+"/echo", "text/plain", pr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br = bufio.NewReader(resp.Body)
	for i := range 3 {
		fmt.Fprintf(pw, "line %d\n", i)
		line, err := br.ReadString('\n')
		if want := fmt.Sprintf("got line %d\n", i); err != nil || line != want {
			t.Fatalf("line %d: %q, %v; want %q", i, line, err, want)
		}
	}
}

// TestH2Answers: wslb's own answers over h2, with the bodies HTTP/1.1
// gets: static files, 404, 502, 413 and 431.
func TestH2Answers(t *testing.T) {
	web := t.TempDir()
	if err := os.WriteFile(filepath.Join(web, "index.html"), []byte("<h1>hi</h1>"), 0o644); err != nil {
		t.Fatal(err)
	}
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	}))
	routes := fmt.Sprintf("    routes:\n      - {path: /, static: %s}\n"+
		"      - {path: /api/, pool: p}\n      - {path: /dead/, pool: dead}\n", web)
	limits := "    http:\n      max_body_bytes: 1000\n      max_header_bytes: 4096\n" +
		"      response_headers: {X-Frame-Options: DENY}\n"
	certFile, keyFile, roots := certtest.SelfSigned(t)
	yaml := simpleYAML(fmt.Sprintf("    tls: {cert: %s, key: %s}\n%s%s", certFile, keyFile, limits, routes), be.addr()) +
		fmt.Sprintf("  - name: dead\n    backends:\n      - address: %s\n", loopback.DeadAddr(t))
	var lines accessLines
	l := startLB(t, yaml, lines.setup)
	c := h2Client(t, roots)
	url := "https://" + l.addr

	resp, body := do(t, c, newReq(t, "GET", url+"/index.html", nil))
	if resp.StatusCode != 200 || body != "<h1>hi</h1>" || resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("static file: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	resp, body = do(t, c, newReq(t, "GET", url+"/api/../missing", nil))
	if resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("response_headers missing on wslb's own answer: %v", resp.Header)
	}
	resp, body = do(t, c, newReq(t, "GET", url+"/dead/x", nil))
	if want := errorBody(502, "backend unreachable"); resp.StatusCode != 502 || body != want {
		t.Errorf("dead backend: %d %q, want 502 %q", resp.StatusCode, body, want)
	}
	big := strings.Repeat("b", 5000)
	resp, _ = do(t, c, newReq(t, "POST", url+"/api/x", strings.NewReader(big)))
	if resp.StatusCode != 413 {
		t.Errorf("declared body past max_body_bytes: %d, want 413", resp.StatusCode)
	}
	req := newReq(t, "POST", url+"/api/x", io.NopCloser(strings.NewReader(big)))
	req.ContentLength = -1
	resp, _ = do(t, c, req)
	if resp.StatusCode != 413 {
		t.Errorf("streamed body past max_body_bytes: %d, want 413", resp.StatusCode)
	}
	nc := *c
	nc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, body = do(t, &nc, newReq(t, "GET", url+"/api?q=1", nil))
	if resp.StatusCode != 308 || resp.Header.Get("Location") != "/api/?q=1" {
		t.Errorf("bare prefix: %d Location %q, want 308 /api/?q=1", resp.StatusCode, resp.Header.Get("Location"))
	}
	// The conn carried all of that and still serves.
	resp, body = do(t, c, newReq(t, "GET", url+"/api/x", nil))
	if resp.StatusCode != 200 || body != "ok" {
		t.Errorf("after the errors: %d %q", resp.StatusCode, body)
	}
	lines.waitLines(t, 7)
}

// TestH2BodyStalls: a stream's request body that stalls past
// timeouts.client_body gets 408, as an HTTP/1.1 body does, and the backend
// conn is not kept.
func TestH2BodyStalls(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
	}))
	var lines accessLines
	l, c := h2LB(t, "    timeouts: {client_body: 300ms}\n    http: {min_body_rate: 0}\n", lines.setup, be.addr())
	pr, pw := io.Pipe()
	defer pw.Close()
	go io.WriteString(pw, "first bytes, then nothing")
	resp, body := do(t, c, newReq(t, "POST", "https://"+l.addr+"/up", pr))
	if want := errorBody(408, "request body not received in time"); resp.StatusCode != 408 || body != want {
		t.Fatalf("stalled body: %d %q, want 408 %q", resp.StatusCode, body, want)
	}
	got := lines.waitLines(t, 1)[0]
	if got["reason"] != "timeout" || got["proto"] != "HTTP/2.0" {
		t.Errorf("access line %v: want reason timeout, proto HTTP/2.0", got)
	}
	if n := l.errs("timeout"); n != 1 {
		t.Errorf("errors_total{timeout} = %v, want 1", n)
	}
}

// TestH2BackendBreaksOff: a backend that fails in the middle of a body
// resets the client's stream rather than ending it, so that the client
// never takes the part for the whole; the conn goes on.
func TestH2BackendBreaksOff(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ok" {
			io.WriteString(w, "ok")
			return
		}
		w.WriteHeader(200)
		io.WriteString(w, "part of it")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // Go's server drops the conn mid-chunks
	}))
	be.Config.ErrorLog = log.New(io.Discard, "", 0)
	var lines accessLines
	l, c := h2LB(t, "", lines.setup, be.addr())
	resp, err := c.Get("https://" + l.addr + "/broken")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || !strings.Contains(err.Error(), "INTERNAL_ERROR") {
		t.Fatalf("body %q, %v; want the stream reset (INTERNAL_ERROR)", got, err)
	}
	if e := lines.waitLines(t, 1)[0]; e["reason"] != "backend" {
		t.Errorf("access line %v: want reason backend", e)
	}
	if resp, body := do(t, c, newReq(t, "GET", "https://"+l.addr+"/ok", nil)); resp.StatusCode != 200 || body != "ok" {
		t.Errorf("next request: %d %q", resp.StatusCode, body)
	}
}

// TestH2WholeAnswerFrames: an answer the backend sent whole goes out as a
// HEADERS frame and one DATA frame that ends the stream, not as a DATA
// frame of its own followed by an empty one (a round trip more through Go's
// server for every request).
func TestH2WholeAnswerFrames(t *testing.T) {
	l, roots := h2TLSLB(t, "", okBackend(t).addr())
	h := dialH2(t, l.addr, roots)
	if err := h.get(1, "/"); err != nil {
		t.Fatal(err)
	}
	var frames []string
	for range 100 {
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %v: %v", frames, err)
		}
		if f.Header().StreamID != 1 {
			continue // SETTINGS acks, WINDOW_UPDATEs
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			frames = append(frames, fmt.Sprintf("HEADERS end=%v", f.StreamEnded()))
		case *http2.DataFrame:
			frames = append(frames, fmt.Sprintf("DATA %q end=%v", f.Data(), f.StreamEnded()))
		default:
			frames = append(frames, fmt.Sprintf("%T", f))
		}
		if f.Header().Flags.Has(http2.FlagDataEndStream) {
			break
		}
	}
	if got := strings.Join(frames, ", "); got != `HEADERS end=false, DATA "ok" end=true` {
		t.Errorf("frames of stream 1: %s", got)
	}
}

// TestH2StreamQuietLongerThanSend: an event stream whose backend is quiet for
// longer than timeouts.send goes on. timeouts.send bounds a write that makes
// no progress, not the time between writes; a stream's write deadline in Go's
// HTTP/2 server resets the stream when it passes, written or not, so it must
// not stay armed while the relay waits for the backend.
func TestH2StreamQuietLongerThanSend(t *testing.T) {
	const send = 300 * time.Millisecond
	next := make(chan string)
	defer close(next) // ends the backend's handler, however the test ends
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		for ev := range next {
			fmt.Fprintf(w, "data: %s\n\n", ev)
			w.(http.Flusher).Flush()
		}
	}))
	l, c := h2LB(t, fmt.Sprintf("    timeouts: {send: %v}\n", send), nil, be.addr())
	resp, err := c.Get("https://" + l.addr + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i := range 2 {
		ev := fmt.Sprint("event ", i)
		next <- ev
		if line, err := br.ReadString('\n'); err != nil || line != "data: "+ev+"\n" {
			t.Fatalf("event %d: %q, %v", i, line, err)
		}
		br.ReadString('\n')
		if i == 0 {
			time.Sleep(3 * send) // the backend's quiet spell: the point of the test
		}
	}
}
