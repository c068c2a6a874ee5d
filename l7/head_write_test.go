package l7

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wslb/wslb/route"
)

// TestWriteRequestHeadMatchesRequestWrite checks writeRequestHead against
// net/http's Request.Write, byte for byte, on the heads it writes itself and
// on those it hands over.
func TestWriteRequestHeadMatchesRequestWrite(t *testing.T) {
	u := func(s string) *url.URL {
		v, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h[kv[i]] = append(h[kv[i]], kv[i+1])
		}
		return h
	}
	tests := []struct {
		name string
		req  http.Request
	}{
		{"plain GET", http.Request{Method: "GET", URL: u("/a/b?c=d"), Host: "example.com", Header: hdr("Accept", "*/*", "X-Real-Ip", "1.2.3.4", "User-Agent", "curl/8")}},
		{"no User-Agent", http.Request{Method: "GET", URL: u("/"), Host: "example.com:8080", Header: hdr("Accept", "*/*")}},
		{"empty User-Agent", http.Request{Method: "GET", URL: u("/"), Host: "h", Header: hdr("User-Agent", "")}},
		{"two User-Agents", http.Request{Method: "GET", URL: u("/"), Host: "h", Header: hdr("User-Agent", "a", "User-Agent", "b")}},
		{"repeated field, order kept", http.Request{Method: "GET", URL: u("/"), Host: "h", Header: hdr("Cookie", "b=2", "Cookie", "a=1", "Accept", "x")}},
		{"escaped path", http.Request{Method: "GET", URL: &url.URL{Path: "/a b/ü", RawQuery: "q=1 2"}, Host: "h", Header: hdr()}},
		{"empty method", http.Request{URL: u("/"), Host: "h", Header: hdr()}},
		{"POST without body", http.Request{Method: "POST", URL: u("/p"), Host: "h", Header: hdr("Content-Type", "text/plain")}},
		{"PUT", http.Request{Method: "PUT", URL: u("/p"), Host: "h", Header: hdr()}},
		{"PATCH", http.Request{Method: "PATCH", URL: u("/p"), Host: "h", Header: hdr()}},
		{"DELETE", http.Request{Method: "DELETE", URL: u("/p"), Host: "h", Header: hdr()}},
		{"OPTIONS *", http.Request{Method: "OPTIONS", URL: &url.URL{Path: "*"}, Host: "h", Header: hdr()}},
		{"no Host", http.Request{Method: "GET", URL: u("/"), Header: hdr("Accept", "x")}},
		{"Host from URL", http.Request{Method: "GET", URL: u("http://u.example/x"), Header: hdr()}},
		{"IPv6 Host", http.Request{Method: "GET", URL: u("/"), Host: "[2001:db8::1]:8443", Header: hdr()}},
		{"IPv6 Host with zone", http.Request{Method: "GET", URL: u("/"), Host: "[fe80::1%25eth0]:80", Header: hdr()}},
		{"odd Host bytes", http.Request{Method: "GET", URL: u("/"), Host: "a~b!c", Header: hdr()}},
		{"invalid Host", http.Request{Method: "GET", URL: u("/"), Host: "a b", Header: hdr()}},
		{"non-ASCII Host", http.Request{Method: "GET", URL: u("/"), Host: "bücher.example", Header: hdr()}},
		{"excluded fields", http.Request{Method: "GET", URL: u("/"), Host: "h", Header: hdr("Host", "other", "Content-Length", "5", "Transfer-Encoding", "chunked", "Trailer", "X")}},
		{"invalid field name", http.Request{Method: "GET", URL: u("/"), Host: "h", Header: hdr("Bad Name", "1", "Good", "2", "", "3")}},
		{"values to clean", http.Request{Method: "GET", URL: u("/"), Host: "h", Header: hdr("A", " padded\t", "B", "line\r\nbreak", "C", "\xff\xfe bytes\n", "User-Agent", " ua\r\n")}},
		{"Connection: close", http.Request{Method: "GET", URL: u("/"), Host: "h", Header: hdr(), Close: true}},
		{"body", http.Request{Method: "POST", URL: u("/"), Host: "h", Header: hdr("A", "1"), Body: http.NoBody, ContentLength: 0}},
		{"control byte in target", http.Request{Method: "GET", URL: &url.URL{Opaque: "/a\x01b"}, Host: "h", Header: hdr()}},
		{"many fields", http.Request{Method: "GET", URL: u("/"), Host: "h", Header: func() http.Header {
			h := http.Header{}
			for i := range 40 {
				h.Set("X-F"+strings.Repeat("a", i), "v")
			}
			return h
		}()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, wantErr := requestWrite(tt.req)
			got, gotErr := headWrite(tt.req)
			if (wantErr == nil) != (gotErr == nil) {
				t.Fatalf("error %v; Request.Write's %v", gotErr, wantErr)
			}
			if wantErr == nil && got != want {
				t.Errorf("wrote\n%q\nRequest.Write wrote\n%q", got, want)
			}
		})
	}
}

