package frontend

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wslb/wslb/internal/loopback"
)

// bound binds a Listener named name on addrs with two workers and closes
// it when the test ends.
func bound(t *testing.T, name string, addrs ...string) *Listener {
	t.Helper()
	l := &Listener{Name: name, Addrs: addrs, Workers: 2, Log: quietLog()}
	if err := l.Listen(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

// port is the port of a bound address.
func port(a net.Addr) string { return strconv.Itoa(a.(*net.TCPAddr).Port) }

// TestListenSeveralAddresses: one listener, every address with Workers
// sockets of its own port, one handler per worker shared by the addresses,
// and every address serving.
func TestListenSeveralAddresses(t *testing.T) {
	addrs := []string{"127.0.0.1:0", "127.0.0.2:0"}
	if loopback.IPv6(t) {
		addrs = append(addrs, "[::1]:0")
	}
	h := &holdUntilCanceled{}
	var handlers atomic.Int32
	l := &Listener{Name: "t", Addrs: addrs, Workers: 2, NewHandler: func() Handler { handlers.Add(1); return h }}
	stop := start(t, l)
	defer func() { stop(); l.Drain(t.Context(), 0, 0) }()
	if len(l.lns) != 2*len(addrs) {
		t.Fatalf("%d sockets, want 2 for each of %d addresses", len(l.lns), len(addrs))
	}
	bound := l.BoundAddrs()
	if len(bound) != len(addrs) || l.BoundAddr() != bound[0] {
		t.Fatalf("BoundAddrs %v for %v (BoundAddr %v)", bound, addrs, l.BoundAddr())
	}
	for i, a := range bound {
		host, _, _ := net.SplitHostPort(addrs[i])
		if got := a.(*net.TCPAddr).IP.String(); got != strings.Trim(host, "[]") {
			t.Errorf("address %d bound %v, want host %s", i, a, host)
		}
		for w := range 2 {
			if s := l.lns[2*i+w].Addr().String(); s != a.String() {
				t.Errorf("worker %d of %s bound %s", w, a, s)
			}
		}
		for range 3 {
			dialRead(t, a.String())
		}
	}
	if handlers.Load() != 2 {
		t.Fatalf("NewHandler called %d times, want once per worker (2), whatever the addresses", handlers.Load())
	}
}

// TestListenFamilies: an IPv4 address takes IPv4 only and an IPv6 one IPv6
// only, so nginx's pair ["0.0.0.0:80", "[::]:80"] binds one port twice
// without either taking the other's conns; a bare ":port" takes both.
func TestListenFamilies(t *testing.T) {
	if !loopback.IPv6(t) {
		t.Skip("IPv6 unavailable: nothing to tell apart")
	}
	_, p, _ := net.SplitHostPort(loopback.FreeAddr(t))
	h := &holdUntilCanceled{}
	l := &Listener{Name: "t", Addrs: []string{"127.0.0.1:" + p}, Workers: 1, NewHandler: func() Handler { return h }}
	stop := start(t, l)
	dialRead(t, "127.0.0.1:"+p)
	if c, err := net.DialTimeout("tcp", "[::1]:"+p, time.Second); err == nil {
		c.Close()
		t.Error("an IPv4 address took an IPv6 conn")
	}
	stop()
	l.Drain(t.Context(), 0, 0)

	both := &Listener{Name: "pair", Addrs: []string{"0.0.0.0:0"}, Workers: 1, NewHandler: func() Handler { return h }}
	stop = start(t, both)
	p = port(both.BoundAddr())
	stop()
	both.Drain(t.Context(), 0, 0)
	pair := &Listener{Name: "pair", Addrs: []string{"0.0.0.0:" + p, "[::]:" + p}, Workers: 2, NewHandler: func() Handler { return h }}
	stop = start(t, pair)
	defer func() { stop(); pair.Drain(t.Context(), 0, 0) }()
	dialRead(t, "127.0.0.1:"+p)
	dialRead(t, "[::1]:"+p)
	if err := Exclusive([]*Listener{pair}, nil); err != nil {
		t.Fatalf("a listener's own sockets counted as another process's: %v", err)
	}

	dual := &Listener{Name: "dual", Addrs: []string{":0"}, Workers: 1, NewHandler: func() Handler { return h }}
	stopDual := start(t, dual)
	defer func() { stopDual(); dual.Drain(t.Context(), 0, 0) }()
	dialRead(t, "127.0.0.1:"+port(dual.BoundAddr()))
	dialRead(t, "[::1]:"+port(dual.BoundAddr()))
}

// TestListenRefusesPlainHolder: an address another process listens on
// without SO_REUSEPORT is refused by the kernel, and the error names the
// listener and the address; the sockets bound before it are closed.
func TestListenRefusesPlainHolder(t *testing.T) {
	other := loopback.Hold(t, "tcp", "127.0.0.1:0", false)
	first := loopback.FreeAddr(t)
	l := &Listener{Name: "web", Addrs: []string{first, other.Addr().String()}, Workers: 2, Log: quietLog()}
	err := l.Listen(t.Context())
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("Listen = %v, want address already in use", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "listener web") || !strings.Contains(msg, other.Addr().String()) {
		t.Fatalf("error %q names neither the listener nor the address", msg)
	}
	// The first address was bound, then given up: it can be bound again
	// without SO_REUSEPORT.
	loopback.Hold(t, "tcp", first, false)
}

// TestExclusive: another process's SO_REUSEPORT socket on an address of a
// listener (or on a wildcard covering it) is refused, even though the kernel
// let the listener bind; a listener's own sockets, and those of the one a
// reload replaces, are not another process's; addresses that share only
// the port are fine.
func TestExclusive(t *testing.T) {
	other := loopback.Hold(t, "tcp4", "127.0.0.1:0", true)
	l := bound(t, "web", other.Addr().String())
	err := Exclusive([]*Listener{l}, nil)
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("Exclusive = %v, want address already in use", err)
	}
	want := "listener web: bind " + other.Addr().String() + ": address already in use: another process listens on " + other.Addr().String()
	if !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Exclusive = %q\nwant %q…", err, want)
	}

	// A reload rebinding an address wslb holds: the old sockets are its own.
	old := bound(t, "web", "127.0.0.1:0")
	rebound := bound(t, "web", old.BoundAddr().String())
	if err := Exclusive([]*Listener{rebound}, []*Listener{old}); err != nil {
		t.Fatalf("a rebind of wslb's own address refused: %v", err)
	}
	if err := Exclusive([]*Listener{rebound}, nil); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("sockets not named as wslb's own: Exclusive = %v, want address already in use", err)
	}

	// A wildcard held elsewhere covers every address of its port.
	wild := loopback.Hold(t, "tcp4", "0.0.0.0:0", true)
	covered := bound(t, "api", "127.0.0.1:"+port(wild.Addr()))
	if err := Exclusive([]*Listener{covered}, nil); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("under another process's 0.0.0.0: Exclusive = %v, want address already in use", err)
	}
	// Another address on the same port is not shared.
	next := loopback.Hold(t, "tcp4", "127.0.0.2:0", true)
	beside := bound(t, "api", "127.0.0.1:"+port(next.Addr()))
	if err := Exclusive([]*Listener{beside}, nil); err != nil {
		t.Fatalf("127.0.0.1 beside another process's 127.0.0.2: %v", err)
	}

	if !loopback.IPv6(t) {
		return
	}
	// [::] with IPV6_V6ONLY (nginx's default, and wslb's) leaves IPv4 alone;
	// a dual-stack one covers 0.0.0.0.
	v6only := loopback.Hold(t, "tcp6", "[::]:0", true)
	v4 := bound(t, "v4", "0.0.0.0:"+port(v6only.Addr()))
	if err := Exclusive([]*Listener{v4}, nil); err != nil {
		t.Fatalf("0.0.0.0 beside another process's IPv6-only [::]: %v", err)
	}
	dual := loopback.Hold(t, "tcp", "[::]:0", true)
	under := bound(t, "v4", "127.0.0.1:"+port(dual.Addr()))
	if err := Exclusive([]*Listener{under}, nil); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("under another process's dual-stack [::]: Exclusive = %v, want address already in use", err)
	}
}

