package config

import (
	"fmt"
	"math"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// validate checks a decoded, defaulted config, resolves its addresses (filling
// Listen, Admin.Listen, Backend.Addr and HTTP.TrustedPrefixes) and returns every
// problem found.
func validate(c *Config, idx index, withFiles bool) Problems {
	v := &checker{idx: idx}
	nonNegative(v, "workers", c.Workers)
	nonNegative(v, "shutdown.drain_timeout", c.Shutdown.DrainTimeout)
	nonNegative(v, "shutdown.close_spread", c.Shutdown.CloseSpread)
	v.admin(&c.Admin, withFiles, filepath.Dir(c.File))
	v.resolver(c.Resolver)

	pools := map[string]bool{}
	for _, p := range c.Pools {
		pools[p.Name] = true
	}
	if len(c.Listeners) == 0 {
		v.add("listeners", "no listeners: at least one is required")
	}
	names, addrs := v.unique("listener name"), v.unique("listen address")
	for i := range c.Listeners {
		p := item("listeners", i)
		names.check(key(p, "name"), c.Listeners[i].Name)
		v.listenAddrs(c.Listeners[i].Listen, key(p, "listen"), addrs)
		v.listener(&c.Listeners[i], p, pools)
		if withFiles {
			v.files(&c.Listeners[i], p, filepath.Dir(c.File))
		}
	}
	v.acmeDomains(c)
	names = v.unique("pool name")
	for i := range c.Pools {
		p := item("pools", i)
		names.check(key(p, "name"), c.Pools[i].Name)
		v.pool(&c.Pools[i], p)
		if t := c.Pools[i].TLS; t != nil {
			v.backendTLS(t, key(p, "tls"), withFiles, filepath.Dir(c.File))
		}
	}
	v.tlsPoolsOnL4(c)
	return v.probs
}

func (v *checker) listener(l *Listener, p string, pools map[string]bool) {
	if l.Name == "" {
		v.add(key(p, "name"), "name is required")
	}
	switch l.Mode {
	case ModeL4:
		if l.Pool == "" {
			v.add(key(p, "pool"), "an l4 listener needs a pool")
		}
		// An l4 listener never parses HTTP, so these would be silently ignored.
		for _, k := range []string{"tls", "http", "routes"} {
			if v.idx.isSet(key(p, k)) {
				v.add(key(p, k), "only valid on l7 listeners")
			}
		}
	case ModeL7:
		// Neither pool nor routes is fine: every request gets 404.
		if l.TLS != nil {
			v.tls(l.TLS, key(p, "tls"))
		}
		v.http(&l.HTTP, key(p, "http"))
		v.routes(l.Routes, key(p, "routes"), pools)
	case "":
		v.add(key(p, "mode"), "mode is required: l4 or l7")
	default:
		v.add(key(p, "mode"), "unknown mode %q: use l4 or l7", l.Mode)
	}
	v.poolRef(key(p, "pool"), l.Pool, pools)
	nonNegative(v, key(p, "max_connections"), l.MaxConnections)
	v.acceptRate(key(p, "max_accept_rate"), l.MaxAcceptRate)
	v.oneOf(key(p, "proxy_protocol"), l.ProxyProtocol, "", "v1", "v2")
	t := key(p, "timeouts")
	v.positive(key(t, "connect"), l.Timeouts.Connect)
	v.positive(key(t, "handshake"), l.Timeouts.Handshake)
	v.positive(key(t, "idle"), l.Timeouts.Idle)
	v.positive(key(t, "keepalive"), l.Timeouts.Keepalive)
	v.positive(key(t, "send"), l.Timeouts.Send)
	v.positive(key(t, "client_body"), l.Timeouts.ClientBody)
}

// acceptRate checks max_accept_rate: conns a second, a fraction allowed
// (0.5 is one every two seconds), 0 for unlimited.
func (v *checker) acceptRate(path string, r float64) {
	switch {
	case math.IsNaN(r) || math.IsInf(r, 0):
		v.add(path, "must be a number of new conns per second, got %v: use e.g. 1000, or 0 for unlimited", r)
	case r < 0:
		v.add(path, "must not be negative, got %v: use new conns per second (e.g. 1000, or 0.5 for one every 2 s), or 0 for unlimited", r)
	}
}

func (v *checker) tls(t *TLS, p string) {
	switch {
	case t.Cert != "" && t.Key == "":
		v.add(key(p, "key"), "cert needs its key file: set key too")
	case t.Cert == "" && t.Key != "":
		v.add(key(p, "cert"), "key needs its cert file: set cert too")
	case t.Cert == "" && len(t.Certificates) == 0 && t.ACME == nil:
		v.add(key(p, "cert"), "tls needs a certificate: set cert and key, a certificates list, or acme")
	}
	for i, c := range t.Certificates {
		q := item(key(p, "certificates"), i)
		if c.Cert == "" {
			v.add(key(q, "cert"), "each certificate needs a cert file")
		}
		if c.Key == "" {
			v.add(key(q, "key"), "each certificate needs a key file")
		}
	}
	v.oneOf(key(p, "min_version"), t.MinVersion, "1.2", "1.3")
	if t.ACME != nil {
		v.acme(t.ACME, key(p, "acme"))
	}
}

func (v *checker) http(h *HTTP, p string) {
	if h.MaxHeaderBytes < 1024 {
		v.add(key(p, "max_header_bytes"), "must be at least 1024, got %d", h.MaxHeaderBytes)
	}
	nonNegative(v, key(p, "max_body_bytes"), h.MaxBodyBytes)
	if h.MinBodyRate < 0 {
		v.add(key(p, "min_body_rate"), "must not be negative, got %d: use bytes per second, or 0 to turn the check off", h.MinBodyRate)
	}
	v.between(key(p, "https_port"), h.HTTPSPort, 1, 65535)
	switch h.RedirectCode {
	case 301, 302, 307, 308:
	default:
		v.add(key(p, "redirect_code"), "must be 301, 302, 307 or 308, got %d", h.RedirectCode)
	}
	v.requestHeaders(h, p)
	h.TrustedPrefixes = nil
	for i, s := range h.TrustedProxies {
		if pfx, ok := parseTrusted(s); ok {
			h.TrustedPrefixes = append(h.TrustedPrefixes, pfx)
		} else {
			v.add(item(key(p, "trusted_proxies"), i), "invalid trusted proxy %q: use a CIDR such as 10.0.0.0/8 or an IP address", s)
		}
	}
	for name, value := range h.ResponseHeaders {
		q := key(key(p, "response_headers"), name)
		if !isToken(name) {
			v.add(q, "invalid header name %q: use letters, digits and -", name)
		}
		if strings.ContainsAny(value, "\r\n\x00") {
			v.add(q, "header value must not contain CR, LF or NUL")
		}
	}
	for i, proto := range h.UpgradeProtocols {
		q := item(key(p, "upgrade_protocols"), i)
		switch {
		case proto == "":
			v.add(q, "empty upgrade protocol: use a token such as websocket")
		case strings.EqualFold(proto, "h2c"):
			// HTTP/2 over cleartext would bypass every l7 rule; wslb speaks HTTP/1.1 only.
			v.add(q, "h2c is never tunnelled: remove it")
		}
	}
}

// parseTrusted reads a trusted_proxies entry; a bare address is a single-host prefix.
func parseTrusted(s string) (netip.Prefix, bool) {
	if pfx, err := netip.ParsePrefix(s); err == nil {
		// Peers are compared unmapped, so ::ffff:10.0.0.0/104 must become 10.0.0.0/8.
		if a := pfx.Addr(); a.Is4In6() && pfx.Bits() >= 96 {
			pfx = netip.PrefixFrom(a.Unmap(), pfx.Bits()-96)
		}
		return pfx.Masked(), true
	}
	ip, err := netip.ParseAddr(s)
	if err != nil || ip.Zone() != "" {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap()
	return netip.PrefixFrom(ip, ip.BitLen()), true
}

func (v *checker) pool(pl *Pool, p string) {
	if pl.Name == "" {
		v.add(key(p, "name"), "name is required")
	}
	v.oneOf(key(p, "balance"), pl.Balance, BalanceLeastConn, BalanceRoundRobin, BalanceSourceHash)
	if len(pl.Backends) == 0 && len(pl.Discovery) == 0 {
		v.add(key(p, "backends"), "a pool needs at least one backend or a discovery entry")
	}
	v.backends(pl, p)
	v.discovery(pl, p)
	nonNegative(v, key(p, "idle_per_worker"), pl.IdlePerWorker)
	nonNegative(v, key(p, "max_connections_per_backend"), pl.MaxConnectionsPerBackend)
	nonNegative(v, key(p, "slow_start"), pl.SlowStart)
	nonNegative(v, key(p, "max_connection_age"), pl.MaxConnectionAge)
	if t := pl.Rebalance.Tolerance; !(t >= 0) || math.IsInf(t, 1) {
		v.add(key(p, "rebalance.tolerance"), "must be a number >= 0 (0.2 = act above 120%% of the share), got %v", t)
	}
	v.atLeastOne(key(p, "rebalance.rate"), pl.Rebalance.Rate)

	h, q := pl.Health, key(p, "health")
	v.oneOf(key(q, "check"), h.Check, CheckTCP, CheckHTTP, CheckWebSocket, CheckNone)
	if (h.Check == CheckHTTP || h.Check == CheckWebSocket) && !strings.HasPrefix(h.Path, "/") {
		v.add(key(q, "path"), "must start with /, got %q", h.Path)
	}
	v.between(key(q, "expect_status"), h.ExpectStatus, 100, 599)
	v.positive(key(q, "interval"), h.Interval)
	v.positive(key(q, "timeout"), h.Timeout)
	if h.Interval > 0 && h.Timeout >= h.Interval {
		// A check still running when the next is due would overlap it.
		v.add(key(q, "timeout"), "timeout %v must be shorter than interval %v", h.Timeout, h.Interval)
	}
	v.atLeastOne(key(q, "rise"), h.Rise)
	v.atLeastOne(key(q, "fall"), h.Fall)
	v.agent(h.Agent, key(q, "agent"))
	nonNegative(v, key(p, "passive.max_fails"), pl.Passive.MaxFails)
	v.positive(key(p, "passive.fail_timeout"), pl.Passive.FailTimeout)
}

// checker collects validation problems, each placed on the line of its key.
type checker struct {
	idx   index
	probs Problems
}

// add reports a problem at path, unless decoding already reported one there.
func (v *checker) add(path, format string, args ...any) {
	if v.idx.isBad(path) {
		return
	}
	v.probs = append(v.probs, Problem{Line: v.idx.line(path), Path: path, Msg: fmt.Sprintf(format, args...)})
}

// listenAddrs resolves the addresses of a listener's listen in place. A
// list's problems name the entry (listen[1]); one address keeps the key's
// own path. An address may appear once in the whole file: two sockets of
// one process on it would split its conns between them (SO_REUSEPORT). Port
// 0 is a new port each time, so it may repeat.
func (v *checker) listenAddrs(addrs Addrs, p string, seen uniq) {
	if len(addrs) == 0 {
		v.add(p, "listen is required: use ip:port, :port, a go-sockaddr template, or a list of them")
		return
	}
	_, list := v.idx[item(p, 0)]
	for i := range addrs {
		q := p
		if list {
			q = item(p, i)
		}
		if addrs[i] == "" {
			v.add(q, "empty address: use ip:port, :port or a go-sockaddr template")
			continue
		}
		if !v.listen(q, &addrs[i]) {
			continue
		}
		if k := addrKey(addrs[i]); !strings.HasSuffix(k, ":0") {
			seen.check(q, k)
		}
	}
}

func (v *checker) listen(path string, addr *string) bool {
	resolved, err := listenAddr(*addr)
	if err != nil {
		v.add(path, "%v", err)
		return false
	}
	*addr = resolved
	return true
}

func (v *checker) poolRef(path, name string, pools map[string]bool) {
	if name == "" || pools[name] {
		return
	}
	known := make([]string, 0, len(pools))
	for n := range pools {
		known = append(known, n)
	}
	slices.Sort(known)
	if len(known) == 0 {
		v.add(path, "no pool named %q: no pools are defined", name)
		return
	}
	v.add(path, "no pool named %q (pools: %s)", name, strings.Join(known, ", "))
}

func (v *checker) oneOf(path, value string, allowed ...string) {
	if slices.Contains(allowed, value) {
		return
	}
	quoted := make([]string, len(allowed))
	for i, a := range allowed {
		quoted[i] = a
		if a == "" {
			quoted[i] = `""`
		}
	}
	last := len(quoted) - 1
	v.add(path, "unknown value %q: use %s or %s", value, strings.Join(quoted[:last], ", "), quoted[last])
}

func (v *checker) positive(path string, d time.Duration) {
	if d <= 0 {
		v.add(path, "must be positive, got %v", d)
	}
}

func (v *checker) atLeastOne(path string, n int) {
	if n < 1 {
		v.add(path, "must be at least 1, got %d", n)
	}
}

func (v *checker) between(path string, n, lo, hi int) {
	if n < lo || n > hi {
		v.add(path, "must be from %d to %d, got %d", lo, hi, n)
	}
}

// nonNegative takes ints, int64s and durations alike (a method cannot be generic).
func nonNegative[T ~int | ~int64](v *checker, path string, n T) {
	if n < 0 {
		v.add(path, "must not be negative, got %v", n)
	}
}

// unique reports the second and later uses of a value, such as a listener name.
func (v *checker) unique(what string) uniq {
	return uniq{v: v, what: what, first: map[string]string{}}
}

type uniq struct {
	v     *checker
	what  string
	first map[string]string // value -> path of its first use
}

func (u uniq) check(path, value string) {
	if value == "" {
		return // reported as missing, where it matters
	}
	if first, dup := u.first[value]; dup {
		u.v.add(path, "duplicate %s %q (first on line %d): each must be unique", u.what, value, u.v.idx.line(first))
		return
	}
	u.first[value] = path
}

// isToken reports whether s is an HTTP token (RFC 9110 §5.6.2), the syntax of
// a header name.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