// requestWrite is what wslb sent before writeRequestHead: Request.Write with
// an empty User-Agent when there was none.
func requestWrite(r http.Request) (string, error) {
	r.Header = r.Header.Clone()
	if _, ok := r.Header["User-Agent"]; !ok {
		r.Header["User-Agent"] = []string{""}
	}
	var b bytes.Buffer
	err := r.Write(&b)
	return b.String(), err
}

func headWrite(r http.Request) (string, error) {
	r.Header = r.Header.Clone()
	var b bytes.Buffer
	bw := bufio.NewWriter(&b)
	err := writeRequestHead(bw, &r)
	bw.Flush()
	return b.String(), err
}

// BenchmarkWriteRequestHead: go test -run=^$ -bench=WriteRequestHead ./l7
func BenchmarkWriteRequestHead(b *testing.B) {
	r := &http.Request{Method: "GET", URL: &url.URL{Path: "/api/items", RawQuery: "page=2"}, Host: "example.com",
		Header: http.Header{"Accept": {"*/*"}, "User-Agent": {"curl/8.5.0"}, "X-Real-Ip": {"127.0.0.1"},
			"X-Forwarded-For": {"127.0.0.1"}, "X-Forwarded-Host": {"example.com"}, "X-Forwarded-Port": {"8080"},
			"X-Forwarded-Proto": {"http"}}}
	bw := bufio.NewWriter(&bytes.Buffer{})
	for _, impl := range []struct {
		name  string
		write func() error
	}{
		{"wslb", func() error { return writeRequestHead(bw, r) }},
		{"net-http", func() error { return r.Write(bw) }},
	} {
		b.Run(impl.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := impl.write(); err != nil {
					b.Fatal(err)
				}
				bw.Reset(&bytes.Buffer{})
			}
		})
	}
}

