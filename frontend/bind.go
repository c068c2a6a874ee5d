package frontend

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// The sockets of a listener: one per worker and address, SO_REUSEPORT, of
// the address's family; Exclusive (inuse.go) checks no other process shares
// them.

// Listen binds every worker's socket on every address. For each address it
// binds the first socket, then the others to the port the first one got, so
// port 0 works with many workers.
func (l *Listener) Listen(ctx context.Context) error {
	l.workers = l.Workers
	if l.workers <= 0 {
		l.workers = runtime.GOMAXPROCS(0)
	}
	// SO_KEEPALIVE is set on the listening socket, which every accepted
	// socket inherits on Linux: Go would set it on each conn, a system
	// call per accept. KeepAlive -1 tells Go not to.
	lc := net.ListenConfig{Control: listenControl, KeepAlive: -1}
	for _, addr := range l.Addrs {
		network := family(addr)
		for i := range l.workers {
			ln, err := lc.Listen(ctx, network, addr)
			if err == nil {
				ln, err = raw(ln)
			}
			if err == nil {
				err = l.add(ln)
			}
			if err != nil {
				l.closeListeners()
				return fmt.Errorf("listener %s: bind %s (worker %d): %w", l.Name, addr, i, err)
			}
			if i == 0 {
				host, _, _ := net.SplitHostPort(addr)
				_, port, _ := net.SplitHostPort(ln.Addr().String())
				addr = net.JoinHostPort(host, port)
			}
		}
	}
	l.conns = make(map[*Hold]struct{})
	l.idle = make(chan struct{}, 1)
	l.maxConns.Store(int64(l.MaxConns))
	l.pace = newBucket(l.MaxAcceptRate, l.Clock)
	return nil
}

// add keeps ln, a bound socket, with its inode. ln is closed on failure.
func (l *Listener) add(ln net.Listener) error {
	var ino uint32
	err := controlFD(ln, func(fd int) error {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return fmt.Errorf("fstat: %w", err)
		}
		ino = uint32(st.Ino) // sock_diag reports 32 bits
		return nil
	})
	if err != nil {
		ln.Close()
		return err
	}
	l.lns, l.inodes = append(l.lns, ln), append(l.inodes, ino)
	l.FDs.Add(1)
	return nil
}

// controlFD runs f on the socket of ln.
func controlFD(ln net.Listener, f func(fd int) error) error {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return fmt.Errorf("%T has no file descriptor", ln)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// family is the network to bind addr on: an IP address takes only conns of
// its family (so ["0.0.0.0:80", "[::]:80"] is two sockets that share
// nothing, as in nginx, where [::] is ipv6only by default); a host left out
// (":80") takes both.
func family(addr string) string {
	host, _, _ := net.SplitHostPort(addr)
	ip, err := netip.ParseAddr(host)
	switch {
	case err != nil:
		return "tcp"
	case ip.Is4():
		return "tcp4"
	case ip.Is4In6():
		return "tcp" // Go binds it as IPv4
	}
	return "tcp6"
}

// BoundAddr returns the bound address of the first address, valid after
// Listen.
func (l *Listener) BoundAddr() net.Addr { return l.lns[0].Addr() }

// BoundAddrs returns the bound address of each address, in Addrs order,
// valid after Listen.
func (l *Listener) BoundAddrs() []net.Addr {
	out := make([]net.Addr, 0, len(l.Addrs))
	for i := 0; i < len(l.lns); i += l.workers {
		out = append(out, l.lns[i].Addr())
	}
	return out
}

// KeepAlive is the TCP keep-alive of client and backend conns: on, with the
// kernel's timings (net.ipv4.tcp_keepalive_*), as HAProxy's `option tcpka`.
// Go's own default (a probe every 15 s) is one setsockopt per setting per
// conn, and steady probe traffic across tens of thousands of idle tunnels.
func KeepAlive() net.KeepAliveConfig {
	return net.KeepAliveConfig{Enable: true, Idle: -1, Interval: -1, Count: -1}
}

// listenControl sets a listening socket's options: SO_REUSEPORT
// (reusePort) and SO_KEEPALIVE, with the kernel's timings (KeepAlive), for
// the conns it accepts.
func listenControl(network, address string, c syscall.RawConn) error {
	if err := reusePort(network, address, c); err != nil {
		return err
	}
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// reusePort sets SO_REUSEPORT so each worker can have its own socket on the
// same port and the kernel balances new conns between them.
func reusePort(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
