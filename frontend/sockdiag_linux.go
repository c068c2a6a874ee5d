package frontend

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Constants of linux/inet_diag.h and linux/sock_diag.h that x/sys/unix lacks.
const (
	tcpListen       = 10 // TCP_LISTEN, a socket state
	diagReqLen      = 56 // struct inet_diag_req_v2
	diagMsgLen      = 72 // struct inet_diag_msg
	diagAttrV6Only  = 11 // INET_DIAG_SKV6ONLY: sent for every listening IPv6 socket
	diagRecvBufSize = 64 << 10
)

// listeningSockets asks the kernel (NETLINK_SOCK_DIAG, what ss(8) uses) for
// every listening TCP socket of this network namespace, whoever owns it.
// Only listening sockets are dumped, so the answer stays small however many
// conns the host carries.
func listeningSockets() ([]socket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	var out []socket
	for seq, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if out, err = dumpListening(fd, family, uint32(seq+1), out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// dumpListening sends one dump request for family's listening sockets and
// appends what the kernel answers to out.
func dumpListening(fd int, family uint8, seq uint32, out []socket) ([]socket, error) {
	ne := binary.NativeEndian
	req := make([]byte, unix.NLMSG_HDRLEN+diagReqLen)
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], seq)
	r := req[unix.NLMSG_HDRLEN:]
	r[0], r[1] = family, unix.IPPROTO_TCP
	ne.PutUint32(r[4:], 1<<tcpListen) // idiag_states; the socket id stays zero: no filter
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag request: %w", err)
	}
	buf := make([]byte, diagRecvBufSize)
	// A dump ends with NLMSG_DONE; the bound only guards against a kernel
	// that never sends it.
	for range 1 << 16 {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("sock_diag answer: %w", err)
		}
		for b := buf[:n]; len(b) >= unix.NLMSG_HDRLEN; {
			size := int(ne.Uint32(b[0:]))
			if size < unix.NLMSG_HDRLEN || size > len(b) {
				return nil, errors.New("sock_diag answer: malformed message")
			}
			typ, body := ne.Uint16(b[4:]), b[unix.NLMSG_HDRLEN:size]
			b = b[min(len(b), (size+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1)):]
			switch typ {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				if len(body) >= 4 {
					if errno := int32(ne.Uint32(body)); errno != 0 {
						return nil, fmt.Errorf("sock_diag: %w", unix.Errno(-errno))
					}
				}
			case unix.SOCK_DIAG_BY_FAMILY:
				if s, ok := parseDiagMsg(body); ok {
					out = append(out, s)
				}
			}
		}
	}
	return nil, errors.New("sock_diag answer: no end of dump")
}

// parseDiagMsg reads a struct inet_diag_msg and its attributes.
func parseDiagMsg(b []byte) (socket, bool) {
	if len(b) < diagMsgLen {
		return socket{}, false
	}
	port := binary.BigEndian.Uint16(b[4:6]) // idiag_sport, network order
	var addr netip.Addr
	switch b[0] {
	case unix.AF_INET:
		addr = netip.AddrFrom4([4]byte(b[8:12]))
	case unix.AF_INET6:
		addr = netip.AddrFrom16([16]byte(b[8:24]))
	default:
		return socket{}, false
	}
	// For a listening socket, idiag_rqueue is the accept queue's length and
	// idiag_wqueue its size (the backlog, capped by somaxconn).
	s := socket{inode: binary.NativeEndian.Uint32(b[68:72]), v6: b[0] == unix.AF_INET6,
		addr: netip.AddrPortFrom(addr.Unmap(), port), queued: binary.NativeEndian.Uint32(b[56:60]),
		backlog: binary.NativeEndian.Uint32(b[60:64])}
	for a := b[diagMsgLen:]; len(a) >= 4; {
		size, typ := int(binary.NativeEndian.Uint16(a[0:])), binary.NativeEndian.Uint16(a[2:])
		if size < 4 || size > len(a) {
			break
		}
		if typ == diagAttrV6Only && size > 4 {
			s.v6only = a[4] != 0
		}
		a = a[min(len(a), (size+3)&^3):]
	}
	return s, true
}
