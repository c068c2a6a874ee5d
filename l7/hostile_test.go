package l7

import (
	"bufio"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
)

// hostileRow is one hostile input and what DESIGN.md ("Bad input and
// faults", and Part two's "Slow clients, starvation and spoofing") and the
// README's bad-input table make of it.
type hostileRow struct {
	name string
	on   front
	raw  string // what the client sends, in one write
	// split > 0 sends raw[:split] and raw[split:] as two segments.
	split int
	// halfClose shuts the client's write side after raw: it sends nothing more.
	halfClose bool
	// want is every answer's status, in order; none: the conn is closed
	// without one.
	want []int
	// open: after the answers the conn stays open (the client closes it);
	// otherwise wslb closes it with nothing more sent. alert allows a TLS
	// alert record before the close.
	open, alert bool
	location    string // the last answer's Location, when set
	// backend is every byte the backend receives, over all conns; partial:
	// only what it receives first, since what follows depends on how wslb
	// reads (the backend never completes a request then).
	backend string
	partial bool
	// reason is the wslb_errors_total reason that moves, by one (or the
	// reasons, space-separated); "" none.
	reason string
	// pending: DESIGN's answer is being built on another branch; the row is
	// skipped with this until the merge.
	pending string
}

const (
	host = "Host: example.test\r\n"
	// ver and key complete a valid WebSocket handshake.
	ver = "Sec-WebSocket-Version: 13\r\n"
	key = "Sec-WebSocket-Key: " + wsKey + "\r\n"
	// proxyV2 is the PROXY v2 signature.
	proxyV2 = "\r\n\r\n\x00\r\nQUIT\n"
)

// wsHead is an upgrade head to path, with the extra header lines.
func wsHead(path, extra string) string {
	return "GET " + path + " HTTP/1.1\r\n" + host + "Upgrade: websocket\r\nConnection: Upgrade\r\n" + extra + "\r\n"
}

// wsSeen is what the backend receives for wsHead(path, ver+key): the fields
// in wslb's order, Upgrade and Connection set again.
func wsSeen(path string) string {
	return "GET " + path + " HTTP/1.1\r\n" + host + "Connection: Upgrade\r\nSec-Websocket-Key: " + wsKey +
		"\r\nSec-Websocket-Version: 13\r\nUpgrade: websocket\r\n\r\n"
}

