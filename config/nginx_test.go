package config

import (
	"reflect"
	"strconv"
	"testing"
)

// The http keys that translate nginx directives as written: sizes with
// suffixes, request_headers and redirect_code (listen lists are in
// listen_test.go, rewrite_prefix and fallback in routes_test.go). Each bad value is one problem, on its line, saying what to
// write instead.

// l7With is a valid l7 listener whose http block is body (indented by the
// caller with 6 spaces); the first line of body is line 6.
func l7With(body string) string {
	return `
listeners:
  - name: a
    listen: 127.0.0.1:0
    mode: l7
    http:
` + body + validPools
}

func TestSizes(t *testing.T) {
	ok := []struct {
		in   string
		want Size
	}{
		{"1073741824", 1 << 30},
		{"0", 0},
		{"0x400", 1024},
		{`"2048"`, 2048},
		{"512k", 512 << 10},
		{"512K", 512 << 10},
		{"10m", 10 << 20},
		{"10M", 10 << 20},
		{"1g", 1 << 30},
		{"1G", 1 << 30},
		{"8589934591g", 8589934591 << 30},
		{"0k", 0},
	}
	for _, tc := range ok {
		t.Run(tc.in, func(t *testing.T) {
			c := mustParse(t, l7With("      max_body_bytes: "+tc.in+"\n"))
			if got := c.Listeners[0].HTTP.MaxBodyBytes; got != tc.want {
				t.Fatalf("max_body_bytes: %s = %d, want %d", tc.in, got, tc.want)
			}
		})
	}
	bad := []struct {
		in, msg string
	}{
		{"10q", `unknown size suffix in "10q": use k, m or g (powers of 1024), as in 512k, 10m or 1g, or a number of bytes`},
		{"10kb", `unknown size suffix in "10kb"`},
		{"-1k", `a size cannot be negative, got "-1k": use 0 or more`},
		{"1.5m", `"1.5m" is not a whole number: write 1536k`},
		{"1.5g", `"1.5g" is not a whole number: write 1536m`},
		{"0.5k", `"0.5k" is not a whole number: write 512`},
		{"1.5", `"1.5" is not a whole number of bytes: write a whole number, such as 2`},
		{"1.0000001k", `is not a whole number of bytes: write a whole number, such as 1024`},
		{"8589934592g", `"8589934592g" is too large: a size must be below 8589934592g (8 EiB)`},
		{"99999999999999999999", `"99999999999999999999" is too large`},
		{"99999999999999999999k", `is too large`},
		{"k", `want a size such as 32768, 512k, 10m or 1g (k, m and g are powers of 1024), got "k"`},
		{`""`, `want a size such as 32768, 512k, 10m or 1g`},
		{"ten", `want a size such as`},
		{"true", `want a size such as`},
		{"[1]", `want a size such as 32768, 512k, 10m or 1g (k, m and g are powers of 1024), got a list`},
	}
	for _, tc := range bad {
		t.Run(tc.in, func(t *testing.T) {
			expect(t, l7With("      max_body_bytes: "+tc.in+"\n"), want{6, "listeners[0].http.max_body_bytes", tc.msg})
		})
	}
	// max_header_bytes takes the same spellings, and its lower bound reads them.
	c := mustParse(t, l7With("      max_header_bytes: 64k\n"))
	if got := c.Listeners[0].HTTP.MaxHeaderBytes; got != 64<<10 {
		t.Fatalf("max_header_bytes: 64k = %d", got)
	}
	expect(t, l7With("      max_header_bytes: 1023\n"), want{6, "listeners[0].http.max_header_bytes", "must be at least 1024, got 1023"})
	expect(t, l7With("      max_header_bytes: 1.5k\n"), want{6, "listeners[0].http.max_header_bytes", `write 1536`})
}

