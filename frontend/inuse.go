package frontend

import (
	"fmt"
	"net/netip"
	"slices"
	"syscall"
)

// socket is one listening TCP socket as the kernel reports it.
type socket struct {
	inode   uint32         // what identifies it: st_ino of its fd
	addr    netip.AddrPort // bound address, unmapped
	v6      bool           // an AF_INET6 socket
	v6only  bool           // an AF_INET6 socket that takes no IPv4 conns
	queued  uint32         // conns in its accept queue, not yet accepted
	backlog uint32         // the accept queue's size
}

// overlaps reports whether one incoming conn could be meant for s and for o:
// the same port, and addresses of which one includes the other.
func (s socket) overlaps(o socket) bool {
	if s.addr.Port() != o.addr.Port() {
		return false
	}
	a, b := s.addr.Addr(), o.addr.Addr()
	if a.Is4() == b.Is4() {
		return a == b || a.IsUnspecified() || b.IsUnspecified()
	}
	// IPv4 and IPv6: only an IPv6 wildcard that also takes IPv4 has both.
	return s.dualStack() && b.Is4() || o.dualStack() && a.Is4()
}

// dualStack reports an IPv6 socket on :: that takes IPv4 conns too.
func (s socket) dualStack() bool { return s.v6 && !s.v6only && s.addr.Addr().IsUnspecified() }

// Exclusive makes sure that no other process listens where ls do.
//
// SO_REUSEPORT, which lets every worker of a listener, and a reload, bind an
// address wslb already holds, lets any other process of the same user join it
// too, and the kernel then splits new conns between the two in silence: a
// second wslb started by mistake, or one of an old deploy still running. A
// process listening without SO_REUSEPORT is refused by the kernel, in Listen;
// for the others, every listening socket of the network namespace is listed
// once the sockets of ls listen (so that, of two processes binding at once,
// at least the second sees the first), and one that overlaps an address of ls
// and is no socket of ls or own is an error that wraps syscall.EADDRINUSE and
// names the listener and the address. own is the other listeners of this
// process whose sockets are open: during a reload, the running ones. When the
// sockets cannot be listed, a warning is logged and nothing is refused.
func Exclusive(ls, own []*Listener) error {
	if len(ls) == 0 {
		return nil
	}
	all, err := listeningSockets()
	if err != nil {
		if log := ls[0].Log; log != nil {
			log.Warn("cannot list listening sockets: not checking that no other process shares wslb's addresses", "err", err)
		}
		return nil
	}
	mine := map[uint32]bool{}
	for _, l := range slices.Concat(ls, own) {
		for _, ino := range l.inodes {
			mine[ino] = true
		}
	}
	ours := map[uint32]socket{}
	var others []socket
	for _, s := range all {
		if mine[s.inode] {
			ours[s.inode] = s
		} else {
			others = append(others, s)
		}
	}
	for _, l := range ls {
		for i, ino := range l.inodes {
			s, listed := ours[ino]
			if !listed {
				continue
			}
			for _, o := range others {
				if s.overlaps(o) {
					return fmt.Errorf("listener %s: bind %s: %w: another process listens on %s too (with SO_REUSEPORT, both would get its conns)",
						l.Name, l.lns[i].Addr(), syscall.EADDRINUSE, o.addr)
				}
			}
		}
	}
	return nil
}
