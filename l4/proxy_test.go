package l4

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/loopback"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
)

func TestBulkBothWays(t *testing.T) {
	be := echo.TCP(t)
	lb := startLB(t, "", be.Addr())
	c := tcptest.Dial(t, lb.addr)

	const size = 16 << 20
	data := make([]byte, size)
	rand.Read(data)
	want := sha256.Sum256(data)

	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.CloseWrite()
		}
		errc <- err
	}()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		t.Fatalf("read back: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if n != size {
		t.Fatalf("got %d bytes back, want %d", n, size)
	}
	if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
		t.Fatalf("sha256 differs: got %x want %x", got, want)
	}
	wait.For(t, "conn released", func() bool { return lb.pool.Backends()[0].Active() == 0 })
	rx := testutil.ToFloat64(lb.metrics.Bytes.WithLabelValues("l4test", "p", be.Addr(), "rx"))
	tx := testutil.ToFloat64(lb.metrics.Bytes.WithLabelValues("l4test", "p", be.Addr(), "tx"))
	if rx != size || tx != size {
		t.Fatalf("bytes metrics rx=%v tx=%v, want %d each", rx, tx, size)
	}
	if got := testutil.ToFloat64(lb.metrics.TunnelsClosed.WithLabelValues("l4test", "p", "client")); got != 1 {
		t.Fatalf("tunnels_closed{reason=client} = %v, want 1", got)
	}
}

// TestHalfClose: the client finishes sending; the backend still answers after
// seeing EOF, and the client reads that answer.
func TestHalfClose(t *testing.T) {
	be := tcptest.Serve(t, func(c net.Conn) {
		got, _ := io.ReadAll(c)
		c.Write([]byte("you said: " + string(got)))
		c.(*net.TCPConn).CloseWrite()
	})
	lb := startLB(t, "", be.Addr())
	c := tcptest.Dial(t, lb.addr)
	c.Write([]byte("hello"))
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read after half-close: %v", err)
	}
	if string(got) != "you said: hello" {
		t.Fatalf("got %q", got)
	}
}

func TestIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond

	t.Run("silent tunnel is closed", func(t *testing.T) {
		be := echo.TCP(t)
		lb := startLB(t, "timeouts: {idle: 300ms}", be.Addr())
		c := tcptest.Dial(t, lb.addr)
		if got := roundTrip(t, c, "ping"); got != "ping" {
			t.Fatalf("echo %q", got)
		}
		start := time.Now()
		_, err := c.Read(make([]byte, 1))
		took := time.Since(start)
		if !errors.Is(err, io.EOF) {
			t.Fatalf("want EOF after idle, got %v", err)
		}
		if took < idle-20*time.Millisecond || took > 3*idle {
			t.Fatalf("closed after %v, want about %v", took, idle)
		}
		wait.For(t, "idle reason counted", func() bool {
			return testutil.ToFloat64(lb.metrics.TunnelsClosed.WithLabelValues("l4test", "p", "idle")) == 1
		})
	})

	t.Run("one-way stream is not killed", func(t *testing.T) {
		// The backend talks for 2 idle periods while the client never sends:
		// a per-direction read deadline would kill this tunnel. A byte every
		// tenth of the idle timeout leaves 900 ms for a write that comes late
		// on a loaded machine (a fifth of 300 ms, 240 ms, was once too little).
		const streamIdle = time.Second
		be := tcptest.Serve(t, func(c net.Conn) {
			for i := range 20 {
				if _, err := c.Write([]byte{byte('a' + i)}); err != nil {
					return
				}
				time.Sleep(streamIdle / 10) // pacing: the trickle
			}
			c.(*net.TCPConn).CloseWrite()
			io.Copy(io.Discard, c)
		})
		lb := startLB(t, "timeouts: {idle: 1s}", be.Addr())
		c := tcptest.Dial(t, lb.addr)
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("stream cut: %v after %q", err, got)
		}
		if string(got) != "abcdefghijklmnopqrst" {
			t.Fatalf("got %q", got)
		}
	})
}

func TestDeadBackendNextTried(t *testing.T) {
	be := echo.TCP(t)
	lb := startLB(t, "", loopback.DeadAddr(t), be.Addr())
	for i := range 6 {
		c := tcptest.Dial(t, lb.addr)
		if got := roundTrip(t, c, "x"); got != "x" {
			t.Fatalf("conn %d: echo %q", i, got)
		}
		c.Close()
	}
	if be.Accepted() != 6 {
		t.Fatalf("live backend took %d conns, want 6", be.Accepted())
	}
	if got := testutil.ToFloat64(lb.metrics.Errors.WithLabelValues("l4test", "dial")); got < 1 {
		t.Fatalf("errors_total{reason=dial} = %v, want >= 1", got)
	}
}

