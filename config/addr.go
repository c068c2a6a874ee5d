package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/hashicorp/go-sockaddr/template"
)

// The functions here turn the addresses written in config.yaml into the ones
// wslb uses. Their errors are problem messages, so they say what is allowed.

// expand resolves a go-sockaddr template such as `{{ GetPrivateIP }}:8080`
// against this host's interfaces. Only strings containing "{{" are templates,
// so a plain address never depends on the interfaces being readable.
func expand(s string) (out string, templated bool, err error) {
	if !strings.Contains(s, "{{") {
		return s, false, nil
	}
	out, err = template.Parse(s)
	if err != nil {
		return "", true, fmt.Errorf("bad go-sockaddr template: %v", err)
	}
	out = strings.TrimSpace(out)
	if strings.ContainsAny(out, " \t\n") {
		// GetAllInterfaces and friends return lists; a listener or backend is one address.
		return "", true, fmt.Errorf("template resolved to several addresses (%s): narrow it to one, e.g. with limit 1", out)
	}
	return out, true, nil
}

// listenAddr resolves and checks a listen address: IP:port, or :port for every
// interface. Port 0 is allowed (the kernel picks one). Hostnames are refused so
// that what is bound never depends on DNS at start-up.
func listenAddr(s string) (string, error) {
	out, templated, err := expand(s)
	if err != nil {
		return "", err
	}
	host, port, err := net.SplitHostPort(out)
	if err != nil {
		return "", fmt.Errorf("invalid address %q: use ip:port, :port or a go-sockaddr template", out)
	}
	if host == "" && templated {
		return "", errResolvedToNothing
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return "", errHostname(host)
		}
	}
	if _, err := parsePort(port, 0); err != nil {
		return "", err
	}
	return out, nil
}

// backendAddr resolves and checks a backend address: an IP or a hostname,
// and a port from 1 to 65535. For an IP, ap is set; for a hostname, host is,
// ap carries only the port (ap.IsValid is false), and the pool's discovery
// looks host up. An IPv4-mapped IPv6 address is
// unmapped so that the same backend written two ways is one backend (and one
// metrics label).
func backendAddr(s string) (ap netip.AddrPort, host string, err error) {
	out, templated, err := expand(s)
	if err != nil {
		return netip.AddrPort{}, "", err
	}
	h, port, err := net.SplitHostPort(out)
	if err != nil {
		return netip.AddrPort{}, "", fmt.Errorf("invalid address %q: use ip:port, host:port or a go-sockaddr template", out)
	}
	if h == "" {
		if templated {
			return netip.AddrPort{}, "", errResolvedToNothing
		}
		return netip.AddrPort{}, "", fmt.Errorf("invalid address %q: the host is missing, use ip:port or host:port", out)
	}
	n, err := parsePort(port, 1)
	if err != nil {
		return netip.AddrPort{}, "", err
	}
	ip, err := netip.ParseAddr(h)
	if err != nil {
		if err := checkHostname(h); err != nil {
			return netip.AddrPort{}, "", err
		}
		return netip.AddrPortFrom(netip.Addr{}, n), h, nil
	}
	return netip.AddrPortFrom(ip.Unmap(), n), "", nil
}

// checkHostname accepts a DNS name: dot-separated labels of letters, digits,
// '-' and '_' (SRV names start with _service._proto), at most 63 bytes each
// and 253 in all, with an optional final dot. A name whose last label is all
// digits reads as a mistyped IPv4 address, not a name.
func checkHostname(h string) error {
	name := strings.TrimSuffix(h, ".")
	if name == "" || len(name) > 253 {
		return fmt.Errorf("invalid host %q: use an IP address or a DNS name such as chat-1.internal", h)
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || strings.Trim(l, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" {
			return fmt.Errorf("invalid host %q: use an IP address or a DNS name such as chat-1.internal (letters, digits, '-', '_' and dots)", h)
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return fmt.Errorf("invalid host %q: not an IP address, and a DNS name does not end in a number", h)
	}
	return nil
}

// errResolvedToNothing is what a template whose filters matched no interface
// gives: go-sockaddr's attr yields "" rather than an error, which would
// otherwise turn "{{ ... }}:8080" into ":8080", every interface.
var errResolvedToNothing = errors.New("template resolved to no address: check its filters against this host's interfaces")

func errHostname(host string) error {
	return fmt.Errorf("host %q must be an IP address or a go-sockaddr template; hostnames are not resolved", host)
}

// parsePort accepts a decimal port from min to 65535; service names are refused.
func parsePort(s string, min uint16) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || uint16(n) < min {
		return 0, fmt.Errorf("invalid port %q: use a number from %d to 65535", s, min)
	}
	return uint16(n), nil
}

// addrKey spells a resolved listen address one way, so that 127.0.0.1:080
// and 127.0.0.1:80, or [::1]:80 and [0::1]:80, are seen as the same socket.
func addrKey(s string) string {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return s
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return s
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(ip, uint16(n)).String()
	}
	return ":" + strconv.FormatUint(n, 10)
}
