package tcptest

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/pires/go-proxyproto"
)

// ServeProxied is Serve for a backend behind wslb's outgoing PROXY header:
// on each conn it reads the header (go-proxyproto's reading, not wslb's),
// sends it on the returned channel, which holds the headers of up to 64
// conns unread, then runs serve with the reader, which may hold bytes that
// followed the header. A conn whose header cannot be read sends nil and is
// closed.
func ServeProxied(t testing.TB, serve func(c net.Conn, br *bufio.Reader)) (*Server, <-chan *proxyproto.Header) {
	t.Helper()
	headers := make(chan *proxyproto.Header, 64)
	s := Serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		h, err := proxyproto.Read(br)
		if err != nil {
			headers <- nil
			return
		}
		headers <- h
		serve(c, br)
	})
	return s, headers
}

// ProxyHeader is a PROXY header of version v (1 or 2), as a balancer in
// front of wslb sends it, naming the client src and the address dst it
// connected to.
func ProxyHeader(t testing.TB, v byte, src, dst netip.AddrPort) []byte {
	t.Helper()
	b, err := proxyproto.HeaderProxyFromAddrs(v, net.TCPAddrFromAddrPort(src), net.TCPAddrFromAddrPort(dst)).Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TrickleProxyHeaders runs check in a subtest for each PROXY header version
// and each of Cuts: on a new conn to addr, a header naming src and dst has
// been written in that cut (Trickle), and check sends what follows it.
func TrickleProxyHeaders(t *testing.T, addr string, src, dst netip.AddrPort, check func(t *testing.T, c *net.TCPConn)) {
	t.Helper()
	for _, v := range []byte{1, 2} {
		head := ProxyHeader(t, v, src, dst)
		for _, cut := range Cuts(len(head)) {
			t.Run(fmt.Sprintf("v%d %s", v, cut.Name), func(t *testing.T) {
				c := Dial(t, addr)
				Trickle(t, c, head, cut)
				check(t, c)
			})
		}
	}
}

// HalfProxyHeaders opens a conn to addr for each PROXY header version and
// writes the first half of a header naming src and dst on it, and no more:
// headers that never complete.
func HalfProxyHeaders(t testing.TB, addr string, src, dst netip.AddrPort) []*net.TCPConn {
	t.Helper()
	var conns []*net.TCPConn
	for _, v := range []byte{1, 2} {
		head := ProxyHeader(t, v, src, dst)
		c := Dial(t, addr)
		if _, err := c.Write(head[:len(head)/2]); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	return conns
}