func TestAllBackendsDeadCloses(t *testing.T) {
	lb := startLB(t, "timeouts: {connect: 1s}", loopback.DeadAddr(t), loopback.DeadAddr(t))
	c := tcptest.Dial(t, lb.addr)
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read succeeded with every backend dead")
	}
	if got := testutil.ToFloat64(lb.metrics.Errors.WithLabelValues("l4test", "dial")); got != 2 {
		t.Fatalf("errors_total{reason=dial} = %v, want 2 (one try, one retry)", got)
	}
}

// TestLeastConnSpreadsEvenly holds 30 long-lived conns over 3 backends.
func TestLeastConnSpreadsEvenly(t *testing.T) {
	var bes []*tcptest.Server
	var addrs []string
	for range 3 {
		b := echo.TCP(t)
		bes = append(bes, b)
		addrs = append(addrs, b.Addr())
	}
	lb := startLB(t, "", addrs...)
	for i := range 30 {
		c := tcptest.Dial(t, lb.addr)
		roundTrip(t, c, "x") // established end to end before the next one
		_ = i
	}
	for i, b := range bes {
		if b.Accepted() != 10 {
			t.Errorf("backend %d holds %d conns, want 10", i, b.Accepted())
		}
		if got := lb.pool.Backends()[i].Active(); got != 10 {
			t.Errorf("backend %d Active() = %d, want 10", i, got)
		}
		if got := testutil.ToFloat64(lb.metrics.ConnectionsActive.WithLabelValues("l4test", "p", addrs[i])); got != 10 {
			t.Errorf("connections_active{backend=%d} = %v, want 10", i, got)
		}
	}
}

// TestCountsReturnToZero ends conns from either side and checks the pool and
// the gauges come back to their prior values.
func TestCountsReturnToZero(t *testing.T) {
	be := tcptest.Serve(t, func(c net.Conn) {
		buf := make([]byte, 5)
		io.ReadFull(c, buf)
		if string(buf) == "close" {
			return // the backend ends this one
		}
		io.Copy(c, c)
	})
	lb := startLB(t, "", be.Addr())
	b := lb.pool.Backends()[0]
	gauge := lb.metrics.ConnectionsActive.WithLabelValues("l4test", "p", be.Addr())

	var byClient []net.Conn
	for range 5 {
		c := tcptest.Dial(t, lb.addr)
		c.Write([]byte("hello"))
		byClient = append(byClient, c)
		// The backend closes this one; like any real client, this one
		// closes its side once it reads EOF (until then the tunnel is only
		// half-closed and may still carry the client's bytes).
		c2 := tcptest.Dial(t, lb.addr)
		c2.Write([]byte("close"))
		go func() { io.Copy(io.Discard, c2); c2.Close() }()
	}
	// A backend reserves a conn at Pick, before the dial; the gauge counts it
	// once it is relayed. Both settle at the 5 conns that stay open.
	wait.For(t, "backend-closed conns released, 5 open in the gauge", func() bool {
		return b.Active() == 5 && testutil.ToFloat64(gauge) == 5
	})
	for _, c := range byClient {
		c.Close()
	}
	wait.For(t, "client-closed conns released", func() bool { return b.Active() == 0 })
	wait.For(t, "gauge back to 0", func() bool { return testutil.ToFloat64(gauge) == 0 })
	wait.For(t, "listener count back to 0", func() bool { return lb.fl.Active() == 0 })
	if got := testutil.ToFloat64(lb.metrics.TunnelsClosed.WithLabelValues("l4test", "p", "backend")); got != 5 {
		t.Fatalf("tunnels_closed{reason=backend} = %v, want 5", got)
	}
}

func TestMaxConnections(t *testing.T) {
	be := echo.TCP(t)
	lb := startLB(t, "max_connections: 2", be.Addr())
	a, b := tcptest.Dial(t, lb.addr), tcptest.Dial(t, lb.addr)
	roundTrip(t, a, "a")
	roundTrip(t, b, "b")

	c := tcptest.Dial(t, lb.addr)
	c.Write([]byte("c"))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("third conn got %d bytes; want it closed", n)
	}
	if got := testutil.ToFloat64(lb.metrics.Errors.WithLabelValues("l4test", "limit")); got != 1 {
		t.Fatalf("errors_total{reason=limit} = %v, want 1", got)
	}
	if be.Accepted() != 2 {
		t.Fatalf("backend saw %d conns, want 2", be.Accepted())
	}
	// A slot frees up when a conn ends.
	a.Close()
	wait.For(t, "slot freed", func() bool { return lb.fl.Active() == 1 })
	d := tcptest.Dial(t, lb.addr)
	if got := roundTrip(t, d, "d"); got != "d" {
		t.Fatalf("echo %q", got)
	}
}

