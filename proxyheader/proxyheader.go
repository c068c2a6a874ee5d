// Package proxyheader reads the PROXY protocol header a load balancer in
// front may send, and writes one for a backend. l4 and l7 both use it; the
// parsing itself is github.com/pires/go-proxyproto.
package proxyheader

import (
	"bufio"
	"bytes"
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

// Addrs are the two ends of a client's conn: the client (Source) and the
// address it connected to (Dest), as the conn itself or a PROXY header
// names them. They are what an outgoing PROXY header carries.
type Addrs struct {
	Source, Dest netip.AddrPort
}

// ConnAddrs returns the ends of c as Addrs: its peer and its local address.
func ConnAddrs(c net.Conn) Addrs {
	return Addrs{Source: AddrPort(c.RemoteAddr()), Dest: AddrPort(c.LocalAddr())}
}

// Read reads a PROXY header (v1 or v2) from br, which reads c, within
// timeout, however many segments it arrives in. It returns the addresses
// the header names, or those of c for a header that names none (a LOCAL or
// UNKNOWN one: the front balancer's own health check). Bytes after the
// header stay in br.
func Read(c net.Conn, br *bufio.Reader, timeout time.Duration) (Addrs, error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	a, err := Parse(br)
	if err != nil {
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			return Addrs{}, ErrTimeout
		}
		return Addrs{}, err
	}
	if !a.Source.IsValid() || !a.Dest.IsValid() {
		return ConnAddrs(c), nil
	}
	return a, nil
}

// Parse reads one PROXY header from br, waiting for as many reads as it
// takes, and returns the addresses it names (both invalid when it names
// none). It sets no deadline: Read does, and a test or a fuzz target can
// drive it from any reader. br's buffer must hold a v1 line (107 bytes).
func Parse(br *bufio.Reader) (Addrs, error) {
	if err := bufferV1(br); err != nil {
		return Addrs{}, fmt.Errorf("read PROXY header: %w", err)
	}
	h, err := proxyproto.Read(br)
	if err != nil {
		return Addrs{}, fmt.Errorf("read PROXY header: %w", err)
	}
	if h.Command.IsLocal() {
		return Addrs{}, nil
	}
	return Addrs{Source: AddrPort(h.SourceAddr), Dest: AddrPort(h.DestinationAddr)}, nil
}

// v1Max is the longest v1 line, CRLF included (the spec's worst case).
const v1Max = 107

// bufferV1 waits, when br starts with a v1 header, until br holds its whole
// line, or v1Max bytes without one. go-proxyproto reads a v1 line only from
// what is buffered, and refuses one that came in more than one read; the
// spec asks a receiver to be tolerant of that, and the deadline bounds the
// wait. A v2 header needs nothing: go-proxyproto reads it to its length.
func bufferV1(br *bufio.Reader) error {
	sig, err := br.Peek(len(proxyproto.SIGV1))
	if err != nil || !bytes.Equal(sig, proxyproto.SIGV1) {
		// Not v1, or not even 5 bytes: go-proxyproto says which.
		return nil
	}
	// Each round buffers at least one byte more: at most v1Max rounds.
	for {
		buf, _ := br.Peek(br.Buffered())
		if len(buf) >= v1Max || bytes.IndexByte(buf, '\n') >= 0 {
			return nil
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return nil // br is too small: go-proxyproto refuses the line
			}
			return err
		}
	}
}

// Write sends a PROXY header of version "v1" or "v2" naming a.Source as the
// source and a.Dest as the destination.
func Write(w io.Writer, version string, a Addrs) error {
	v := byte(1)
	if version == "v2" {
		v = 2
	}
	src := net.TCPAddrFromAddrPort(a.Source)
	dst := net.TCPAddrFromAddrPort(a.Dest)
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