// TestWriteIdentityResponseMatchesResponseWrite checks writeIdentityResponse
// against Response.Write, as relayResponse calls them, byte for byte, and
// what each leaves in the body's record (bytes, end, error).
func TestWriteIdentityResponseMatchesResponseWrite(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 6000) // several buffers' worth
	tests := []struct {
		name, method, raw string
		minor             int // the client's HTTP/1.x
		close             bool
	}{
		{"200", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\nDate: x\r\n\r\nhello", 1, false},
		{"own reason", "GET", "HTTP/1.1 200 Fine Thanks\r\nContent-Length: 2\r\n\r\nok", 1, false},
		{"no reason", "GET", "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", 1, false},
		{"unknown status", "GET", "HTTP/1.1 599\r\nContent-Length: 2\r\n\r\nok", 1, false},
		{"unknown status, reason", "GET", "HTTP/1.1 599 Odd\r\nContent-Length: 2\r\n\r\nok", 1, false},
		{"empty", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1, false},
		{"empty POST", "POST", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX: y\r\n\r\n", 1, false},
		{"empty DELETE", "DELETE", "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n", 1, false},
		{"204", "GET", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX: y\r\n\r\n", 1, false},
		{"304", "GET", "HTTP/1.1 304 Not Modified\r\nEtag: \"a\"\r\n\r\n", 1, false},
		{"HEAD", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", 1, false},
		{"HEAD, length 0", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1, false},
		{"close", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 1, true},
		{"HTTP/1.0 client", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0, false},
		{"HTTP/1.0 client, close", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0, true},
		{"fields", "GET", "HTTP/1.1 200 OK\r\nSet-Cookie: b=2\r\nSet-Cookie: a=1\r\nX-Empty:\r\nContent-Length: 2\r\nTrailer: X\r\n\r\nok", 1, false},
		{"short body", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", 1, false},
		{"big body", "GET", "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n" + big, 1, false},
		{"bytes after the body", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n", 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, wantBody, wantErr := relayWith(t, tt.method, tt.raw, tt.minor, tt.close, true)
			got, gotBody, gotErr := relayWith(t, tt.method, tt.raw, tt.minor, tt.close, false)
			if (wantErr == nil) != (gotErr == nil) {
				t.Fatalf("error %v; Response.Write's %v", gotErr, wantErr)
			}
			if got != want {
				t.Errorf("wrote\n%.300q\nResponse.Write wrote\n%.300q", got, want)
			}
			if gotBody != wantBody {
				t.Errorf("body record %+v; with Response.Write %+v", gotBody, wantBody)
			}
		})
	}
}

// bodyRecord is what relayResponse reads from a backendBody afterwards.
type bodyRecord struct {
	n        int64
	eof, err bool
}

// relayWith parses raw as the answer to method and writes it as
// relayResponse would for an HTTP/1.minor client, with Response.Write or
// writeIdentityResponse.
func relayWith(t *testing.T, method, raw string, minor int, close, netHTTP bool) (string, bodyRecord, error) {
	t.Helper()
	out := &http.Request{Method: method}
	br := bufio.NewReaderSize(strings.NewReader(raw), 4096)
	resp, err := http.ReadResponse(br, out)
	if err != nil {
		t.Fatal(err)
	}
	resp.ProtoMajor, resp.ProtoMinor = 1, minor
	if minor == 0 && !close {
		resp.Header.Set("Connection", "keep-alive")
	}
	resp.Close = close
	var b bytes.Buffer
	bw := bufio.NewWriterSize(&b, 4096)
	body := &backendBody{r: resp.Body, conn: deadlineConn{}, br: br, length: resp.ContentLength, bw: bw}
	resp.Body = body
	if netHTTP {
		err = resp.Write(writerOnly{bw})
	} else {
		if !identityResponse(resp, body) {
			t.Fatal("not an identity response")
		}
		err = writeIdentityResponse(bw, resp, body)
	}
	bw.Flush()
	return b.String(), bodyRecord{n: body.n, eof: body.eof, err: body.err != nil}, err
}

// deadlineConn is a net.Conn whose deadlines can be set, and nothing else.
type deadlineConn struct{ net.Conn }

func (deadlineConn) SetReadDeadline(time.Time) error { return nil }

// FuzzWriteRequestHead checks writeRequestHead against Request.Write on
// every head the proxy accepts and rewrites (FuzzReadHead's seeds):
// go test -run=^$ -fuzz=FuzzWriteRequestHead ./l7
func FuzzWriteRequestHead(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	cc := fuzzConn(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := readRequest(bufio.NewReaderSize(bytes.NewReader(data), readerSize(cc.st)), fuzzMaxHead)
		if err != nil || checkRequest(req) != "" {
			return
		}
		res := route.New(nil, "p").Match(req.URL)
		if res.Kind != route.Pool {
			return
		}
		out, _ := outgoing(cc, req, res)
		out.Body, out.ContentLength = nil, 0 // the heads writeRequestHead writes itself
		want, wantErr := requestWrite(*out)
		got, gotErr := headWrite(*out)
		if (wantErr == nil) != (gotErr == nil) || got != want {
			t.Fatalf("wrote %q (%v)\nRequest.Write wrote %q (%v)", got, gotErr, want, wantErr)
		}
	})
}
