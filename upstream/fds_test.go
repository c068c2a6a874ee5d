package upstream

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/fdbudget"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/pool"
)

// TestConnectOutOfDescriptors: with only the reserve left, Connect dials
// nothing, blames nothing and says limit; a kept-alive conn is still used
// (it needs no new descriptor); once a descriptor is free it dials again.
func TestConnectOutOfDescriptors(t *testing.T) {
	srv := tcptest.Serve(t, func(c net.Conn) { c.Read(make([]byte, 1)) })
	ap := netip.MustParseAddrPort(srv.Addr())
	fds := fdbudget.WithLimit(100, 88, nil) // reserve 12: 88 is the share, full
	p := pool.NewCounted(config.Pool{Name: "p", Backends: []config.Backend{{Address: ap.String(), Weight: 1, Addr: ap}}}, fds)
	d, m := testDialer(0)
	blamed := 0
	d.OnDialError = func(*pool.Backend, error) { blamed++ }
	errs := m.ListenerErrors("l")

	_, err := d.Connect(t.Context(), Request{Pool: p})
	if Reason(err) != ReasonLimit || !errors.Is(err, ErrNoDescriptors) {
		t.Fatalf("Connect in the reserve: %v, want reason limit", err)
	}
	if srv.Accepted() != 0 || blamed != 0 || p.Backends()[0].Active() != 0 || fds.Used() != 88 {
		t.Fatalf("a refused connect dialed %d, blamed %d, left %d reserved and %d counted",
			srv.Accepted(), blamed, p.Backends()[0].Active(), fds.Used())
	}
	if l, dl := testutil.ToFloat64(errs.Limit), testutil.ToFloat64(errs.Dial); l != 1 || dl != 0 {
		t.Fatalf("errors limit %v dial %v, want 1 and 0", l, dl)
	}
	if !p.Backends()[0].Healthy() {
		t.Fatal("the backend is not healthy after a local shortage")
	}

	kept, _ := tcptest.Pair(t)
	idle := func(*pool.Backend) (net.Conn, *bufio.Reader, bool) { return kept, nil, true }
	c, err := d.Connect(t.Context(), Request{Pool: p, Idle: idle})
	if err != nil || !c.Reused {
		t.Fatalf("Connect with an idle conn in the reserve: %v, want the idle conn", err)
	}
	c.Backend.Release()

	fds.Add(-1)
	c, err = d.Connect(context.Background(), Request{Pool: p})
	if err != nil {
		t.Fatalf("Connect with a descriptor free: %v", err)
	}
	c.Net.Close()
	c.Backend.Release()
	if fds.Used() != 87 {
		t.Fatalf("%d counted after the conn ended, want 87", fds.Used())
	}
}
