package config

import (
	"net/netip"
	"strconv"
	"strings"
)

// The rules of backends by name: backend addresses (IPs or hostnames), the
// discovery entries, and the resolver block. Each name is recorded in its
// pool's Names with its path and line; Load never looks one up.

// backends resolves every backend address of pl; a hostname becomes one of
// pl.Names.
func (v *checker) backends(pl *Pool, p string) {
	pl.Names = nil
	addrs := v.unique("backend")
	for i := range pl.Backends {
		b, q := &pl.Backends[i], item(key(p, "backends"), i)
		v.between(key(q, "weight"), b.Weight, 1, MaxWeight)
		if b.Address == "" {
			v.add(key(q, "address"), "address is required: use ip:port, host:port or a go-sockaddr template")
			continue
		}
		ap, host, err := backendAddr(b.Address)
		switch {
		case err != nil:
			v.add(key(q, "address"), "%v", err)
		case host != "":
			addrs.check(key(q, "address"), strings.ToLower(strings.TrimSuffix(host, "."))+":"+strconv.Itoa(int(ap.Port())))
			a := key(q, "address")
			pl.Names = append(pl.Names, Name{Path: a, Line: v.idx.line(a), Host: host, Port: ap.Port(), Weight: b.Weight})
		default:
			b.Addr = ap
			addrs.check(key(q, "address"), ap.String())
		}
	}
}

// discovery checks pl's discovery entries, each of which becomes one of
// pl.Names.
func (v *checker) discovery(pl *Pool, p string) {
	names := v.unique("discovery entry")
	for i, d := range pl.Discovery {
		q := item(key(p, "discovery"), i)
		switch {
		case d.SRV != "" && d.Name != "":
			v.add(q, "an entry has either srv or name, not both: write two entries")
		case d.SRV != "":
			if v.idx.isSet(key(q, "port")) {
				v.add(key(q, "port"), "an srv entry takes each port from its SRV records: remove port")
			}
			v.discoveryName(pl, key(q, "srv"), Name{SRV: true, Host: d.SRV}, names, "_ws._tcp.chat.service.consul")
		case d.Name != "":
			switch {
			case !v.idx.isSet(key(q, "port")):
				v.add(q, "a name entry needs a port: every address it resolves to is a backend on that port")
			case d.Port < 1 || d.Port > 65535:
				v.add(key(q, "port"), "must be from 1 to 65535, got %d", d.Port)
			default:
				v.discoveryName(pl, key(q, "name"), Name{Host: d.Name, Port: uint16(d.Port)}, names, "chat.default.svc.cluster.local")
			}
		default:
			v.add(q, "an entry needs srv (an SRV name) or name and port (A/AAAA)")
		}
	}
}

// discoveryName checks the name of a discovery entry at path and adds it to
// pl.Names.
func (v *checker) discoveryName(pl *Pool, path string, n Name, names uniq, example string) {
	if err := checkHostname(n.Host); err != nil {
		v.add(path, "invalid name %q: use a DNS name such as %s", n.Host, example)
		return
	}
	names.check(path, strings.ToLower(strings.TrimSuffix(n.Host, "."))+":"+strconv.Itoa(int(n.Port)))
	n.Path, n.Line, n.Weight = path, v.idx.line(path), 1
	pl.Names = append(pl.Names, n)
}

// resolver checks the resolver block: servers are IP:port (a DNS server
// cannot itself be found by name).
func (v *checker) resolver(r Resolver) {
	for i, s := range r.Servers {
		if _, err := netip.ParseAddrPort(s); err != nil {
			v.add(item("resolver.servers", i), "invalid DNS server %q: use ip:port, such as 10.0.0.2:53 or [fd00::2]:53", s)
		}
	}
	v.positive("resolver.interval", r.Interval)
	v.positive("resolver.timeout", r.Timeout)
	v.positive("resolver.hold", r.Hold)
}
