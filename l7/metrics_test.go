package l7

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wslb/wslb/header"
	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
)

// DESIGN.md "Bad input and faults" as wslb_errors_total sees it: each fault
// moves its own reason word by the expected amount and no other reason at
// all, so that an alert on one reason never fires for another's cause.

// mErrCounts reads every wslb_errors_total series of the test listener,
// whatever its reason word, so that a reason outside DESIGN.md's list shows up too.
func mErrCounts(l *lb) map[string]float64 { return l.metrics.ErrorCounts("web") }

// mErrMoves is what moved between two readings, zero moves left out.
func mErrMoves(before, after map[string]float64) map[string]float64 {
	moves := map[string]float64{}
	for r, v := range after {
		if d := v - before[r]; d != 0 {
			moves[r] = d
		}
	}
	return moves
}

// mExpectErrs asserts that wslb_errors_total of l moved from before (nil: all
// zero) by exactly want, every other reason by nothing. Some counts land just
// after the client sees its answer or close, so it waits up to 5 s for them.
func mExpectErrs(t *testing.T, l *lb, before, want map[string]float64) {
	t.Helper()
	if want == nil {
		want = map[string]float64{}
	}
	var moves map[string]float64
	if wait.Until(wait.Timeout, func() bool {
		moves = mErrMoves(before, mErrCounts(l))
		return maps.Equal(moves, want)
	}) {
		return
	}
	t.Errorf("errors_total moved by %s, want %s", mFmtMoves(moves), mFmtMoves(want))
}

func mFmtMoves(m map[string]float64) string {
	if len(m) == 0 {
		return "nothing"
	}
	var parts []string
	for _, r := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s%+g", r, m[r]))
	}
	return strings.Join(parts, " ")
}

// TestMetricsErrorsProxyHeader: with accept_proxy_protocol, a conn that sends
// something else counts as "proxy_protocol" and one that sends nothing within
// timeouts.handshake as "timeout"; a good header moves nothing.
func TestMetricsErrorsProxyHeader(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(echoBody))
	l := simpleLB(t, "    accept_proxy_protocol: true\n    timeouts: {handshake: 300ms}\n", be.addr())

	before := mErrCounts(l)
	_, _, resp, _ := sendRaw(t, l.addr, "PROXY TCP4 203.0.113.7 127.0.0.1 5000 80\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET")
	if resp.StatusCode != 200 {
		t.Fatalf("with a good header: %d", resp.StatusCode)
	}
	mExpectErrs(t, l, before, nil)

	before = mErrCounts(l)
	c := tcptest.Dial(t, l.addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	expectClosed(t, bufio.NewReader(c), c)
	mExpectErrs(t, l, before, map[string]float64{"proxy_protocol": 1})

	before = mErrCounts(l)
	c = tcptest.Dial(t, l.addr) // and never send the header
	expectClosed(t, bufio.NewReader(c), c)
	mExpectErrs(t, l, before, map[string]float64{"timeout": 1})
	if n := be.reqs.Load(); n != 1 {
		t.Errorf("backend got %d requests, want only the one with a good header", n)
	}
}

// TestMetricsBadUpgradeResponse: a 101 without the matching accept is a 502
// that counts as "bad_upgrade_response" only, and as no upgrade, no tunnel
// and no active conn.
func TestMetricsBadUpgradeResponse(t *testing.T) {
	addr := tcptest.Serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		io.Copy(io.Discard, br)
	}).Addr()
	l := simpleLB(t, "", addr)
	c, _, resp, _ := sendRaw(t, l.addr, upgradeHead("/"), "GET")
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", resp.StatusCode)
	}
	c.Close() // wslb lingers on a closing conn until the client has gone
	mExpectErrs(t, l, nil, map[string]float64{"bad_upgrade_response": 1})
	mNoTunnel(t, l, addr)
	if got := l.requests("p", "502"); got != 1 {
		t.Errorf("http_requests_total{code=502} = %v, want 1", got)
	}
}

// TestMetricsUpgradeRefusedByBackend: a backend's non-101 answer to an
// upgrade is relayed and counted by its code; it is no error and no tunnel.
func TestMetricsUpgradeRefusedByBackend(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "forbidden", http.StatusForbidden)
	}))
	l := simpleLB(t, "", be.addr())
	resp, _ := exchange(t, l.addr, upgradeHead("/"))
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("status %d, want the backend's 403", resp.StatusCode)
	}
	mExpectErrs(t, l, nil, nil)
	mNoTunnel(t, l, be.addr())
	if got := l.requests("p", "403"); got != 1 {
		t.Errorf("http_requests_total{code=403} = %v, want 1", got)
	}
}