func TestSocketOverlaps(t *testing.T) {
	s := func(addr string, v6, v6only bool) socket {
		return socket{addr: netip.MustParseAddrPort(addr), v6: v6, v6only: v6only}
	}
	tests := []struct {
		name string
		a, b socket
		want bool
	}{
		{"same", s("127.0.0.1:80", false, false), s("127.0.0.1:80", false, false), true},
		{"other port", s("127.0.0.1:80", false, false), s("127.0.0.1:81", false, false), false},
		{"other address", s("127.0.0.1:80", false, false), s("127.0.0.2:80", false, false), false},
		{"v4 wildcard", s("0.0.0.0:80", false, false), s("127.0.0.1:80", false, false), true},
		{"v6 wildcard", s("[::]:80", true, true), s("[::1]:80", true, true), true},
		{"v6only wildcard and v4", s("[::]:80", true, true), s("0.0.0.0:80", false, false), false},
		{"dual-stack and v4", s("[::]:80", true, false), s("127.0.0.1:80", false, false), true},
		{"v4 and dual-stack", s("127.0.0.1:80", false, false), s("[::]:80", true, false), true},
		{"v6 address and v4", s("[::1]:80", true, false), s("127.0.0.1:80", false, false), false},
		{"mapped v4 on a v6 socket", s("127.0.0.1:80", true, false), s("127.0.0.1:80", false, false), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.a.overlaps(tc.b); got != tc.want {
				t.Fatalf("overlaps = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestListenPortZeroAlone: port 0 gets a port nobody else has, so
// Exclusive never refuses it.
func TestListenPortZeroAlone(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for range 5 {
		l := &Listener{Name: "t", Addrs: []string{"127.0.0.1:0"}, Workers: 3, Log: quietLog()}
		if err := l.Listen(ctx); err != nil {
			t.Fatal(err)
		}
		err := Exclusive([]*Listener{l}, nil)
		l.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
}
