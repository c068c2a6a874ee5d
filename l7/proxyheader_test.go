package l7

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/wslb/wslb/internal/tcptest"
)

// The addresses of the PROXY headers the tests send: a client, and the
// address it connected to on the balancer in front.
var (
	frontClient = netip.MustParseAddrPort("203.0.113.7:51000")
	frontDest   = netip.MustParseAddrPort("198.51.100.1:443")
)

// localHeader is a v2 LOCAL header: a balancer's own conn, naming nobody.
func localHeader(t testing.TB) []byte {
	t.Helper()
	b, err := (&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}).Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestProxyHeaderInSegments: a PROXY header, v1 or v2, that arrives in
// several TCP segments (byte by byte, or cut in two with a pause) is read
// whole within timeouts.handshake, and the request behind it is served for
// the client it names. One that stops half way is closed when the
// handshake timeout ends, counted as a timeout.
func TestProxyHeaderInSegments(t *testing.T) {
	rec := &headerRecorder{}
	be := newBackend(t, rec)
	l := simpleLB(t, "    accept_proxy_protocol: true\n    timeouts: {handshake: 5s}\n", be.addr())
	tcptest.TrickleProxyHeaders(t, l.addr, frontClient, frontDest, func(t *testing.T, c *net.TCPConn) {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, body := readResp(t, bufio.NewReader(c), "GET")
		if resp.StatusCode != 200 || body != "recorded" {
			t.Fatalf("got %d %q, want the request behind the header served", resp.StatusCode, body)
		}
		if got := rec.last(t).Header.Get("X-Forwarded-For"); got != frontClient.Addr().String() {
			t.Errorf("backend saw X-Forwarded-For %q, want the header's client %s", got, frontClient.Addr())
		}
	})
	mExpectErrs(t, l, nil, nil)

	t.Run("half a header", func(t *testing.T) {
		l := simpleLB(t, "    accept_proxy_protocol: true\n    timeouts: {handshake: 300ms}\n", be.addr())
		for _, c := range tcptest.HalfProxyHeaders(t, l.addr, frontClient, frontDest) {
			expectClosed(t, bufio.NewReader(c), c)
		}
		mExpectErrs(t, l, nil, map[string]float64{"timeout": 2})
	})
}

// TestProxyHeaderPassedOn: the PROXY header l7 sends a backend names the
// client and the destination of the header it accepted (so the backend
// learns what the balancer in front was asked for, IPv6 included), or,
// without one, the client's conn and the listener's own address.
func TestProxyHeaderPassedOn(t *testing.T) {
	be, got := tcptest.ServeProxied(t, func(c net.Conn, br *bufio.Reader) {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := http.ReadRequest(br); err == nil {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		}
	})
	v6Client, v6Dest := netip.MustParseAddrPort("[2001:db8::7]:51000"), netip.MustParseAddrPort("[2001:db8::1]:443")
	for _, tc := range []struct {
		name      string
		accept    bool
		in        []byte // the incoming header
		src, dest string // what the outgoing one names; "" is the client's conn or the listener
	}{
		{"v1 in", true, tcptest.ProxyHeader(t, 1, frontClient, frontDest), frontClient.String(), frontDest.String()},
		{"v2 in", true, tcptest.ProxyHeader(t, 2, frontClient, frontDest), frontClient.String(), frontDest.String()},
		{"IPv6 in", true, tcptest.ProxyHeader(t, 2, v6Client, v6Dest), v6Client.String(), v6Dest.String()},
		{"v1 UNKNOWN in", true, []byte("PROXY UNKNOWN\r\n"), "", ""},
		{"v2 LOCAL in", true, localHeader(t), "", ""},
		{"none in", false, nil, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := simpleLB(t, fmt.Sprintf("    proxy_protocol: v1\n    accept_proxy_protocol: %v\n", tc.accept), be.Addr())
			c := tcptest.Dial(t, l.addr)
			c.Write(append(bytes.Clone(tc.in), "GET / HTTP/1.1\r\nHost: a\r\n\r\n"...))
			if resp, _ := readResp(t, bufio.NewReader(c), "GET"); resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			h := <-got
			if h == nil {
				t.Fatal("backend got no PROXY header")
			}
			src, dest := tc.src, tc.dest
			if src == "" {
				src, dest = c.LocalAddr().String(), l.addr
			}
			if h.SourceAddr.String() != src || h.DestinationAddr.String() != dest {
				t.Errorf("backend's header names %s -> %s, want %s -> %s", h.SourceAddr, h.DestinationAddr, src, dest)
			}
		})
	}
}
