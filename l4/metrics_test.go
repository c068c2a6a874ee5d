package l4

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/loopback"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
)

// DESIGN.md's metrics for l4: each way a conn can fail moves its own
// wslb_errors_total reason and no other, and raw TCP has no framing, so
// wslb_bytes_total must equal the bytes each side sent, exactly.

// mErrCounts reads every wslb_errors_total series of the test listener,
// whatever its reason word, so that a reason outside DESIGN.md's list shows up too.
func mErrCounts(l *lb) map[string]float64 { return l.metrics.ErrorCounts("l4test") }

// mExpectErrs asserts that wslb_errors_total moved from zero by exactly want
// and no other reason moved; counts may land just after the client sees
// its conn closed, so it waits up to 5 s for them.
func mExpectErrs(t *testing.T, l *lb, want map[string]float64) {
	t.Helper()
	var moves map[string]float64
	if wait.Until(wait.Timeout, func() bool {
		moves = map[string]float64{}
		for r, v := range mErrCounts(l) {
			if v != 0 {
				moves[r] = v
			}
		}
		return maps.Equal(moves, want)
	}) {
		return
	}
	var got, exp []string
	for _, r := range slices.Sorted(maps.Keys(moves)) {
		got = append(got, fmt.Sprintf("%s=%g", r, moves[r]))
	}
	for _, r := range slices.Sorted(maps.Keys(want)) {
		exp = append(exp, fmt.Sprintf("%s=%g", r, want[r]))
	}
	t.Errorf("errors_total is {%s}, want {%s}", strings.Join(got, " "), strings.Join(exp, " "))
}

// mExpectClosed asserts that wslb closes c without sending anything.
func mExpectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("conn got %d bytes; want it closed", n)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("conn not closed within 5s")
	}
}

func TestMetricsErrorReasons(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) (l *lb, be *tcptest.Server)
		run   func(t *testing.T, l *lb)
		want  map[string]float64
		held  float64 // conns still open at the end
	}{
		{"no backend up", func(t *testing.T) (*lb, *tcptest.Server) {
			be := echo.TCP(t)
			l := startLB(t, "", be.Addr())
			l.pool.Backends()[0].SetUp(false)
			return l, be
		}, func(t *testing.T, l *lb) {
			mExpectClosed(t, tcptest.Dial(t, l.addr))
		}, map[string]float64{"no_backend": 1}, 0},

		{"dial fails on both tries", func(t *testing.T) (*lb, *tcptest.Server) {
			return startLB(t, "timeouts: {connect: 1s}", loopback.DeadAddr(t), loopback.DeadAddr(t)), nil
		}, func(t *testing.T, l *lb) {
			mExpectClosed(t, tcptest.Dial(t, l.addr))
		}, map[string]float64{"dial": 2}, 0},

		{"no PROXY header", func(t *testing.T) (*lb, *tcptest.Server) {
			be := echo.TCP(t)
			return startLB(t, "accept_proxy_protocol: true", be.Addr()), be
		}, func(t *testing.T, l *lb) {
			c := tcptest.Dial(t, l.addr)
			c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
			mExpectClosed(t, c)
		}, map[string]float64{"proxy_protocol": 1}, 0},

		{"PROXY header too slow", func(t *testing.T) (*lb, *tcptest.Server) {
			be := echo.TCP(t)
			return startLB(t, "accept_proxy_protocol: true\ntimeouts: {handshake: 200ms}", be.Addr()), be
		}, func(t *testing.T, l *lb) {
			c := tcptest.Dial(t, l.addr)
			// Part of the signature, and no more.
			c.Write([]byte("PROX"))
			mExpectClosed(t, c)
		}, map[string]float64{"timeout": 1}, 0},

		{"max_connections", func(t *testing.T) (*lb, *tcptest.Server) {
			be := echo.TCP(t)
			return startLB(t, "max_connections: 1", be.Addr()), be
		}, func(t *testing.T, l *lb) {
			held := tcptest.Dial(t, l.addr)
			roundTrip(t, held, "x")
			mExpectClosed(t, tcptest.Dial(t, l.addr))
			if got := roundTrip(t, held, "y"); got != "y" {
				t.Errorf("the conn within the limit got %q", got)
			}
		}, map[string]float64{"limit": 1}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, be := tc.setup(t)
			tc.run(t, l)
			mExpectErrs(t, l, tc.want)
			if be != nil && float64(be.Accepted()) != tc.held {
				t.Errorf("backend accepted %d conns, want %v", be.Accepted(), tc.held)
			}
			var active, total float64
			for _, b := range l.pool.Backends() {
				active += testutil.ToFloat64(l.metrics.ConnectionsActive.WithLabelValues("l4test", "p", b.String()))
				total += testutil.ToFloat64(l.metrics.ConnectionsTotal.WithLabelValues("l4test", "p", b.String()))
			}
			if active != tc.held || total != tc.held {
				t.Errorf("connections_active = %v, connections_total = %v, want %v each", active, total, tc.held)
			}
			if n := testutil.CollectAndCount(l.metrics.TunnelsClosed); n != 0 {
				t.Errorf("%d tunnels_closed_total series for conns that never reached a backend", n)
			}
		})
	}
}

// mBytes returns wslb_bytes_total rx and tx of backend.
func mBytes(l *lb, backend string) (rx, tx float64) {
	return testutil.ToFloat64(l.metrics.Bytes.WithLabelValues("l4test", "p", backend, "rx")),
		testutil.ToFloat64(l.metrics.Bytes.WithLabelValues("l4test", "p", backend, "tx"))
}

