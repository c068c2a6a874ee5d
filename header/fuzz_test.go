package header

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"net/http"
	"net/netip"
	"net/textproto"
	"slices"
	"strings"
	"testing"
)

// fuzzSeeds are the seeds of FuzzRewrite; testdata/fuzz/FuzzRewrite holds the
// same inputs so that plain `go test` runs them even without f.Add.
func fuzzSeeds() []string {
	return []string{
		// normal
		"Host: example.com\r\nAccept: */*\r\nUser-Agent: curl/8.5.0\r\n",
		// websocket upgrade
		"Host: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
		// spoofed X-Forwarded-For, X-Real-IP and Forwarded
		"X-Forwarded-For: 1.1.1.1, 10.0.0.2\r\nX-Real-IP: 1.1.1.1\r\n" +
			"X-Forwarded-For: \"[2001:db8::7]:443\"\r\nForwarded: for=1.1.1.1;proto=https\r\n",
		// IPv6 and 4in6 entries, ports
		"X-Forwarded-For: 2001:db8::7, [fd00::2]:80, ::ffff:10.0.0.3, fe80::1%eth0\r\nHost: [2001:db8::80]:8443\r\n",
		// odd Connection lists naming other headers
		"Connection: ,, x-foo ,\tKEEP-ALIVE,upgrade\r\nConnection: X-Bar\r\nX-Foo: 1\r\nX-Bar: 2\r\n" +
			"Keep-Alive: timeout=5\r\nUpgrade: foo/2, h2c, websocket\r\nTE: trailers\r\nProxy-Authorization: Basic Zm9v\r\n",
		// h2c, which is never tunnelled
		"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n",
		// a broken websocket handshake
		"Connection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: AAAA\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n",
		// a client naming the headers wslb sets in Connection, and a folded line
		"Connection: X-Forwarded-For, x-real-ip, Sec-WebSocket-Key\r\nX-Forwarded-For: 10.0.0.2,\r\n 10.0.0.3\r\n",
		// garbage
		"\x00\xff: \x7f\r\n:\r\n  folded\r\nX: y\r\n\r\ntrailing",
		"X-Forwarded-For: ,,\"\",[],[::1,1.2.3.4:,:80,\"1.2.3.4\r\nConnection: \"upgrade\"\r\nUpgrade: \r\n",
		"",
		// underscore spellings, which CGI/PHP/WSGI read as the dashed headers
		"X_Forwarded_For: 1.1.1.1\r\nx_real_ip: 1.1.1.1\r\nX-Forwarded_Host: evil\r\nX_FORWARDED_PROTO: https\r\n" +
			"X_Forwarded_Port: 1\r\nProxy_Authorization: Basic Zm9v\r\nTransfer_Encoding: chunked\r\nX_Other: kept\r\n",
		// Forwarded lists, several lines, one of them empty
		"Forwarded: for=1.1.1.1;proto=https, for=\"[2001:db8::7]:443\"\r\nForwarded: \r\nForwarded: for=10.0.0.2\r\n",
	}
}