func TestRequestHeaders(t *testing.T) {
	c := mustParse(t, l7With(`      request_headers:
        x-forwarded-server: "${host}"
        X-Via: "wslb ${scheme}://${http_host}:${server_port} $$5"
        X-Peer: "${remote_addr}/${client_ip}"
        X-Powered-By: ""
        Host: backend.internal
`))
	got := c.Listeners[0].HTTP.SetHeaders
	wantSet := []RequestHeader{
		{Name: "Host", Value: []Part{{Text: "backend.internal"}}},
		{Name: "X-Forwarded-Server", Value: []Part{{Var: VarHost}}},
		{Name: "X-Peer", Value: []Part{{Var: VarRemoteAddr}, {Text: "/"}, {Var: VarClientIP}}},
		{Name: "X-Powered-By"},
		{Name: "X-Via", Value: []Part{{Text: "wslb "}, {Var: VarScheme}, {Text: "://"}, {Var: VarHTTPHost},
			{Text: ":"}, {Var: VarServerPort}, {Text: " $5"}}},
	}
	if !reflect.DeepEqual(got, wantSet) {
		t.Fatalf("SetHeaders =\n%+v\nwant\n%+v", got, wantSet)
	}

	expect(t, l7With(`      request_headers:
        X-A: "${hostname}"
        X-B: "${host"
        X-C: "$host"
        X-D: "$request_uri"
        X-E: "5$"
        Connection: close
        Upgrade: websocket
        Transfer-Encoding: chunked
        Content-Length: "0"
        TE: trailers
        Trailer: X
        Keep-Alive: timeout=5
        Proxy-Connection: close
        Sec-WebSocket-Key: x
        Host: ""
        "bad name": x
        X-F: "a\nb"
        x-a: dup
`),
		want{7, "listeners[0].http.request_headers.X-A", "unknown variable ${hostname}: use ${host}, ${http_host}, ${server_port}, ${scheme}, ${remote_addr} or ${client_ip}"},
		want{8, "listeners[0].http.request_headers.X-B", `"${host" has a ${ without its closing }: write ${name}, or $$ for a literal $`},
		want{9, "listeners[0].http.request_headers.X-C", "$host is not expanded: write ${host}"},
		want{10, "listeners[0].http.request_headers.X-D", "$request_uri is not a wslb variable: use ${host}"},
		want{11, "listeners[0].http.request_headers.X-E", `"5$": a $ starts a variable`},
		want{12, "listeners[0].http.request_headers.Connection", "wslb sets Connection itself: it is hop-by-hop"},
		want{13, "listeners[0].http.request_headers.Upgrade", "wslb sets Upgrade itself"},
		want{14, "listeners[0].http.request_headers.Transfer-Encoding", "wslb sets Transfer-Encoding itself: it frames the body"},
		want{15, "listeners[0].http.request_headers.Content-Length", "wslb sets Content-Length itself"},
		want{16, "listeners[0].http.request_headers.TE", "wslb sets TE itself"},
		want{17, "listeners[0].http.request_headers.Trailer", "wslb sets Trailer itself"},
		want{18, "listeners[0].http.request_headers.Keep-Alive", "wslb sets Keep-Alive itself"},
		want{19, "listeners[0].http.request_headers.Proxy-Connection", "wslb sets Proxy-Connection itself"},
		want{20, "listeners[0].http.request_headers.Sec-WebSocket-Key", "the backend's 101 is checked against the client's handshake"},
		want{21, "listeners[0].http.request_headers.Host", "Host cannot be removed"},
		want{22, "listeners[0].http.request_headers.bad name", `invalid header name "bad name"`},
		want{23, "listeners[0].http.request_headers.X-F", "must not contain CR, LF or NUL"},
		want{24, "listeners[0].http.request_headers.x-a", `X-A is set twice (also as "X-A" on line 7): keep one`},
	)
	expect(t, l7With(`      preserve_host: false
      request_headers: {Host: "${host}"}
`), want{7, "listeners[0].http.request_headers.Host", "Host is set here and preserve_host is false: keep one"})
	expect(t, l7With("      request_headers: [X-A]\n"), want{6, "listeners[0].http.request_headers", "want a mapping, got a list"})
}

func TestRedirectCode(t *testing.T) {
	for _, code := range []string{"301", "302", "307", "308"} {
		c := mustParse(t, l7With("      redirect_code: "+code+"\n"))
		if got := c.Listeners[0].HTTP.RedirectCode; strconv.Itoa(got) != code {
			t.Errorf("redirect_code %s decoded as %d", code, got)
		}
	}
	if c := mustParse(t, l7With("      https_port: 443\n")); c.Listeners[0].HTTP.RedirectCode != 308 {
		t.Errorf("default redirect_code %d, want 308", c.Listeners[0].HTTP.RedirectCode)
	}
	for _, code := range []string{"300", "303", "200", "0"} {
		expect(t, l7With("      redirect_code: "+code+"\n"), want{6, "listeners[0].http.redirect_code", "must be 301, 302, 307 or 308, got " + code})
	}
}
