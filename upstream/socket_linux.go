//go:build linux

package upstream

import (
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/wslb/wslb/poller"
	"github.com/wslb/wslb/pool"
)

// StartDial begins a non-blocking TCP connect to b for an event loop that
// waits for it itself (EPOLLOUT, then SO_ERROR; see DialDone): a socket set
// up as Dial's net.Dialer sets up its own (close-on-exec, TCP_NODELAY,
// SO_KEEPALIVE with the system's timers), without the netpoller's
// registration or the address lookups after the connect. The caller owns
// the descriptor. It reports ok false, having done nothing, when b's
// address is not a literal IP, or when b speaks TLS or a PROXY header is
// due: those dial through Dial.
func (d *Dialer) StartDial(b *pool.Backend) (fd int, ok bool, err error) {
	ap := b.Addr()
	if !ap.IsValid() || b.TLS() != nil || d.ProxyProtocol != "" {
		return -1, false, nil
	}
	fd, err = connectNonblock(ap)
	if err != nil {
		return -1, true, fmt.Errorf("dial %s: %w", b, err)
	}
	return fd, true, nil
}

func connectNonblock(ap netip.AddrPort) (int, error) {
	// Raw calls (poller): a connect to a local backend runs the whole TCP
	// handshake before it returns.
	a := ap.Addr().Unmap()
	family, zone := unix.AF_INET, uint32(0)
	if !a.Is4() {
		family, zone = unix.AF_INET6, zoneID(a.Zone())
	}
	fd, err := poller.Socket(family)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	// What net.Dialer sets on every TCP conn, with frontend.KeepAlive's
	// system timers.
	if err = poller.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err == nil {
		err = poller.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	}
	if err != nil {
		poller.Close(fd)
		return -1, fmt.Errorf("setsockopt: %w", err)
	}
	err = poller.Connect(fd, a.AsSlice(), int(ap.Port()), zone)
	if err != nil && err != unix.EINPROGRESS {
		poller.Close(fd)
		return -1, fmt.Errorf("connect: %w", err)
	}
	return fd, nil
}

func zoneID(zone string) uint32 {
	if zone == "" {
		return 0
	}
	if ifi, err := net.InterfaceByName(zone); err == nil {
		return uint32(ifi.Index)
	}
	return 0
}

// DialDone reads the outcome of a non-blocking connect on fd once the loop
// saw it writable (or in error): nil when it connected. errored says epoll
// reported EPOLLERR or EPOLLHUP with it; without either, writable means
// connected, and SO_ERROR is not asked (a system call per dial).
func DialDone(b *pool.Backend, fd int, errored bool) error {
	if !errored {
		return nil
	}
	n, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err == nil && n != 0 {
		err = unix.Errno(n)
	}
	if err != nil {
		return fmt.Errorf("dial %s: connect: %w", b, err)
	}
	return nil
}
