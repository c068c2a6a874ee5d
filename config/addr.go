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

// backendAddr resolves and checks a backend address: an IP and a port from 1 to
// 65535. An IPv4-mapped IPv6 address is unmapped so that the same backend
// written two ways is one backend (and one metrics label).
func backendAddr(s string) (netip.AddrPort, error) {
	out, templated, err := expand(s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	host, port, err := net.SplitHostPort(out)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("invalid address %q: use ip:port or a go-sockaddr template", out)
	}
	if host == "" {
		if templated {
			return netip.AddrPort{}, errResolvedToNothing
		}
		return netip.AddrPort{}, fmt.Errorf("invalid address %q: the host is missing, use ip:port", out)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, errHostname(host)
	}
	n, err := parsePort(port, 1)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(ip.Unmap(), n), nil
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
