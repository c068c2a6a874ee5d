package l7

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"net/textproto"
	"slices"
	"strings"
	"testing"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/route"
)

// fuzzMaxHead is the max_header_bytes FuzzReadHead reads with.
const fuzzMaxHead = 4096

// fuzzSeeds are the heads FuzzReadHead starts from; the same inputs are in
// testdata/fuzz/FuzzReadHead, so plain `go test` runs them.
var fuzzSeeds = []string{
	"GET / HTTP/1.1\r\nHost: example.test\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n",
	"GET /websocket/chat?room=1 HTTP/1.1\r\nHost: example.test\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
	"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
	"GET / HTTP/1.1\nHost: a\nX-A: b\n\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\tthree\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", 5000) + "\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX-Nul: a\x00b\r\n\r\n",
	"GET http://other.test:8080/abs?q=1 HTTP/1.1\r\nHost: example.test\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n3\r\nabc\r\n0\r\nX-T: t\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret, Te\r\nX-Secret: s\r\nTE: trailers\r\nKeep-Alive: 5\r\n" +
		"Proxy-Connection: keep-alive\r\nX-Forwarded-For: 1.2.3.4, 10.0.0.2\r\nForwarded: for=1.2.3.4\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
	"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX: y\rTransfer-Encoding: chunked\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: [fe80::1%25eth0]:80\r\n\r\n",
	// Found by the fuzzer: an opaque target on HTTP/0.0 reached the backend
	// as the request line "000 0 HTTP/1.1".
	"000 A:0 HTTP/0.0\r\n0000:0\n\r\n",
	"POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"GET http://evil.test/x HTTP/1.1\r\nX_Forwarded_For: 1.2.3.4\r\n\r\n",
	"GET http://u:p@evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n",
}

