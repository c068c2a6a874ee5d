package l7

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/wslb/wslb/internal/certtest"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
)

// rawH2 is an HTTP/2 client conn driven frame by frame, to send what Go's
// client never would.
type rawH2 struct {
	t    *testing.T
	conn *tls.Conn
	fr   *http2.Framer
	enc  *hpack.Encoder
	buf  bytes.Buffer
	// settings are the server's first SETTINGS.
	settings map[http2.SettingID]uint32
}

// dialH2 opens a TLS conn to addr that chose h2, sends the preface and
// settings, and reads the server's settings.
func dialH2(t *testing.T, addr string, roots *x509.CertPool) *rawH2 {
	t.Helper()
	d := tls.Dialer{Config: &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{"h2"}}}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn := c.(*tls.Conn)
	t.Cleanup(func() { conn.Close() })
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN chose %q, want h2", p)
	}
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second)) // the test's bound
	h := &rawH2{t: t, conn: conn, fr: http2.NewFramer(conn, conn), settings: map[http2.SettingID]uint32{}}
	h.enc = hpack.NewEncoder(&h.buf)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := h.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	f, err := h.fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		t.Fatalf("first frame %v, want SETTINGS", f)
	}
	_ = sf.ForeachSetting(func(s http2.Setting) error { h.settings[s.ID] = s.Val; return nil })
	if err := h.fr.WriteSettingsAck(); err != nil {
		t.Fatal(err)
	}
	return h
}

// block encodes a GET of path with extra header fields.
func (h *rawH2) block(path string, extra ...string) []byte {
	h.buf.Reset()
	fields := append([]string{":method", "GET", ":scheme", "https", ":authority", "example.test", ":path", path}, extra...)
	for i := 0; i < len(fields); i += 2 {
		_ = h.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return bytes.Clone(h.buf.Bytes())
}

// get sends a GET of path on stream id with extra fields.
func (h *rawH2) get(id uint32, path string, extra ...string) error {
	return h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.block(path, extra...),
		EndStream: true, EndHeaders: true})
}

// status reads frames until stream id's response head and returns its
// :status, or the error or reset that came instead; at most 10000 frames.
func (h *rawH2) status(id uint32) (string, error) {
	for range 10000 {
		f, err := h.fr.ReadFrame()
		if err != nil {
			return "", err
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				return f.PseudoValue("status"), nil
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return "", fmt.Errorf("stream reset: %v", f.ErrCode)
			}
		case *http2.GoAwayFrame:
			return "", fmt.Errorf("GOAWAY %v", f.ErrCode)
		case *http2.PingFrame:
			if !f.IsAck() {
				_ = h.fr.WritePing(true, f.Data)
			}
		}
	}
	return "", errors.New("no answer in 10000 frames")
}

// h2TLSLB is an l7 TLS listener over be with extra keys, and its roots.
func h2TLSLB(t *testing.T, extra string, backends ...string) (*lb, *x509.CertPool) {
	t.Helper()
	certFile, keyFile, roots := certtest.SelfSigned(t)
	l := simpleLB(t, fmt.Sprintf("    tls: {cert: %s, key: %s}\n%s", certFile, keyFile, extra), backends...)
	return l, roots
}

func okBackend(t *testing.T) *countingServer {
	return newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
}

// checkServes fails unless a new h2 conn to l gets a 200.
func checkServes(t *testing.T, l *lb, roots *x509.CertPool) {
	t.Helper()
	h := dialH2(t, l.addr, roots)
	if err := h.get(1, "/"); err != nil {
		t.Fatal(err)
	}
	if st, err := h.status(1); st != "200" {
		t.Fatalf("a new conn got %q, %v; want 200", st, err)
	}
	h.conn.Close()
}

// TestH2HeaderListTooLarge: a header list past http.max_header_bytes gets
// 431 (Go's client would not send it), and the conn goes on; one field
// longer than the whole limit is a COMPRESSION_ERROR that ends the conn
// (Go's server refuses to decode it), and wslb serves others.
func TestH2HeaderListTooLarge(t *testing.T) {
	be := okBackend(t)
	l, roots := h2TLSLB(t, "    http:\n      max_header_bytes: 4096\n", be.addr())
	h := dialH2(t, l.addr, roots)
	field := strings.Repeat("h", 2000)
	if err := h.get(1, "/", "x-a", field, "x-b", field, "x-c", field); err != nil {
		t.Fatal(err)
	}
	if st, err := h.status(1); st != "431" {
		t.Fatalf("oversize header list: %q, %v; want 431", st, err)
	}
	if err := h.get(3, "/"); err != nil {
		t.Fatal(err)
	}
	if st, err := h.status(3); st != "200" {
		t.Fatalf("next stream: %q, %v; want 200", st, err)
	}
	if err := h.get(5, "/", "x-big", strings.Repeat("h", 8000)); err != nil {
		t.Fatal(err)
	}
	if st, err := h.status(5); err == nil || !strings.Contains(err.Error(), "COMPRESSION_ERROR") {
		t.Fatalf("one field past the limit: %q, %v; want GOAWAY COMPRESSION_ERROR", st, err)
	}
	checkServes(t, l, roots)
}