// TestProxyProtocol: a PROXY v2 header from a balancer in front names the
// client and the address it connected to; wslb passes both on to the
// backend in a v1 header, and the bytes the client sent right behind the
// header arrive intact.
func TestProxyProtocol(t *testing.T) {
	be, got := tcptest.ServeProxied(t, func(c net.Conn, br *bufio.Reader) { io.Copy(c, br) })
	lb := startLB(t, "accept_proxy_protocol: true\nproxy_protocol: v1", be.Addr())
	c := tcptest.Dial(t, lb.addr)

	client, dest := netip.MustParseAddrPort("203.0.113.7:51000"), netip.MustParseAddrPort("198.51.100.1:443")
	c.Write(append(tcptest.ProxyHeader(t, 2, client, dest), "early bytes"...))
	buf := make([]byte, len("early bytes"))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "early bytes" {
		t.Fatalf("echo of early bytes: %q %v", buf, err)
	}
	bh := <-got
	if bh == nil {
		t.Fatal("backend got no PROXY header")
	}
	if bh.Version != 1 || bh.SourceAddr.String() != client.String() || bh.DestinationAddr.String() != dest.String() {
		t.Fatalf("backend header v%d %s -> %s, want v1 %s -> %s", bh.Version, bh.SourceAddr, bh.DestinationAddr, client, dest)
	}
}

// TestProxyProtocolInSegments: a PROXY header, v1 or v2, that arrives in
// several TCP segments (byte by byte, or cut in two with a pause) is read
// whole within timeouts.handshake, and the backend's header names the client
// it named. One that stops half way is closed when the handshake timeout
// ends, counted as a timeout.
func TestProxyProtocolInSegments(t *testing.T) {
	be, got := tcptest.ServeProxied(t, func(c net.Conn, br *bufio.Reader) { io.Copy(c, br) })
	lb := startLB(t, "accept_proxy_protocol: true\nproxy_protocol: v2\ntimeouts: {handshake: 5s}", be.Addr())
	client, dest := netip.MustParseAddrPort("203.0.113.7:51000"), netip.MustParseAddrPort("198.51.100.1:443")
	tcptest.TrickleProxyHeaders(t, lb.addr, client, dest, func(t *testing.T, c *net.TCPConn) {
		if got := roundTrip(t, c, "after the header"); got != "after the header" {
			t.Fatalf("echo %q", got)
		}
		if h := <-got; h == nil || h.SourceAddr.String() != client.String() {
			t.Fatalf("backend's header %v, want one naming %s", h, client)
		}
	})
	for _, reason := range []string{"timeout", "proxy_protocol"} {
		if got := testutil.ToFloat64(lb.metrics.Errors.WithLabelValues("l4test", reason)); got != 0 {
			t.Errorf("errors_total{reason=%s} = %v, want 0", reason, got)
		}
	}

	t.Run("half a header", func(t *testing.T) {
		lb := startLB(t, "accept_proxy_protocol: true\ntimeouts: {handshake: 300ms}", be.Addr())
		for _, c := range tcptest.HalfProxyHeaders(t, lb.addr, client, dest) {
			if _, err := c.Read(make([]byte, 1)); err == nil {
				t.Fatal("conn with half a header was served")
			}
		}
		if got := testutil.ToFloat64(lb.metrics.Errors.WithLabelValues("l4test", "timeout")); got != 2 {
			t.Errorf("errors_total{reason=timeout} = %v, want 2", got)
		}
		if be.Accepted() != 4 {
			t.Errorf("backend accepted %d conns, want only the 4 with a whole header", be.Accepted())
		}
	})
}

func TestProxyProtocolGarbageRejected(t *testing.T) {
	be := echo.TCP(t)
	lb := startLB(t, "accept_proxy_protocol: true", be.Addr())
	c := tcptest.Dial(t, lb.addr)
	c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("conn without a PROXY header was served")
	}
	if got := testutil.ToFloat64(lb.metrics.Errors.WithLabelValues("l4test", "proxy_protocol")); got != 1 {
		t.Fatalf("errors_total{reason=proxy_protocol} = %v, want 1", got)
	}
	if be.Accepted() != 0 {
		t.Fatal("backend was dialed for a bad header")
	}
}

func TestProxyProtocolHeaderTimeout(t *testing.T) {
	be := echo.TCP(t)
	lb := startLB(t, "accept_proxy_protocol: true\ntimeouts: {handshake: 200ms}", be.Addr())
	c := tcptest.Dial(t, lb.addr) // and never send the header
	start := time.Now()
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("conn with an unfinished PROXY header was served")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("closed after %v, want about 200ms", d)
	}
	if got := testutil.ToFloat64(lb.metrics.Errors.WithLabelValues("l4test", "timeout")); got != 1 {
		t.Fatalf("errors_total{reason=timeout} = %v, want 1", got)
	}
}