// FuzzRewrite runs a header block through everything l7 does to a request head
// and checks the invariants the proxy relies on.
func FuzzRewrite(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add([]byte(s))
	}
	hopByHop := []string{"Connection", "Proxy-Connection", "Keep-Alive", "Te", "Trailer",
		"Transfer-Encoding", "Upgrade", "Proxy-Authenticate", "Proxy-Authorization"}
	untrusted := Forwarding{
		Peer:       netip.MustParseAddr("192.0.2.1"),
		Trusted:    []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		Host:       "example.com:8080",
		Proto:      "https",
		Port:       8443,
		XForwarded: true,
		RFC7239:    true,
	}
	trusted := untrusted
	trusted.Peer = netip.MustParseAddr("10.0.0.1")
	untrustedOff, trustedOff := untrusted, trusted // both options off
	untrustedOff.XForwarded, untrustedOff.RFC7239 = false, false
	trustedOff.XForwarded, trustedOff.RFC7239 = false, false

	f.Fuzz(func(t *testing.T, data []byte) {
		r := textproto.NewReader(bufio.NewReader(bytes.NewReader(append(data, "\r\n\r\n"...))))
		m, err := r.ReadMIMEHeader()
		if err != nil {
			return
		}
		in := http.Header(m)

		// RemoveHopByHop: no hop-by-hop header survives, nothing else is lost.
		h := in.Clone()
		RemoveHopByHop(h)
		named := map[string]bool{}
		for _, v := range in.Values("Connection") {
			for tok := range strings.SplitSeq(v, ",") {
				named[http.CanonicalHeaderKey(strings.Trim(tok, " \t"))] = true
			}
		}
		for _, k := range hopByHop {
			named[k] = true
		}
		for k, v := range in {
			_, kept := h[k]
			if named[k] && kept {
				t.Errorf("hop-by-hop %q = %q survived", k, h[k])
			}
			if !named[k] && (!kept || !slices.Equal(h[k], v)) {
				t.Errorf("end-to-end %q = %q became %q", k, v, h[k])
			}
		}

		// UpgradeToken: only allowed tokens, never h2c.
		token, present := UpgradeToken(in, []string{"h2c", "websocket", "FOO/2"})
		if token != "" && token != "websocket" && token != "foo/2" {
			t.Errorf("UpgradeToken = %q", token)
		}
		if token != "" && !present {
			t.Errorf("UpgradeToken = %q without present", token)
		}
		if len(in.Values("Upgrade")) == 0 && present {
			t.Error("present without an Upgrade header")
		}

		// SetForwarded, untrusted peer: the client's claims are all replaced.
		h = in.Clone()
		untrusted.SetForwarded(h)
		want := map[string]string{
			"X-Forwarded-For":   "192.0.2.1",
			"X-Real-Ip":         "192.0.2.1",
			"X-Forwarded-Host":  "example.com:8080",
			"X-Forwarded-Proto": "https",
			"X-Forwarded-Port":  "8443",
			"Forwarded":         `for=192.0.2.1;host="example.com:8080";proto=https`,
		}
		for k, v := range want {
			if !slices.Equal(h[k], []string{v}) {
				t.Errorf("untrusted peer: %s = %q; want %q", k, h[k], v)
			}
		}
		checkValues(t, h)

		// SetForwarded, trusted peer: one X-Real-IP that is an address, and the
		// peer appended to X-Forwarded-For.
		h = in.Clone()
		trusted.SetForwarded(h)
		if ip := h.Values("X-Real-Ip"); len(ip) != 1 || !netip.MustParseAddr(ip[0]).IsValid() {
			t.Errorf("trusted peer: X-Real-IP = %q", ip)
		}
		if xff := h.Values("X-Forwarded-For"); len(xff) != 1 || !strings.HasSuffix(xff[0], "10.0.0.1") {
			t.Errorf("trusted peer: X-Forwarded-For = %q", xff)
		}
		checkValues(t, h)
		if fwd := h.Values("Forwarded"); len(fwd) != 1 || !strings.HasSuffix(fwd[0], `for=10.0.0.1;host="example.com:8080";proto=https`) {
			t.Errorf("trusted peer: Forwarded = %q, want this hop's element last", fwd)
		}

		// SetForwarded with both options off: an untrusted peer's Forwarded
		// goes, a trusted peer's stays as sent, and so does every other
		// header but the underscore spellings of wslb's own.
		for _, f := range []Forwarding{untrustedOff, trustedOff} {
			h = in.Clone()
			f.SetForwarded(h)
			for k, v := range in {
				gone := ownUnderscored(k) || k == "Forwarded" && !f.trusted(f.Peer)
				if got, kept := h[k]; kept == gone || kept && !slices.Equal(got, v) {
					t.Errorf("peer %s, options off: %q = %q became %q (kept %v)", f.Peer, k, v, got, kept)
				}
			}
		}

		// No configuration lets an underscore spelling of wslb's own through.
		for _, f := range []Forwarding{untrusted, trusted, untrustedOff, trustedOff} {
			h = in.Clone()
			f.SetForwarded(h)
			for k := range h {
				if ownUnderscored(k) {
					t.Errorf("peer %s: underscore spelling %q = %q survived", f.Peer, k, h[k])
				}
			}
		}

		// CheckWebSocketRequest: an accepted key is a 16-byte nonce whose accept
		// passes CheckSwitch; a rejection is one of the two sentinels.
		key, err := CheckWebSocketRequest(in)
		switch {
		case err == nil:
			if b, err := base64.StdEncoding.DecodeString(key); err != nil || len(b) != 16 {
				t.Errorf("accepted key %q", key)
			}
			resp := http.Header{"Connection": {"upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Accept": {AcceptKey(key)}}
			if err := CheckSwitch(resp, "websocket", key); err != nil {
				t.Errorf("CheckSwitch of a right 101: %v", err)
			}
		case !errors.Is(err, ErrBadKey) && !errors.Is(err, ErrBadVersion):
			t.Errorf("CheckWebSocketRequest error %v is no sentinel", err)
		}
		_ = CheckSwitch(in, "websocket", key) // the head as a response: must not panic
	})
}

// ownUnderscored reports whether name is an underscore spelling of a header
// wslb sets or removes, the oracle of FuzzRewrite: written apart from the
// code it checks.
func ownUnderscored(name string) bool {
	if !strings.Contains(name, "_") {
		return false
	}
	switch http.CanonicalHeaderKey(strings.ReplaceAll(name, "_", "-")) {
	case "X-Real-Ip", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Port",
		"Proxy-Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length",
		"Proxy-Authenticate", "Proxy-Authorization":
		return true
	}
	return false
}

// checkValues fails t if any header of h could not be written as one line.
func checkValues(t *testing.T, h http.Header) {
	t.Helper()
	for k, vs := range h {
		for _, v := range vs {
			if strings.ContainsAny(v, "\r\n\x00") {
				t.Errorf("%s = %q holds CR, LF or NUL", k, v)
			}
		}
	}
}