// TestH2RapidReset: a client that opens streams and resets them at once,
// thousands of them (CVE-2023-44487), does not take wslb down: it serves
// others meanwhile and after, and its goroutines and backend conns come
// back to where they were.
func TestH2RapidReset(t *testing.T) {
	be := okBackend(t)
	l, roots := h2TLSLB(t, "", be.addr())
	checkServes(t, l, roots)
	base := runtime.NumGoroutine()

	h := dialH2(t, l.addr, roots)
	const streams = 5000
	deadline := time.Now().Add(10 * time.Second)
	sent := 0
	var werr error
	for id := uint32(1); sent < streams && time.Now().Before(deadline); id += 2 {
		if werr = h.get(id, "/"); werr != nil {
			break
		}
		if werr = h.fr.WriteRSTStream(id, http2.ErrCodeCancel); werr != nil {
			break
		}
		sent++
	}
	t.Logf("sent %d HEADERS+RST_STREAM pairs (write error: %v)", sent, werr)
	checkServes(t, l, roots)
	h.conn.Close()

	wait.For(t, "goroutines back to where they were", func() bool { return runtime.NumGoroutine() <= base+5 })
	b := l.pools["p"].Backends()[0]
	wait.For(t, "no backend reserved", func() bool { return b.Active() == 0 })
	active := l.metrics.ConnectionsActive.WithLabelValues("web", "p", be.addr())
	wait.For(t, "no backend conn active", func() bool { return testutil.ToFloat64(active) == 0 })
	t.Logf("the backend accepted %d conns, served %d requests", be.conns.Load(), be.reqs.Load())
}

// TestH2ContinuationFlood: CONTINUATION frames without END_HEADERS, sent
// for ever (CVE-2024-27316 and kin), make wslb close the conn once the
// header list passes its limit, not buffer them; others are served.
func TestH2ContinuationFlood(t *testing.T) {
	be := okBackend(t)
	l, roots := h2TLSLB(t, "    http:\n      max_header_bytes: 8192\n", be.addr())
	h := dialH2(t, l.addr, roots)
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.block("/"), EndHeaders: false}); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() {
		_, err := h.status(1)
		closed <- err
	}()
	// Each frame a new literal field of 1000 bytes: 1 MiB of them at most,
	// 128 times the limit.
	h.buf.Reset()
	_ = h.enc.WriteField(hpack.HeaderField{Name: "x-flood", Value: strings.Repeat("f", 1000)})
	frag := bytes.Clone(h.buf.Bytes())
	sent := 0
	var err error
	var answer error
	gone := false
	for ; sent < 1<<10 && !gone; sent++ {
		if err = h.fr.WriteContinuation(1, false, frag); err != nil {
			break
		}
		select {
		case answer = <-closed:
			gone = true
		default:
		}
	}
	t.Logf("sent %d CONTINUATION frames before %v", sent, err)
	if !gone {
		select {
		case answer = <-closed:
		case <-time.After(10 * time.Second):
			t.Fatal("conn still open after a CONTINUATION flood")
		}
	}
	if answer == nil {
		t.Fatal("the stream was answered")
	}
	checkServes(t, l, roots)
}