// mClosed waits for the one conn's tunnel to be counted closed and returns
// the reason it was counted under.
func mClosed(t *testing.T, l *lb) string {
	t.Helper()
	wait.For(t, "tunnel closed", func() bool { return testutil.CollectAndCount(l.metrics.TunnelsClosed) == 1 })
	for _, r := range []string{"client", "backend", "idle", "drain", "removed", "error"} {
		if testutil.ToFloat64(l.metrics.TunnelsClosed.WithLabelValues("l4test", "p", r)) == 1 {
			return r
		}
	}
	return "?"
}

// TestMetricsBytesExact: raw TCP has no framing, so rx is exactly what the
// client sent and tx exactly what the backend sent, with odd sizes that
// differ each way, whoever closes first.
func TestMetricsBytesExact(t *testing.T) {
	const up, down = 300_001, 70_003
	for _, tc := range []struct {
		name, closer string
	}{
		{"client half-closes first", "client"},
		{"backend closes first", "backend"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := tcptest.Serve(t, func(c net.Conn) {
				if tc.closer == "client" {
					io.Copy(io.Discard, c)
				} else {
					io.CopyN(io.Discard, c, up)
				}
				c.Write(make([]byte, down))
				c.(*net.TCPConn).CloseWrite()
			})
			l := startLB(t, "", be.Addr())
			c := tcptest.Dial(t, l.addr)
			data := make([]byte, up)
			rand.Read(data)
			if _, err := c.Write(data); err != nil {
				t.Fatal(err)
			}
			if tc.closer == "client" {
				c.CloseWrite()
			}
			got, err := io.ReadAll(c)
			if err != nil || len(got) != down {
				t.Fatalf("read %d bytes, %v; want %d", len(got), err, down)
			}
			c.Close()
			if r := mClosed(t, l); r != tc.closer {
				t.Errorf("tunnels_closed_total{reason=%s}, want %s", r, tc.closer)
			}
			if rx, tx := mBytes(l, be.Addr()); rx != up || tx != down {
				t.Errorf("bytes_total rx=%v tx=%v, want rx=%d tx=%d", rx, tx, up, down)
			}
			if got := testutil.ToFloat64(l.metrics.ConnectionsTotal.WithLabelValues("l4test", "p", be.Addr())); got != 1 {
				t.Errorf("connections_total = %v, want 1", got)
			}
			if got := testutil.ToFloat64(l.metrics.ConnectionsActive.WithLabelValues("l4test", "p", be.Addr())); got != 0 {
				t.Errorf("connections_active = %v, want 0", got)
			}
			if n := testutil.CollectAndCount(l.metrics.TunnelDuration); n != 1 {
				t.Errorf("%d tunnel_duration_seconds series, want 1", n)
			}
			mExpectErrs(t, l, map[string]float64{})
		})
	}
}

// TestMetricsBytesExactBehindProxyHeaders: the PROXY header a balancer in
// front sends, and the one wslb sends to the backend, are not the client's
// bytes; the client's bytes that arrive in the same packet as the incoming
// header are, as much as any later ones.
func TestMetricsBytesExactBehindProxyHeaders(t *testing.T) {
	const early, later, answer = "early bytes", "and later bytes", "the answer"
	got := make(chan string, 1)
	earlyIn := make(chan struct{}) // closed once the backend has the early bytes, or has failed
	be := tcptest.Serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := proxyproto.Read(br); err != nil {
			close(earlyIn)
			got <- "no PROXY header: " + err.Error()
			return
		}
		first := make([]byte, len(early))
		io.ReadFull(br, first)
		close(earlyIn)
		b, _ := io.ReadAll(br)
		got <- string(first) + string(b)
		io.WriteString(c, answer)
		c.(*net.TCPConn).CloseWrite()
	})
	l := startLB(t, "accept_proxy_protocol: true\nproxy_protocol: v1", be.Addr())
	c := tcptest.Dial(t, l.addr)
	h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(netip.MustParseAddrPort("203.0.113.7:51000")),
		net.TCPAddrFromAddrPort(netip.MustParseAddrPort("198.51.100.1:443")))
	var head bytes.Buffer
	h.WriteTo(&head)
	head.WriteString(early)
	c.Write(head.Bytes())
	// What follows comes in a read of its own: wslb has relayed the early
	// bytes before it is sent.
	select {
	case <-earlyIn:
	case <-time.After(10 * time.Second):
		t.Fatal("the early bytes never reached the backend")
	}
	io.WriteString(c, later)
	c.CloseWrite()
	reply, err := io.ReadAll(c)
	if err != nil || string(reply) != answer {
		t.Fatalf("client got %q, %v", reply, err)
	}
	if s := <-got; s != early+later {
		t.Fatalf("backend got %q, want %q", s, early+later)
	}
	mClosed(t, l)
	if rx, tx := mBytes(l, be.Addr()); rx != float64(len(early+later)) || tx != float64(len(answer)) {
		t.Errorf("bytes_total rx=%v tx=%v, want rx=%d (the client's bytes, headers not included: %d that came with "+
			"the incoming header, %d later) tx=%d", rx, tx, len(early+later), len(early), len(later), len(answer))
	}
	mExpectErrs(t, l, map[string]float64{})
}