// hostileRows are the rows, by class. A row of plainFront unless it says.
func hostileRows(t *testing.T, tlsPort int) []hostileRow {
	get := func(path string) string { return "GET " + path + " HTTP/1.1\r\n" + host + "\r\n" }
	post := func(path, hdrs, body string) string {
		return "POST " + path + " HTTP/1.1\r\n" + host + hdrs + "\r\n" + body
	}
	// chunkedSeen is what the backend receives for a POST to path whose
	// chunked body is body.
	chunkedSeen := func(path, hdrs, chunks string) string {
		return "POST " + path + " HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n" + hdrs + "\r\n" + chunks
	}
	const chunked = "Transfer-Encoding: chunked\r\n"
	const hello = "5\r\nhello\r\n0\r\n\r\n"
	const smuggled = "GET /internal/smuggled HTTP/1.1\r\n" + host + "\r\n"
	rng := rand.New(rand.NewChaCha8([32]byte{14}))
	garbage := make([]byte, 300)
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	hello1 := string(clientHello(t))
	proxyTCP4 := proxyV2 + "\x21\x11\x00\x0c\xcb\x00\x71\x07\x7f\x00\x00\x01\x13\x88\x00\x50"
	return []hostileRow{
		// Smuggling: two framings, or one a next hop may read otherwise.
		{name: "CL+TE", raw: post("/api/s", "Content-Length: 6\r\n"+chunked, "0\r\n\r\nG"), want: []int{400}, reason: "bad_request"},
		{name: "TE+CL", raw: post("/api/s", chunked+"Content-Length: 6\r\n", "0\r\n\r\nG"), want: []int{400}, reason: "bad_request"},
		{name: "TE+CL in other cases", raw: post("/api/s", "tRANSFER-eNCODING: chunked\r\ncontent-length: 6\r\n", "0\r\n\r\nG"), want: []int{400}, reason: "bad_request"},
		{name: "duplicate equal Content-Length", raw: post("/api/s", "Content-Length: 5\r\nContent-Length: 5\r\n", "hello"), want: []int{200}, open: true,
			backend: post("/api/s", "Content-Length: 5\r\n", "hello")},
		{name: "conflicting Content-Length", raw: post("/api/s", "Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"), want: []int{400}, reason: "bad_request"},
		{name: "Content-Length list", raw: post("/api/s", "Content-Length: 5, 6\r\n", "hello!"), want: []int{400}, reason: "bad_request"},
		{name: "Content-Length with a sign", raw: post("/api/s", "Content-Length: +5\r\n", "hello"), want: []int{400}, reason: "bad_request"},
		{name: "TE chunked, identity", raw: post("/api/s", "Transfer-Encoding: chunked, identity\r\n", hello), want: []int{400}, reason: "bad_request"},
		{name: "TE chunked, identity with CL", raw: post("/api/s", "Content-Length: 5\r\nTransfer-Encoding: chunked, identity\r\n", hello), want: []int{400}, reason: "bad_request"},
		{name: "TE with a leading space", raw: post("/api/s", "Transfer-Encoding:  chunked\r\n", hello), want: []int{200}, open: true,
			backend: chunkedSeen("/api/s", "", hello)},
		{name: "TE with a leading space and CL", raw: post("/api/s", "Content-Length: 5\r\nTransfer-Encoding:  chunked\r\n", hello), want: []int{400}, reason: "bad_request"},
		{name: "TE folded onto a line of its own", raw: post("/api/s", "Content-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n", hello), want: []int{400}, reason: "bad_request"},
		{name: "TE line starting with a space", raw: "POST /api/s HTTP/1.1\r\n Transfer-Encoding: chunked\r\n" + host + "Content-Length: 5\r\n\r\n" + hello,
			want: []int{400}, reason: "bad_request"},
		{name: "TE xchunked", raw: post("/api/s", "Transfer-Encoding: xchunked\r\n", hello), want: []int{400}, reason: "bad_request"},
		{name: "TE xchunked with CL", raw: post("/api/s", "Content-Length: 5\r\nTransfer-Encoding: xchunked\r\n", "hello"), want: []int{400}, reason: "bad_request"},
		{name: "TE after a tab", raw: post("/api/s", "Transfer-Encoding:\tchunked\r\n", hello), want: []int{200}, open: true,
			backend: chunkedSeen("/api/s", "", hello)},
		{name: "TE after a tab with CL", raw: post("/api/s", "Content-Length: 5\r\nTransfer-Encoding:\tchunked\r\n", hello), want: []int{400}, reason: "bad_request"},
		{name: "TE on HTTP/1.0", raw: "POST /api/s HTTP/1.0\r\n" + chunked + "\r\n" + hello, want: []int{400}, reason: "bad_request"},
		{name: "two TE headers", raw: post("/api/s", "Transfer-Encoding: identity\r\n"+chunked, hello), want: []int{400}, reason: "bad_request"},
		{name: "chunk extensions dropped", raw: post("/api/s", chunked, "5;ext=\"a b\";x\r\nhello\r\n0;last\r\n\r\n"), want: []int{200}, open: true,
			backend: chunkedSeen("/api/s", "", hello)},
		{name: "trailers passed on", raw: post("/api/s", chunked+"Trailer: X-T\r\n", "5\r\nhello\r\n0\r\nX-T: t\r\n\r\n"), want: []int{200}, open: true,
			backend: chunkedSeen("/api/s", "Trailer: X-T\r\n", "5\r\nhello\r\n0\r\nX-T: t\r\n\r\n")},
		// Found while fuzzing: once a trailer is announced, fields a head
		// may not carry in the trailer reached the backend too (a backend
		// that merges trailers into the head would read another Host,
		// length or client); only announced fields a trailer may carry go.
		{name: "trailer fields a head may not carry", raw: post("/api/s", chunked+"Trailer: X-T\r\n",
			"5\r\nhello\r\n0\r\nX-T: t\r\nHost: evil.test\r\nContent-Length: 99\r\nX-Forwarded-For: 192.0.2.66\r\n\r\n"),
			want: []int{200}, open: true, backend: chunkedSeen("/api/s", "Trailer: X-T\r\n", "5\r\nhello\r\n0\r\nX-T: t\r\n\r\n")},
		{name: "Content-Length trailer", raw: post("/api/s", chunked+"Trailer: Content-Length\r\n", "5\r\nhello\r\n0\r\nContent-Length: 99\r\n\r\n"), want: []int{400}, reason: "bad_request"},
		{name: "body followed by a request", raw: post("/api/s", "Content-Length: 0\r\n", "") + get("/api/second"), want: []int{200, 200}, open: true,
			backend: post("/api/s", "Content-Length: 0\r\n", "") + get("/api/second")},

		// Framing.
		{name: "bare LF line ends", raw: "GET /api/f HTTP/1.1\nHost: example.test\nX-A: b\n\n", want: []int{200}, open: true,
			backend: get("/api/f")[:len(get("/api/f"))-2] + "X-A: b\r\n\r\n"},
		{name: "bare CR line end", raw: "GET /api/f HTTP/1.1\rHost: example.test\r\n\r\n", want: []int{400}, reason: "bad_request"},
		{name: "bare CR in a value", raw: "GET /api/f HTTP/1.1\r\n" + host + "X-A: b\rTransfer-Encoding: chunked\r\n\r\n", want: []int{400}, reason: "bad_request"},
		{name: "obs-fold joined", raw: "GET /api/f HTTP/1.1\r\n" + host + "X-A: b\r\n c\r\n\r\n", want: []int{200}, open: true,
			backend: "GET /api/f HTTP/1.1\r\n" + host + "X-A: b c\r\n\r\n"},
		{name: "obs-fold hiding TE", raw: post("/api/f", "Content-Length: 5\r\nX-A: b\r\n Transfer-Encoding: chunked\r\n", "hello"), want: []int{200}, open: true,
			backend: post("/api/f", "Content-Length: 5\r\nX-A: b Transfer-Encoding: chunked\r\n", "hello")},
		{name: "obs-fold first line", raw: "GET /api/f HTTP/1.1\r\n folded: x\r\n" + host + "\r\n", want: []int{400}, reason: "bad_request"},
		{name: "NUL in a name", raw: "GET /api/f HTTP/1.1\r\n" + host + "X-\x00A: b\r\n\r\n", want: []int{400}, reason: "bad_request"},
		{name: "NUL in a value", raw: "GET /api/f HTTP/1.1\r\n" + host + "X-A: b\x00c\r\n\r\n", want: []int{400}, reason: "bad_request"},
		{name: "SOH in a value", raw: "GET /api/f HTTP/1.1\r\n" + host + "X-A: b\x01c\r\n\r\n", want: []int{400}, reason: "bad_request"},
		{name: "ESC in a name", raw: "GET /api/f HTTP/1.1\r\n" + host + "X-\x1bA: b\r\n\r\n", want: []int{400}, reason: "bad_request"},
		{name: "VT in a value", raw: "GET /api/f HTTP/1.1\r\n" + host + "X-A: b\x0bc\r\n\r\n", want: []int{400}, reason: "bad_request"},
		{name: "DEL in a value", raw: "GET /api/f HTTP/1.1\r\n" + host + "X-A: b\x7f\r\n\r\n", want: []int{400}, reason: "bad_request"},
		{name: "tab in a value kept", raw: "GET /api/f HTTP/1.1\r\n" + host + "X-A: b\tc\r\n\r\n", want: []int{200}, open: true,
			backend: "GET /api/f HTTP/1.1\r\n" + host + "X-A: b\tc\r\n\r\n"},
		{name: "space before the colon", raw: "GET /api/f HTTP/1.1\r\n" + host + "X-A : b\r\n\r\n", want: []int{400}, reason: "bad_request"},
		{name: "tab before the colon", raw: "GET /api/f HTTP/1.1\r\n" + host + "X-A\t: b\r\n\r\n", want: []int{400}, reason: "bad_request"},
		{name: "space before the colon of TE", raw: post("/api/f", "Content-Length: 5\r\nTransfer-Encoding : chunked\r\n", "hello"), want: []int{400}, reason: "bad_request"},
		{name: "header without colon", raw: "GET /api/f HTTP/1.1\r\n" + host + "X-A b\r\n\r\n", want: []int{400}, reason: "bad_request"},

		// Header bytes.
		{name: "parenthesis in a name", raw: "GET /api/h HTTP/1.1\r\n" + host + "X(A): b\r\n\r\n", want: []int{400}, reason: "bad_request"},
		{name: "at sign in a name", raw: "GET /api/h HTTP/1.1\r\n" + host + "X@A: b\r\n\r\n", want: []int{400}, reason: "bad_request"},
		{name: "UTF-8 in a name", raw: "GET /api/h HTTP/1.1\r\n" + host + "X-Ä: b\r\n\r\n", want: []int{400}, reason: "bad_request"},
		{name: "empty name", raw: "GET /api/h HTTP/1.1\r\n" + host + ": b\r\n\r\n", want: []int{400}, reason: "bad_request"},
		{name: "overlong header line", raw: "GET /api/h HTTP/1.1\r\n" + host + "X-Long: " + strings.Repeat("l", 2000) + "\r\n\r\n", want: []int{431}, reason: "bad_request"},
		{name: "overlong request line", raw: get("/api/" + strings.Repeat("l", 2000)), want: []int{431}, reason: "bad_request"},

		// Request targets.
		{name: "absolute-form with Host", raw: "GET http://other.test/api/t HTTP/1.1\r\n" + host + "\r\n", want: []int{200}, open: true,
			backend: "GET /api/t HTTP/1.1\r\nHost: other.test\r\n\r\n"},
		{name: "absolute-form without Host", raw: "GET http://other.test/api/t HTTP/1.1\r\n\r\n", want: []int{400}, reason: "bad_request"},
		{name: "absolute-form with userinfo", raw: "GET http://u:p@evil.test/api/t HTTP/1.1\r\n" + host + "\r\n", want: []int{400}, reason: "bad_request"},
		{name: "asterisk for GET", raw: "GET * HTTP/1.1\r\n" + host + "\r\n", want: []int{400}, reason: "bad_request"},
		{name: "asterisk for OPTIONS", raw: "OPTIONS * HTTP/1.1\r\n" + host + "\r\n", want: []int{200}, open: true,
			backend: "OPTIONS * HTTP/1.1\r\n" + host + "\r\n"},
		{name: "opaque target", raw: "GET a:b HTTP/1.1\r\n" + host + "\r\n", want: []int{400}, reason: "bad_request"},
		{name: "CONNECT", raw: "CONNECT example.test:443 HTTP/1.1\r\n" + host + "\r\n", want: []int{400}, reason: "bad_request"},
		{name: "dot segments above the root", raw: get("/api/../../internal/x"), want: []int{400}, reason: "bad_request"},
		{name: "escaped dot segments above the root", raw: get("/api/%2e%2e/%2E%2E/internal/x"), want: []int{400}, reason: "bad_request"},
		{name: "dot segments within the root", raw: get("/internal/../api/t"), want: []int{200}, open: true, backend: get("/api/t")},
		{name: "escaped slash kept", raw: get("/api/a%2Fb"), want: []int{200}, open: true, backend: get("/api/a%2Fb")},
		// Routes match the path decoded and normalised, as nginx's locations do.
		{name: "escaped slashes resolved before routing", raw: get("/api/..%2Finternal/x"), want: []int{404}, open: true},
		{name: "escaped slashes above the root", raw: get("/api/..%2F..%2F..%2Fetc/passwd"), want: []int{400}, reason: "bad_request"},

		// Sizes.
		{name: "head at max_header_bytes", raw: padHead(t, 1024), want: []int{200}, open: true, backend: padHead(t, 1024)},
		{name: "head one byte over max_header_bytes", raw: padHead(t, 1025), want: []int{431}, reason: "bad_request"},
		{name: "Content-Length over max_body_bytes", raw: post("/api/b", "Content-Length: 65\r\n", ""), want: []int{413}, reason: "bad_request"},
		{name: "Content-Length at max_body_bytes", raw: post("/api/b", "Content-Length: 64\r\n", strings.Repeat("b", 64)), want: []int{200}, open: true,
			backend: post("/api/b", "Content-Length: 64\r\n", strings.Repeat("b", 64))},
		{name: "chunked body past max_body_bytes", raw: post("/api/b", chunked, chunk([]byte(strings.Repeat("b", 40)))+chunk([]byte(strings.Repeat("b", 40)))),
			want: []int{413}, reason: "bad_request", backend: chunkedSeen("/api/b", "", ""), partial: true},

		// Prefaces and versions.
		{name: "HTTP/0.9 request line", raw: "GET /\r\n\r\n", want: []int{400}, reason: "bad_request"},
		{name: "HTTP/0.9 request that waits", raw: "GET /\r\n", reason: "timeout"},
		{name: "HTTP/2 preface", raw: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", want: []int{400}, reason: "bad_request"},
		{name: "HTTP/1.2", raw: "GET /api/v HTTP/1.2\r\n" + host + "\r\n", want: []int{200}, open: true, backend: get("/api/v")},
		{name: "HTTP/2.0", raw: "GET /api/v HTTP/2.0\r\n" + host + "\r\n", want: []int{400}, reason: "bad_request"},
		{name: "HTTP/1.10", raw: "GET /api/v HTTP/1.10\r\n" + host + "\r\n", want: []int{400}, reason: "bad_request"},
		{name: "lowercase method", raw: "get /api/v HTTP/1.1\r\n" + host + "\r\n", want: []int{200}, open: true, backend: "get /api/v HTTP/1.1\r\n" + host + "\r\n"},
		{name: "unknown method", raw: "BREW /api/v HTTP/1.1\r\n" + host + "\r\n", want: []int{200}, open: true, backend: "BREW /api/v HTTP/1.1\r\n" + host + "\r\n"},
		{name: "method that is no token", raw: "GE(T /api/v HTTP/1.1\r\n" + host + "\r\n", want: []int{400}, reason: "bad_request"},

		// Upgrade abuse.
		{name: "upgrade with a body", raw: wsHead("/ws/x", ver+key+"Content-Length: 5\r\n") + "hello", want: []int{400}, reason: "bad_handshake"},
		{name: "upgrade with a chunked body", raw: wsHead("/ws/x", ver+key+chunked) + hello, want: []int{400}, reason: "bad_handshake"},
		{name: "POST upgrade", raw: strings.Replace(wsHead("/ws/x", ver+key), "GET", "POST", 1), want: []int{400}, reason: "bad_handshake"},
		{name: "upgrade over HTTP/1.0", raw: strings.Replace(wsHead("/ws/x", ver+key), "HTTP/1.1", "HTTP/1.0", 1), want: []int{400}, reason: "bad_handshake"},
		{name: "missing key", raw: wsHead("/ws/x", ver), want: []int{400}, reason: "bad_handshake"},
		{name: "short key", raw: wsHead("/ws/x", ver+"Sec-WebSocket-Key: c2hvcnQ=\r\n"), want: []int{400}, reason: "bad_handshake"},
		{name: "key not base64", raw: wsHead("/ws/x", ver+"Sec-WebSocket-Key: ########################\r\n"), want: []int{400}, reason: "bad_handshake"},
		{name: "version 12", raw: wsHead("/ws/x", "Sec-WebSocket-Version: 12\r\n"+key), want: []int{426}, reason: "bad_handshake"},
		{name: "h2c", raw: "GET /api/u HTTP/1.1\r\n" + host + "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
			want: []int{200}, open: true, backend: get("/api/u")},
		{name: "Upgrade without Connection: upgrade", raw: "GET /api/u HTTP/1.1\r\n" + host + "Upgrade: websocket\r\n" + ver + key + "\r\n",
			want: []int{200}, open: true, backend: "GET /api/u HTTP/1.1\r\n" + host + "Sec-Websocket-Key: " + wsKey + "\r\nSec-Websocket-Version: 13\r\n\r\n"},
		{name: "101 with a wrong accept", raw: wsHead("/ws/bad-accept", ver+key), want: []int{502}, reason: "bad_upgrade_response", backend: wsSeen("/ws/bad-accept")},
		{name: "101 without Upgrade", raw: wsHead("/ws/no-upgrade", ver+key), want: []int{502}, reason: "bad_upgrade_response", backend: wsSeen("/ws/no-upgrade")},
		{name: "backend refuses with 426", raw: wsHead("/ws/426", ver+key), want: []int{426}, open: true, backend: wsSeen("/ws/426")},
		{name: "backend refuses with 403", raw: wsHead("/ws/403", ver+key), want: []int{403}, open: true, backend: wsSeen("/ws/403")},
		{name: "1xx before the 101", raw: wsHead("/ws/early", ver+key), want: []int{103, 101}, open: true, backend: wsSeen("/ws/early")},
		// WebSocket smuggling: a raw request right behind a handshake that
		// fails is read as the next request (here one for a route no
		// backend serves), never tunnelled to the backend.
		{name: "smuggled behind wslb's 426", raw: wsHead("/ws/x", "Sec-WebSocket-Version: 12\r\n"+key) + smuggled, want: []int{426}, reason: "bad_handshake"},
		{name: "smuggled behind a backend's 426", raw: wsHead("/ws/426", ver+key) + smuggled, want: []int{426, 404}, open: true, backend: wsSeen("/ws/426")},
		{name: "smuggled behind a backend's 403", raw: wsHead("/ws/403", ver+key) + smuggled, want: []int{403, 404}, open: true, backend: wsSeen("/ws/403")},
		{name: "smuggled behind a wrong accept", raw: wsHead("/ws/bad-accept", ver+key) + smuggled, want: []int{502}, reason: "bad_upgrade_response",
			backend: wsSeen("/ws/bad-accept")},
		{name: "smuggled as an upgrade's body", raw: wsHead("/ws/x", ver+key+"Content-Length: "+strconv.Itoa(len(smuggled))+"\r\n") + smuggled,
			want: []int{400}, reason: "bad_handshake"},

		// Malformed chunked bodies: the head has gone to the backend when
		// the body fails, which never completes.
		{name: "chunk size 0x5", raw: post("/api/c", chunked, "0x5\r\nhello\r\n0\r\n\r\n"), want: []int{400}, reason: "bad_request",
			backend: chunkedSeen("/api/c", "", "")},
		{name: "chunk size -5", raw: post("/api/c", chunked, "-5\r\nhello\r\n0\r\n\r\n"), want: []int{400}, reason: "bad_request",
			backend: chunkedSeen("/api/c", "", "")},
		{name: "chunk size of 32 hex digits", raw: post("/api/c", chunked, strings.Repeat("0", 31)+"5\r\nhello\r\n0\r\n\r\n"), want: []int{400}, reason: "bad_request",
			backend: chunkedSeen("/api/c", "", "")},
		{name: "chunk size line with a bare LF", raw: post("/api/c", chunked, "5\nhello\r\n0\r\n\r\n"), want: []int{400}, reason: "bad_request",
			backend: chunkedSeen("/api/c", "", "")},
		{name: "chunk without its CRLF", raw: post("/api/c", chunked, "5\r\nhelloXX0\r\n\r\n"), want: []int{400}, reason: "bad_request",
			backend: chunkedSeen("/api/c", "", ""), partial: true},

		// TLS garbage.
		{name: "random bytes", on: tlsFront, raw: string(garbage), halfClose: true, reason: "tls"},
		{name: "random bytes in a TLS record", on: tlsFront, raw: "\x16\x03\x01\x01\x00" + string(garbage[:256]), alert: true, reason: "tls"},
		{name: "truncated ClientHello", on: tlsFront, raw: hello1[:len(hello1)/2], halfClose: true, reason: "tls"},
		{name: "truncated ClientHello that waits", on: tlsFront, raw: hello1[:len(hello1)/2], reason: "timeout"},
		{name: "plain HTTP with redirect_http", on: tlsFront, raw: get("/api/x"), want: []int{308}, reason: "tls",
			location: "https://example.test:" + strconv.Itoa(tlsPort) + "/api/x"},
		{name: "plain HTTP with a bad Host and redirect_http", on: tlsFront, raw: "GET /api/x HTTP/1.1\r\nHost: a/b\r\n\r\n", want: []int{400}, reason: "tls bad_request"},
		{name: "plain HTTP without redirect_http", on: tlsOnlyFront, raw: get("/api/x"), reason: "tls"},

		// PROXY headers.
		{name: "header missing", on: proxiedFront, raw: get("/api/p"), reason: "proxy_protocol"},
		{name: "v1 with a field missing", on: proxiedFront, raw: "PROXY TCP4 203.0.113.7 127.0.0.1 5000\r\n" + get("/api/p"), reason: "proxy_protocol"},
		{name: "v1 with a bad address", on: proxiedFront, raw: "PROXY TCP4 203.0.113.999 127.0.0.1 5000 80\r\n" + get("/api/p"), reason: "proxy_protocol"},
		{name: "v1 with an IPv6 address for TCP4", on: proxiedFront, raw: "PROXY TCP4 ::1 127.0.0.1 5000 80\r\n" + get("/api/p"), reason: "proxy_protocol"},
		{name: "v1 ending in a bare LF", on: proxiedFront, raw: strings.TrimSuffix(proxyV1, "\r\n") + "\n" + get("/api/p"), reason: "proxy_protocol"},
		{name: "v1 too long", on: proxiedFront, raw: "PROXY UNKNOWN " + strings.Repeat("x", 120) + "\r\n" + get("/api/p"), reason: "proxy_protocol"},
		{name: "v1 UNKNOWN", on: proxiedFront, raw: "PROXY UNKNOWN\r\n" + get("/api/p"), want: []int{200}, open: true, backend: get("/api/p")},
		{name: "v1 in two segments", on: proxiedFront, raw: proxyV1 + get("/api/p"), split: 11, want: []int{200}, open: true, backend: get("/api/p")},
		{name: "v2 with a bad signature", on: proxiedFront, raw: strings.Replace(proxyTCP4, "QUIT", "QUIX", 1) + get("/api/p"), reason: "proxy_protocol"},
		{name: "v2 with a bad version", on: proxiedFront, raw: strings.Replace(proxyTCP4, "\x21\x11", "\x31\x11", 1) + get("/api/p"), reason: "proxy_protocol"},
		{name: "v2 too short for its family", on: proxiedFront, raw: proxyV2 + "\x21\x11\x00\x04\xcb\x00\x71\x07" + get("/api/p"), reason: "proxy_protocol"},
		{name: "v2 cut short", on: proxiedFront, raw: proxyTCP4[:20], halfClose: true, reason: "proxy_protocol"},
		{name: "v2", on: proxiedFront, raw: proxyTCP4 + get("/api/p"), want: []int{200}, open: true, backend: get("/api/p")},
		{name: "v2 LOCAL", on: proxiedFront, raw: proxyV2 + "\x20\x00\x00\x00" + get("/api/p"), want: []int{200}, open: true, backend: get("/api/p")},
		{name: "v2 in two segments", on: proxiedFront, raw: proxyTCP4 + get("/api/p"), split: 14, want: []int{200}, open: true, backend: get("/api/p")},
		{name: "v1 on a listener that expects none", raw: proxyV1 + get("/api/p"), want: []int{400}, reason: "bad_request"},
		{name: "v2 on a listener that expects none", raw: proxyTCP4 + get("/api/p"), want: []int{400}, reason: "bad_request"},
	}
}

// TestHostileInput sends each hostile row on a new conn to a live listener
// and checks the answer or the close, exactly; every byte the backend
// received; the errors_total reason that moved; that nothing panicked; and
// that a good request on a new conn right after still works.
func TestHostileInput(t *testing.T) {
	rec := newRecorder(t)
	fronts := hostileFronts(t, rec.srv.Addr())
	tlsPort := fronts[tlsFront].fl.BoundAddr().(*net.TCPAddr).Port
	for _, tc := range hostileRows(t, tlsPort) {
		t.Run(tc.name, func(t *testing.T) {
			if tc.pending != "" {
				t.Skip("pending: " + tc.pending)
			}
			l := fronts[tc.on]
			before := mErrCounts(l.lb)
			mark := rec.mark()
			c := tcptest.Dial(t, l.addr)
			tc.send(t, c)
			tc.answers(t, c)
			c.Close() // else wslb lingers on its closing conn for the client's close
			wait.For(t, "wslb to end the conn", func() bool { return l.fl.Active() == 0 })
			want := map[string]float64{}
			for _, r := range strings.Fields(tc.reason) {
				want[r] = 1
			}
			mExpectErrs(t, l.lb, before, want)

			resp, body := l.good(t)
			if resp.StatusCode != 200 || body != "ok" {
				t.Errorf("good request after: %d %q", resp.StatusCode, body)
			}
			got := rec.since(t, mark, goodSeen)
			switch {
			case !tc.partial && got != tc.backend:
				t.Errorf("backend received %q, want %q", got, tc.backend)
			case tc.partial && !strings.HasPrefix(got, tc.backend):
				t.Errorf("backend received %q, want it to start with %q", got, tc.backend)
			case tc.partial && completeRequest(got):
				t.Errorf("backend received a complete request: %q", got)
			}
			mExpectErrs(t, l.lb, before, want)
			if strings.Contains(l.log.String(), "panic") {
				t.Fatalf("wslb panicked:\n%s", l.log)
			}
		})
	}
}

// send writes the row's bytes on c: in one write, or in two segments.
func (tc hostileRow) send(t *testing.T, c *net.TCPConn) {
	t.Helper()
	parts := []string{tc.raw}
	if tc.split > 0 {
		parts = []string{tc.raw[:tc.split], tc.raw[tc.split:]}
	}
	for i, p := range parts {
		if i > 0 {
			time.Sleep(50 * time.Millisecond) // pacing: the second segment arrives on its own
		}
		if _, err := io.WriteString(c, p); err != nil {
			t.Fatal(err)
		}
	}
	if tc.halfClose {
		c.CloseWrite()
	}
}

// answers reads the row's answers on c, then its close unless it stays open.
func (tc hostileRow) answers(t *testing.T, c *net.TCPConn) {
	t.Helper()
	br := bufio.NewReader(c)
	var last *http.Response
	for i, status := range tc.want {
		resp, body := readResp(t, br, "GET")
		if resp.StatusCode != status {
			t.Fatalf("answer %d: %d %q, want %d", i, resp.StatusCode, body, status)
		}
		last = resp
	}
	if tc.location != "" && last.Header.Get("Location") != tc.location {
		t.Errorf("Location %q, want %q", last.Header.Get("Location"), tc.location)
	}
	switch {
	case tc.open:
	case tc.alert:
		expectAlertThenClose(t, br, c)
	default:
		expectClosed(t, br, c)
	}
}

// completeRequest reports whether s starts with a whole request, body included.
func completeRequest(s string) bool {
	req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(s)))
	if err != nil {
		return false
	}
	_, err = io.ReadAll(req.Body)
	return err == nil
}

// expectAlertThenClose asserts that the conn is closed after at most a TLS
// alert record.
func expectAlertThenClose(t *testing.T, br *bufio.Reader, c *net.TCPConn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(br)
	if err != nil && !isReset(err) {
		t.Fatalf("conn not closed: %v (got %q)", err, rest)
	}
	if len(rest) > 0 && (len(rest) != 7 || rest[0] != 0x15) {
		t.Fatalf("got %q before the close, want at most a TLS alert", rest)
	}
}