// fuzzConn is the clientConn the header rewriting runs for: a trusted peer
// (so incoming X-Forwarded-For and Forwarded are kept and appended to) on a
// listener that also writes Forwarded.
func fuzzConn(t testing.TB) *clientConn {
	cfg, err := config.Parse([]byte(`listeners:
  - name: web
    listen: 127.0.0.1:8080
    mode: l7
    pool: p
    http:
      forwarded: true
      trusted_proxies: [10.0.0.0/8]
pools:
  - name: p
    backends: [{address: 127.0.0.1:9001}]
`), "fuzz.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return &clientConn{
		st:    &state{l: cfg.Listeners[0]},
		peer:  netip.MustParseAddrPort("10.1.2.3:5555"),
		local: netip.MustParseAddrPort("127.0.0.1:8080"),
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// rawHeadEnd finds the end of the head in data as net/textproto reads it:
// after the first empty line, which ends in LF or CRLF. -1 if there is none.
func rawHeadEnd(data []byte) int {
	end := -1
	if i := bytes.Index(data, []byte("\n\n")); i >= 0 {
		end = i + 2
	}
	if i := bytes.Index(data, []byte("\n\r\n")); i >= 0 && (end < 0 || i+3 < end) {
		end = i + 3
	}
	return end
}

// rawFieldNames returns the field names of the header lines of head (the
// request line and continuation lines skipped), canonicalised, with any
// whitespace around them trimmed: what a lenient next hop would take them for.
func rawFieldNames(head []byte) []string {
	var names []string
	lines := strings.Split(string(head), "\n")
	for _, line := range lines[1:] {
		line = strings.TrimSuffix(line, "\r")
		if line == "" || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		if name, _, ok := strings.Cut(line, ":"); ok {
			names = append(names, textproto.CanonicalMIMEHeaderKey(strings.Trim(name, " \t")))
		}
	}
	return names
}

func hasBothLengths(names []string) bool {
	var cl, te bool
	for _, n := range names {
		cl = cl || n == "Content-Length"
		te = te || n == "Transfer-Encoding"
	}
	return cl && te
}

// wslbOwn are the request headers wslb sets itself: a client naming them in
// Connection has them removed, then set again.
var wslbOwn = map[string]bool{
	"X-Real-Ip": true, "X-Forwarded-For": true, "X-Forwarded-Host": true, "X-Forwarded-Port": true,
	"X-Forwarded-Proto": true, "Forwarded": true,
}

var hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding",
	"Upgrade", "Proxy-Authenticate", "Proxy-Authorization"}

func FuzzReadHead(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	cc := fuzzConn(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		src := &countingReader{r: bytes.NewReader(data)}
		br := bufio.NewReaderSize(src, readerSize(cc.st))
		req, err := readRequest(br, fuzzMaxHead)
		end := rawHeadEnd(data)
		if err != nil {
			if errors.Is(err, errHeadTooLarge) && end >= 0 && end <= fuzzMaxHead {
				t.Fatalf("431 for a head of %d bytes (limit %d)", end, fuzzMaxHead)
			}
			if errors.Is(err, errSmuggling) && !hasBothLengths(rawFieldNames(data[:end])) {
				t.Fatalf("CL+TE refusal without both fields in %q", data[:end])
			}
			return
		}
		consumed := src.n - br.Buffered()
		if consumed > fuzzMaxHead {
			t.Fatalf("accepted a head of %d bytes, limit %d", consumed, fuzzMaxHead)
		}
		if consumed != end {
			t.Fatalf("consumed %d bytes, the head is %d", consumed, end)
		}
		head := data[:consumed]
		if checkRequest(req) != "" {
			return
		}

		// Accepted: one framing only, whatever a next hop makes of the names.
		names := rawFieldNames(head)
		if hasBothLengths(names) {
			t.Fatalf("accepted a head with Content-Length and Transfer-Encoding: %q", head)
		}
		if !req.ProtoAtLeast(1, 1) && slices.Contains(names, "Transfer-Encoding") {
			t.Fatalf("accepted an HTTP/1.0 head with Transfer-Encoding: %q", head)
		}
		if len(req.TransferEncoding) > 0 && req.Header.Get("Content-Length") != "" {
			t.Fatalf("parsed both a chunked body and a Content-Length: %q", head)
		}
		// An absolute-form target names a host a backend may trust: only
		// beside a Host header (RFC 9112 §3.2), never with userinfo.
		if req.URL.Host != "" && !slices.Contains(names, "Host") {
			t.Fatalf("accepted an absolute-form target without Host: %q", head)
		}
		if req.URL.User != nil {
			t.Fatalf("accepted a target with userinfo: %q", head)
		}

		// The proxy's rewrite: route result as the default pool gives it.
		res := route.New(nil, "p").Match(req.URL)
		if res.Kind != route.Pool {
			return // redirects and bad paths get wslb's own answer
		}
		out, _ := outgoing(cc, req, res)
		for _, name := range hopByHop {
			if _, ok := out.Header[name]; ok {
				t.Fatalf("hop-by-hop %s left in %q", name, out.Header)
			}
		}
		for _, v := range req.Header.Values("Connection") {
			for tok := range strings.SplitSeq(v, ",") {
				name := textproto.CanonicalMIMEHeaderKey(strings.Trim(tok, " \t"))
				if vv, ok := out.Header[name]; ok && !wslbOwn[name] && !(name == "User-Agent" && len(vv) == 1 && vv[0] == "") {
					t.Fatalf("header %s named in Connection reached the backend", name)
				}
			}
		}
		for k, vv := range out.Header {
			if strings.ContainsAny(k, " \t\r\n\x00:") {
				t.Fatalf("header name %q", k)
			}
			for _, v := range vv {
				if strings.ContainsAny(v, "\r\n\x00") {
					t.Fatalf("header %s value %q has CR, LF or NUL", k, v)
				}
			}
		}

		// What the backend receives parses back to the same request, with
		// one framing and the same body.
		var sent bytes.Buffer
		body := &recordingBody{r: io.TeeReader(out.Body, &sent)}
		if out.Body != nil {
			out.Body = body
		}
		var wire bytes.Buffer
		if err := out.Write(&wire); err != nil {
			if body.err != nil || (out.ContentLength > 0 && int64(sent.Len()) < out.ContentLength) {
				return // the client's body was malformed or short
			}
			t.Fatalf("the accepted request cannot be written: %v\nhead %q", err, head)
		}
		backendHead := wire.Bytes()[:max(rawHeadEnd(wire.Bytes()), 0)]
		if hasBothLengths(rawFieldNames(backendHead)) {
			t.Fatalf("backend head has both lengths: %q", backendHead)
		}
		got, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(wire.Bytes())))
		if err != nil {
			t.Fatalf("the backend cannot parse what wslb sent: %v\n%q", err, wire.Bytes())
		}
		if got.Method != req.Method || got.URL.RequestURI() != res.URL.RequestURI() {
			t.Fatalf("backend got %s %s, want %s %s", got.Method, got.URL.RequestURI(), req.Method, res.URL.RequestURI())
		}
		if !strings.Contains(req.Host, "%") && got.Host != req.Host {
			t.Fatalf("backend got Host %q, client sent %q", got.Host, req.Host)
		}
		gotBody, err := io.ReadAll(got.Body)
		if err != nil || !bytes.Equal(gotBody, sent.Bytes()) {
			t.Fatalf("backend body %q (%v), wslb read %q", gotBody, err, sent.Bytes())
		}
	})
}

// recordingBody keeps the error reading a request body failed with.
type recordingBody struct {
	r   io.Reader
	err error
}

func (b *recordingBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		b.err = err
	}
	return n, err
}

func (b *recordingBody) Close() error { return nil }