// mNoTunnel asserts that no upgrade, tunnel or active conn was counted.
func mNoTunnel(t *testing.T, l *lb, backend string) {
	t.Helper()
	m := l.metrics
	if got := testutil.ToFloat64(m.Upgrades.WithLabelValues("web", "p")); got != 0 {
		t.Errorf("upgrades_total = %v, want 0", got)
	}
	if got := l.requests("p", "101"); got != 0 {
		t.Errorf("http_requests_total{code=101} = %v, want 0", got)
	}
	if n := testutil.CollectAndCount(m.TunnelsClosed); n != 0 {
		t.Errorf("%d tunnels_closed_total series, want none", n)
	}
	b := l.pools["p"].Backends()[0]
	wait.For(t, "backend released", func() bool { return b.Active() == 0 })
	if got := testutil.ToFloat64(m.ConnectionsActive.WithLabelValues("web", "p", backend)); got != 0 {
		t.Errorf("connections_active = %v, want 0", got)
	}
}

// TestMetricsBackendClosesMidTunnel: with another tunnel open, a backend that
// drops its tunnel takes the client side down too, every gauge returns to
// its prior value (1, not 0), the close counts as the backend's, and no
// error reason moves.
func TestMetricsBackendClosesMidTunnel(t *testing.T) {
	// A WebSocket echo that drops the conn, with no close frame, when it
	// gets the message "bye".
	be := newBackend(t, echo.WSHandler(echo.WSOptions{Drop: "bye"}))
	l := simpleLB(t, "", be.addr())
	m := l.metrics
	b := l.pools["p"].Backends()[0]
	active := m.ConnectionsActive.WithLabelValues("web", "p", be.addr())
	closed := func(reason string) float64 {
		return testutil.ToFloat64(m.TunnelsClosed.WithLabelValues("web", "p", reason))
	}

	stays := dialWS(t, "ws://"+l.addr+"/", nil)
	echoOnce(t, stays, websocket.MessageText, []byte("hello"))
	wait.For(t, "first tunnel counted", func() bool { return testutil.ToFloat64(active) == 1 && b.Active() == 1 })

	dropped := dialWS(t, "ws://"+l.addr+"/", nil)
	echoOnce(t, dropped, websocket.MessageText, []byte("hello"))
	wait.For(t, "second tunnel counted", func() bool { return testutil.ToFloat64(active) == 2 && b.Active() == 2 })
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := dropped.Write(ctx, websocket.MessageText, []byte("bye")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := dropped.Read(ctx); err == nil {
		t.Fatal("client side still open after the backend dropped the tunnel")
	} else if ctx.Err() != nil {
		t.Fatal("client side not closed within 5s of the backend dropping the tunnel")
	}
	wait.For(t, "gauges back to their prior value", func() bool {
		return testutil.ToFloat64(active) == 1 && b.Active() == 1 && closed("backend") == 1
	})
	if got := closed("client"); got != 0 {
		t.Errorf("tunnels_closed_total{client} = %v, want 0", got)
	}
	if got := testutil.ToFloat64(m.Upgrades.WithLabelValues("web", "p")); got != 2 {
		t.Errorf("upgrades_total = %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.ConnectionsTotal.WithLabelValues("web", "p", be.addr())); got != 2 {
		t.Errorf("connections_total = %v, want 2", got)
	}
	mExpectErrs(t, l, nil, nil)

	// The other tunnel was untouched and still works.
	echoOnce(t, stays, websocket.MessageText, []byte("still here"))
	stays.CloseNow()
	wait.For(t, "gauges back to 0", func() bool {
		return testutil.ToFloat64(active) == 0 && b.Active() == 0 && closed("client") == 1
	})
	if n := testutil.CollectAndCount(m.TunnelDuration); n != 1 {
		t.Errorf("%d tunnel_duration_seconds series, want 1", n)
	}
	mExpectErrs(t, l, nil, nil)
}

// TestMetricsEarlyFramesCounted: frames that share a write with the heads are
// the tunnel's first bytes and count in wslb_bytes_total like the rest; the
// heads themselves do not.
func TestMetricsEarlyFramesCounted(t *testing.T) {
	const fromBackend, fromClient, later = "BACKEND-FIRST", "CLIENT-FIRST", "later bytes"
	addr := tcptest.Serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Accept: "+header.AcceptKey(req.Header.Get("Sec-WebSocket-Key"))+"\r\n\r\n"+fromBackend)
		buf := make([]byte, len(fromClient)+len(later))
		io.ReadFull(br, buf)
	}).Addr()
	l := simpleLB(t, "", addr)
	c := tcptest.Dial(t, l.addr)
	io.WriteString(c, upgradeHead("/")+fromClient)
	br := bufio.NewReader(c)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	io.WriteString(c, later)
	io.ReadAll(br) // the backend closes once it has everything
	wait.For(t, "tunnel closed", func() bool { return testutil.CollectAndCount(l.metrics.TunnelsClosed) == 1 })
	rx := testutil.ToFloat64(l.metrics.Bytes.WithLabelValues("web", "p", addr, "rx"))
	tx := testutil.ToFloat64(l.metrics.Bytes.WithLabelValues("web", "p", addr, "tx"))
	if rx != float64(len(fromClient)+len(later)) || tx != float64(len(fromBackend)) {
		t.Errorf("bytes_total rx=%v tx=%v, want rx=%d tx=%d", rx, tx, len(fromClient)+len(later), len(fromBackend))
	}
}