// TestH2NotOffered: tls.http2: false never lets ALPN choose h2, and a
// client that insists gets HTTP/1.1.
func TestH2NotOffered(t *testing.T) {
	be := okBackend(t)
	l, roots := h2TLSLB(t, "", be.addr())
	certFile, keyFile, roots2 := certtest.SelfSigned(t)
	off := simpleLB(t, fmt.Sprintf("    tls: {cert: %s, key: %s, http2: false}\n", certFile, keyFile), be.addr())
	alpn := func(addr string, roots *x509.CertPool) string {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{"h2", "http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().NegotiatedProtocol
	}
	if p := alpn(l.addr, roots); p != "h2" {
		t.Errorf("tls.http2 on: ALPN chose %q, want h2", p)
	}
	if p := alpn(off.addr, roots2); p != "http/1.1" {
		t.Errorf("tls.http2: false: ALPN chose %q, want http/1.1", p)
	}
}

// TestH2CNeverServed: a cleartext listener never speaks h2: the
// prior-knowledge preface is a malformed HTTP/1 request, and an Upgrade
// to h2c is a plain request whose Upgrade goes nowhere.
func TestH2CNeverServed(t *testing.T) {
	var upgrade string
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upgrade = r.Header.Get("Upgrade") + "|" + r.Header.Get("Http2-Settings")
		io.WriteString(w, "http/1")
	}))
	l := simpleLB(t, "", be.addr())

	c := tcptest.Dial(t, l.addr)
	io.WriteString(c, http2.ClientPreface)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(c)
	if !bytes.HasPrefix(got, []byte("HTTP/1.1 400 ")) {
		t.Errorf("h2 prior-knowledge preface on cleartext got %q, want an HTTP/1.1 400", got)
	}

	resp, body := exchange(t, l.addr, "GET / HTTP/1.1\r\nHost: example.test\r\nConnection: Upgrade, HTTP2-Settings\r\n"+
		"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
	if resp.StatusCode != 200 || body != "http/1" || upgrade != "|" {
		t.Errorf("Upgrade: h2c got %d %q (backend saw Upgrade|HTTP2-Settings %q), want a plain 200 from the backend",
			resp.StatusCode, body, upgrade)
	}
}

// TestH2Drain: a drained h2 conn is told GOAWAY (NO_ERROR), its open
// stream finishes, and then it closes.
func TestH2Drain(t *testing.T) {
	requested := make(chan struct{}, 1)
	release := make(chan struct{})
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requested <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		io.WriteString(w, "finished")
	}))
	l, roots := h2TLSLB(t, "", be.addr())
	h := dialH2(t, l.addr, roots)
	if err := h.get(1, "/wait"); err != nil {
		t.Fatal(err)
	}
	<-requested

	l.fl.Close() // stop accepting, as a shutdown does first
	drained := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		l.fl.Drain(ctx, 0, 0)
		close(drained)
	}()
	var goaway *http2.GoAwayFrame
	var status, body string
	for range 100 {
		f, err := h.fr.ReadFrame()
		if err != nil {
			if status == "" {
				t.Fatalf("conn ended before the stream's answer: %v", err)
			}
			break
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			goaway = f
			close(release) // the stream may end now
		case *http2.MetaHeadersFrame:
			status = f.PseudoValue("status")
		case *http2.DataFrame:
			body += string(f.Data())
		}
	}
	if goaway == nil || goaway.ErrCode != http2.ErrCodeNo || goaway.LastStreamID != 1 {
		t.Fatalf("GOAWAY %v, want NO_ERROR with last stream 1", goaway)
	}
	if status != "200" || body != "finished" {
		t.Fatalf("the open stream got %q %q, want 200 finished", status, body)
	}
	select {
	case <-drained:
	case <-time.After(10 * time.Second):
		t.Fatal("Drain still running after the conn's last stream ended")
	}
}

// TestH2DrainGraceRunsOut: a stream still open when the drain's grace
// ends is cut: the conn closes, the backend conn too, and the access line
// says drain.
func TestH2DrainGraceRunsOut(t *testing.T) {
	requested := make(chan struct{}, 1)
	backendGone := make(chan struct{})
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requested <- struct{}{}
		<-r.Context().Done() // wslb closes the backend conn
		close(backendGone)
	}))
	certFile, keyFile, roots := certtest.SelfSigned(t)
	var lines accessLines
	l := startLB(t, simpleYAML(fmt.Sprintf("    tls: {cert: %s, key: %s}\n", certFile, keyFile), be.addr()),
		lines.setup, func(px *Proxy) { px.h2Grace = 100 * time.Millisecond })
	h := dialH2(t, l.addr, roots)
	if err := h.get(1, "/forever"); err != nil {
		t.Fatal(err)
	}
	<-requested
	l.fl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	l.fl.Drain(ctx, 0, 0)
	var goaway bool
	for range 100 {
		f, err := h.fr.ReadFrame()
		if err != nil {
			break // closed
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			goaway = f.ErrCode == http2.ErrCodeNo
		case *http2.MetaHeadersFrame:
			t.Errorf("the cut stream got an answer: %v", f.PseudoValue("status"))
		}
	}
	if !goaway {
		t.Error("no GOAWAY (NO_ERROR) before the close")
	}
	select {
	case <-backendGone:
	case <-time.After(5 * time.Second):
		t.Fatal("the backend conn is still open")
	}
	checkFields(t, lines.waitLines(t, 1)[0], map[string]any{"path": "/forever", "status": 499.0, "reason": "drain", "proto": "HTTP/2.0"})
}
