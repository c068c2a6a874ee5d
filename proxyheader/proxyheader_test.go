package proxyheader

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/pires/go-proxyproto"
)

// header is a PROXY header of version v naming src and dst.
func header(t *testing.T, v byte, src, dst string) string {
	t.Helper()
	b, err := proxyproto.HeaderProxyFromAddrs(v, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)),
		net.TCPAddrFromAddrPort(netip.MustParseAddrPort(dst))).Format()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestParse: a header is read whole however it is cut into reads (one
// byte a read is the worst case), names both its addresses, and leaves the
// bytes behind it in the reader; one that names nobody gives no addresses;
// anything else is an error.
func TestParse(t *testing.T) {
	const rest = "GET / HTTP/1.1\r\n\r\n"
	local, err := (&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}).Format()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, in  string
		src, dest string // "" for no address
		bad       bool
	}{
		{"v1", header(t, 1, "203.0.113.7:51000", "198.51.100.1:443"), "203.0.113.7:51000", "198.51.100.1:443", false},
		{"v2", header(t, 2, "203.0.113.7:51000", "198.51.100.1:443"), "203.0.113.7:51000", "198.51.100.1:443", false},
		{"v1 IPv6", header(t, 1, "[2001:db8::7]:51000", "[2001:db8::1]:443"), "[2001:db8::7]:51000", "[2001:db8::1]:443", false},
		{"v2 IPv6", header(t, 2, "[2001:db8::7]:51000", "[2001:db8::1]:443"), "[2001:db8::7]:51000", "[2001:db8::1]:443", false},
		{"v1 UNKNOWN", "PROXY UNKNOWN\r\n", "", "", false},
		{"v2 LOCAL", string(local), "", "", false},
		{"no header", "GET / HTTP/1.1\r\n", "", "", true},
		{"v1 without CR", "PROXY TCP4 203.0.113.7 198.51.100.1 51000 443\n", "", "", true},
		{"v1 line too long", "PROXY TCP4 " + strings.Repeat("1", 120) + "\r\n", "", "", true},
	} {
		for _, cut := range []struct {
			name string
			r    func(io.Reader) io.Reader
		}{
			{"whole", func(r io.Reader) io.Reader { return r }},
			{"a byte a read", iotest.OneByteReader},
			{"half a read", iotest.HalfReader},
		} {
			t.Run(tc.name+" "+cut.name, func(t *testing.T) {
				br := bufio.NewReader(cut.r(strings.NewReader(tc.in + rest)))
				a, err := Parse(br)
				if tc.bad {
					if err == nil {
						t.Fatalf("Parse = %v, want an error", a)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if got := addrString(a.Source) + " " + addrString(a.Dest); got != tc.src+" "+tc.dest {
					t.Errorf("addresses %q, want %q", got, tc.src+" "+tc.dest)
				}
				if after, _ := io.ReadAll(br); string(after) != rest {
					t.Errorf("bytes after the header %q, want %q", after, rest)
				}
			})
		}
	}
}

func addrString(a netip.AddrPort) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// TestParseEndsWithItsReader: a header cut short by its reader's error
// (Read's deadline) is an error that wraps the reader's, so that Read can
// tell a timeout.
func TestParseEndsWithItsReader(t *testing.T) {
	v2 := header(t, 2, "203.0.113.7:51000", "198.51.100.1:443")
	for _, in := range []string{"PROX", "PROXY TCP4 203.0.113.7", v2[:10], v2[:14], v2[:20]} {
		r := io.MultiReader(strings.NewReader(in), iotest.ErrReader(os.ErrDeadlineExceeded))
		if _, err := Parse(bufio.NewReader(iotest.OneByteReader(r))); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%q: error %v, want one that wraps the reader's", in, err)
		}
	}
}
