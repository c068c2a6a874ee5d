package l7

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"testing"

	"github.com/wslb/wslb/header"
	"github.com/wslb/wslb/route"
)

// fuzzChunkedHead is the request head FuzzChunkedBody's bytes follow: a
// chunked body that may end in the trailer it announces.
const fuzzChunkedHead = "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n"

// fuzzMaxBody is the max_body_bytes FuzzChunkedBody forwards with.
const fuzzMaxBody = 64

// FuzzChunkedBody feeds arbitrary bytes after a chunked head through what a
// plain request's body goes through on its way to a backend (readRequest,
// outgoing's limitedBody, writeRequest over a conn), and compares that with
// net/http reading the same bytes alone. A body net/http reads whole within
// max_body_bytes reaches the backend as exactly one request with that body
// and its trailer fields (those whose names are tokens: Request.Write
// leaves out the others, which net/http's reader lets through), and nothing
// after it: the bytes behind the body (a second
// request) stay on the client conn. Any other body fails with the client's
// own error (errBodyTooLarge or the error reading it), never the backend
// conn's, and the backend never receives a complete request. The seeds are
// in testdata/fuzz/FuzzChunkedBody.
func FuzzChunkedBody(f *testing.F) {
	cc := fuzzConn(f)
	cc.st.l.HTTP.MaxBodyBytes = fuzzMaxBody
	f.Fuzz(func(t *testing.T, body []byte) {
		input := append([]byte(fuzzChunkedHead), body...)
		want, wantTrailer, wantAfter, wantErr := referenceBody(t, input)

		br := bufio.NewReaderSize(bytes.NewReader(input), 4096)
		req, err := readRequest(br, fuzzMaxHead)
		if err != nil {
			t.Fatalf("the head: %v", err)
		}
		client := &recordingBody{r: req.Body}
		req.Body = client
		out, _ := outgoing(cc, req, route.New(nil, "p").Match(req.URL))
		wire, werr := sendToBackend(out)

		switch {
		case wantErr == nil && len(want) <= fuzzMaxBody:
			if werr != nil {
				t.Fatalf("a body net/http reads whole (%q) failed: %v", want, werr)
			}
			got, trailer, rest := backendReads(t, wire)
			if got == nil {
				t.Fatalf("the backend cannot read what wslb sent: %q", wire)
			}
			if !bytes.Equal(got, want) || !maps.EqualFunc(trailer, wantTrailer, slices.Equal) {
				t.Fatalf("backend got body %q trailer %v, want %q %v", got, trailer, want, wantTrailer)
			}
			if len(rest) > 0 {
				t.Fatalf("backend got %q after the request", rest)
			}
			if after, _ := io.ReadAll(br); !bytes.Equal(after, wantAfter) {
				t.Fatalf("left %q for the next request, net/http leaves %q", after, wantAfter)
			}
		default:
			if werr == nil {
				t.Fatalf("body %q (net/http: %d bytes, %v) was forwarded", body, len(want), wantErr)
			}
			if !errors.Is(werr, errBodyTooLarge) && (client.err == nil || !errors.Is(werr, client.err)) {
				t.Fatalf("failed with %v, not the client's error (%v)", werr, client.err)
			}
			if errors.Is(werr, errBodyTooLarge) != (len(want) > fuzzMaxBody) {
				t.Fatalf("errBodyTooLarge is %v for a body of at least %d bytes", errors.Is(werr, errBodyTooLarge), len(want))
			}
			if got, _, _ := backendReads(t, wire); got != nil {
				t.Fatalf("the backend received a complete request: %q", wire)
			}
		}
	})
}

// referenceBody is the body and trailer net/http reads from the request in
// input, with no limit, the trailer without the fields whose names are not
// tokens nor those header.FilterTrailer drops, and the bytes it leaves
// behind them; or the error
// reading the body failed with, the body then holding what was read before.
func referenceBody(t *testing.T, input []byte) (body []byte, trailer http.Header, after []byte, err error) {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(input))
	req, err := http.ReadRequest(br)
	if err != nil {
		t.Fatalf("the head: %v", err)
	}
	announced := slices.Collect(maps.Keys(req.Trailer))
	body, err = io.ReadAll(req.Body)
	after, _ = io.ReadAll(br)
	maps.DeleteFunc(req.Trailer, func(name string, _ []string) bool { return !isFieldName(name) })
	// What a trailer may carry of what was announced (header.FilterTrailer).
	header.FilterTrailer(req.Trailer, func(name string) bool { return slices.Contains(announced, name) })
	return body, req.Trailer, after, err
}

// sendToBackend writes out as forward does, with writeRequest over a conn,
// and returns what the other end of the conn received.
func sendToBackend(out *http.Request) ([]byte, error) {
	c, backend := net.Pipe()
	received := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(backend)
		received <- b
	}()
	written := make(chan error, 1)
	writeRequest(&deadlineWriter{conn: c}, out, written)
	err := <-written
	c.Close()
	return <-received, err
}

// backendReads parses wire as a backend would: one request, its body and
// its trailer, and what follows it. body is nil when there is no complete
// request.
func backendReads(t *testing.T, wire []byte) (body []byte, trailer http.Header, rest []byte) {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(wire))
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, nil, nil
	}
	body, err = io.ReadAll(req.Body)
	if err != nil {
		return nil, nil, nil
	}
	rest, _ = io.ReadAll(br)
	return append([]byte{}, body...), req.Trailer, rest
}
