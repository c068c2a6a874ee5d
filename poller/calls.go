//go:build linux

package poller

import (
	"encoding/binary"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The calls below cannot block on the non-blocking sockets they are made
// on, but on a local peer some take tens of µs (a connect runs the whole
// TCP handshake before it returns, a close sends the FIN and frees the
// buffers, an accept4 builds the socket). Made through the scheduler, such
// a call leaves its P in a system call past sysmon's 20 µs tick, and sysmon
// hands the P to another thread (a wake-up and a context switch each way)
// and stays awake at that tick, a nanosleep and a context switch every
// 20 µs. As raw calls the scheduler never sees them. Errors are unix.Errno
// values; EINTR is retried (rawIO), but by Close.

// Close closes fd. EINTR is not retried: the descriptor is gone by then.
func Close(fd int) error {
	if _, _, e := unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0); e != 0 {
		return e
	}
	return nil
}

// Socket opens a non-blocking, close-on-exec TCP socket of family.
func Socket(family int) (int, error) {
	fd, err := rawIO(unix.SYS_SOCKET, uintptr(family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP, 0, 0, 0)
	if err != nil {
		return -1, err
	}
	return fd, nil
}

// SetsockoptInt sets an int option on fd.
func SetsockoptInt(fd, level, opt, value int) error {
	v := int32(value)
	_, err := rawIO(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&v)), 4, 0)
	return err
}

// Connect starts connecting fd to ap's address: nil or unix.EINPROGRESS
// when it goes on.
func Connect(fd int, ip net.IP, port int, zone uint32) error {
	var (
		raw4 unix.RawSockaddrInet4
		raw6 unix.RawSockaddrInet6
		ptr  unsafe.Pointer
		n    uintptr
	)
	if ip4 := ip.To4(); ip4 != nil {
		raw4.Family = unix.AF_INET
		copy(raw4.Addr[:], ip4)
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&raw4.Port))[:], uint16(port))
		ptr, n = unsafe.Pointer(&raw4), unsafe.Sizeof(raw4)
	} else {
		raw6.Family = unix.AF_INET6
		copy(raw6.Addr[:], ip.To16())
		raw6.Scope_id = zone
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&raw6.Port))[:], uint16(port))
		ptr, n = unsafe.Pointer(&raw6), unsafe.Sizeof(raw6)
	}
	_, err := rawIO(unix.SYS_CONNECT, uintptr(fd), uintptr(ptr), n, 0, 0, 0)
	return err
}

// Accept takes a conn from the listening socket fd, non-blocking and
// close-on-exec, with the peer's address.
func Accept(fd int) (int, *net.TCPAddr, error) {
	var (
		rsa unix.RawSockaddrAny
		l   uint32 = unix.SizeofSockaddrAny
	)
	nfd, err := rawIO(unix.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&l)), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if err != nil {
		return -1, nil, err
	}
	return nfd, tcpAddr(&rsa), nil
}

// Sockname returns the address fd is bound to.
func Sockname(fd int) (*net.TCPAddr, error) { return name(unix.SYS_GETSOCKNAME, fd) }

// Peername returns the address of fd's peer.
func Peername(fd int) (*net.TCPAddr, error) { return name(unix.SYS_GETPEERNAME, fd) }

func name(trap uintptr, fd int) (*net.TCPAddr, error) {
	var (
		rsa unix.RawSockaddrAny
		l   uint32 = unix.SizeofSockaddrAny
	)
	if _, err := rawIO(trap, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&l)), 0, 0, 0); err != nil {
		return nil, err
	}
	if a := tcpAddr(&rsa); a != nil {
		return a, nil
	}
	return nil, unix.EAFNOSUPPORT
}

// tcpAddr converts an IPv4 or IPv6 address the kernel filled in.
func tcpAddr(rsa *unix.RawSockaddrAny) *net.TCPAddr {
	switch rsa.Addr.Family {
	case unix.AF_INET:
		p := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&p.Port))[:])
		return &net.TCPAddr{IP: net.IP(append([]byte(nil), p.Addr[:]...)), Port: int(port)}
	case unix.AF_INET6:
		p := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&p.Port))[:])
		a := &net.TCPAddr{IP: net.IP(append([]byte(nil), p.Addr[:]...)), Port: int(port)}
		if p.Scope_id != 0 {
			if ifi, err := net.InterfaceByIndex(int(p.Scope_id)); err == nil {
				a.Zone = ifi.Name
			}
		}
		return a
	}
	return nil
}
