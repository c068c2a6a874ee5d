package upstream

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/internal/certtest"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/metrics"
	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/proxyheader"
)

// tlsPool is a pool "p" over addrs that speaks TLS trusting ca.
func tlsPool(t *testing.T, ca *certtest.CA, addrs ...string) *pool.Pool {
	t.Helper()
	c := config.Pool{Name: "p", Balance: config.BalanceRoundRobin, IdlePerWorker: 2, TLS: &config.BackendTLS{CA: "ca", Roots: ca.Pool()}}
	for _, a := range addrs {
		ap := netip.MustParseAddrPort(a)
		c.Backends = append(c.Backends, config.Backend{Address: a, Weight: 1, Addr: ap})
	}
	return pool.New(c)
}

func testDialer(timeout time.Duration) (*Dialer, *metrics.Metrics) {
	m := metrics.New(prometheus.NewRegistry())
	return &Dialer{Listener: "l", Timeout: timeout, Metrics: m, Errs: m.ListenerErrors("l"),
		Log: slog.New(slog.DiscardHandler)}, m
}

// tlsServer accepts conns on loopback and runs a TLS server with cert on
// each, after reading a PROXY header line first when proxied; got receives
// the header.
func tlsServer(t *testing.T, cert tls.Certificate, proxied bool, got chan<- string) string {
	t.Helper()
	return tcptest.Serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if proxied {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			got <- line
		}
		// h2 first: a client that offered it would get it.
		tc := tls.Server(&readerConn{Conn: c, r: br}, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}})
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if tc.Handshake() != nil {
			return
		}
		io.Copy(tc, tc)
	}).Addr()
}

// readerConn reads through r, which may hold bytes already read from Conn.
type readerConn struct {
	net.Conn
	r io.Reader
}

func (c *readerConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// TestDialTLS: a dial to a pool with tls returns a handshaken TLS conn that
// chose http/1.1, after the PROXY header, which goes first in the clear;
// the connect histogram counts the whole of it.
func TestDialTLS(t *testing.T) {
	ca := certtest.NewCA(t)
	headers := make(chan string, 1)
	addr := tlsServer(t, ca.Issue(t, certtest.Leaf{Names: []string{"127.0.0.1"}}), true, headers)
	d, m := testDialer(5 * time.Second)
	d.ProxyProtocol = "v1"
	p := tlsPool(t, ca, addr)
	c, err := d.Connect(t.Context(), Request{Pool: p, Addrs: proxyheader.Addrs{
		Source: netip.MustParseAddrPort("192.0.2.1:5555"), Dest: netip.MustParseAddrPort("127.0.0.1:80")}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Backend.Release()
	defer c.Net.Close()
	tc, ok := c.Net.(*tls.Conn)
	if !ok {
		t.Fatalf("conn is %T, want *tls.Conn", c.Net)
	}
	if st := tc.ConnectionState(); !st.HandshakeComplete || st.NegotiatedProtocol != "http/1.1" {
		t.Fatalf("handshake complete %v, ALPN %q", st.HandshakeComplete, st.NegotiatedProtocol)
	}
	if h := <-headers; !strings.HasPrefix(h, "PROXY TCP4 192.0.2.1 127.0.0.1 5555 80") {
		t.Fatalf("PROXY header %q", h)
	}
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	tc.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(tc, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo %q: %v", buf, err)
	}
	if n := testutil.CollectAndCount(m.BackendConnect); n != 1 {
		t.Errorf("%d connect series, want 1", n)
	}
}

// TestDialTLSTimeout: the TLS handshake shares timeouts.connect with the
// TCP dial: a backend that accepts but never answers the ClientHello is a
// failed dial, reported, and the other backend is tried.
func TestDialTLSTimeout(t *testing.T) {
	ca := certtest.NewCA(t)
	silent := tcptest.Serve(t, func(c net.Conn) { io.Copy(io.Discard, c) }).Addr()
	good := tlsServer(t, ca.Issue(t, certtest.Leaf{Names: []string{"127.0.0.1"}}), false, nil)
	d, _ := testDialer(300 * time.Millisecond)
	var failed []error
	d.OnDialError = func(b *pool.Backend, err error) { failed = append(failed, err) }
	p := tlsPool(t, ca, silent, good)
	start := time.Now()
	c, err := d.Connect(t.Context(), Request{Pool: p})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Backend.Release()
	defer c.Net.Close()
	if c.Backend.String() != good {
		t.Fatalf("connected to %s, want %s after the silent one timed out", c.Backend, good)
	}
	if len(failed) != 1 || !errors.Is(failed[0], os.ErrDeadlineExceeded) || !strings.Contains(failed[0].Error(), "TLS handshake with "+silent) {
		t.Fatalf("reported %v, want one TLS handshake timeout", failed)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the silent backend held the dial for %v, past timeouts.connect (300ms)", d)
	}
}
