// Package proxyheader reads the PROXY protocol header a load balancer in
// front may send, and writes one for a backend. l4 and l7 both use it; the
// parsing itself is github.com/pires/go-proxyproto.
package proxyheader

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/pires/go-proxyproto"
)

// ErrTimeout is returned when no complete header arrived in time.
var ErrTimeout = errors.New("no PROXY header within the handshake timeout")

// Read reads a PROXY header (v1 or v2) from br, which reads c, within
// timeout. It returns the client address the header names, or an invalid
// AddrPort for a LOCAL header (the front balancer's own health check). Bytes
// after the header stay in br.
func Read(c net.Conn, br *bufio.Reader, timeout time.Duration) (netip.AddrPort, error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	h, err := proxyproto.Read(br)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return netip.AddrPort{}, ErrTimeout
		}
		return netip.AddrPort{}, fmt.Errorf("read PROXY header: %w", err)
	}
	if h.Command.IsLocal() {
		return netip.AddrPort{}, nil
	}
	return AddrPort(h.SourceAddr), nil
}

// Write sends a PROXY header of version "v1" or "v2" naming client as the
// source and local (the listener's address) as the destination.
func Write(w io.Writer, version string, client netip.AddrPort, local net.Addr) error {
	v := byte(1)
	if version == "v2" {
		v = 2
	}
	src := net.TCPAddrFromAddrPort(client)
	dst := net.TCPAddrFromAddrPort(AddrPort(local))
	if _, err := proxyproto.HeaderProxyFromAddrs(v, src, dst).WriteTo(w); err != nil {
		return fmt.Errorf("send PROXY header: %w", err)
	}
	return nil
}

// AddrPort returns a's IP and port with IPv4-in-IPv6 unmapped, or the zero
// value when a is not a TCP address.
func AddrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}
