package discovery

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/wslb/wslb/config"
)

// found is one address a name gave. weight and target are an SRV record's
// (a hostname's backends take the configured weight instead).
type found struct {
	addr   netip.AddrPort
	weight int
	target string // the SRV target it was resolved from; "" for A/AAAA names
}

// result is one lookup of one name.
type result struct {
	// found is the answer, possibly empty (NXDOMAIN, no records); nil
	// with err set when the lookup failed and the last answer must stay.
	found []found
	err   error
	// skipped are the SRV targets that resolved to nothing, and kept the
	// targets whose lookup failed, whose last addresses stay: each with why.
	skipped, kept []string
	// lookups and failed count the DNS lookups made, for
	// wslb_dns_lookups_total: an SRV name costs one plus one per target.
	lookups, failed int
}

// lookup looks n up once. prev is n's last good answer: an SRV target
// whose lookup fails keeps the addresses it had there.
func lookup(ctx context.Context, r *Resolver, n config.Name, prev []found) result {
	if !n.SRV {
		addrs, err := r.Addrs(ctx, n.Host)
		if err != nil {
			return result{err: err, lookups: 1, failed: 1}
		}
		res := result{found: []found{}, lookups: 1}
		for _, a := range addrs {
			res.found = append(res.found, found{addr: netip.AddrPortFrom(a, n.Port)})
		}
		return res
	}
	srvs, err := r.SRV(ctx, n.Host)
	if err != nil {
		return result{err: err, lookups: 1, failed: 1}
	}
	res := targets(ctx, r, srvs, prev)
	// Go shuffles SRV records by weight (RFC 2782's selection order); the
	// backends must not look changed on every lookup because of it.
	slices.SortStableFunc(res.found, func(a, b found) int { return a.addr.Compare(b.addr) })
	return res
}

// targets resolves the targets of SRV records, all at once: each
// target:port is a backend with the record's weight.
func targets(ctx context.Context, r *Resolver, srvs []*net.SRV, prev []found) result {
	res := result{found: []found{}, lookups: 1}
	type answer struct {
		addrs []netip.Addr
		err   error
	}
	answers := make([]answer, len(srvs))
	var wg sync.WaitGroup
	for i, s := range srvs {
		if s.Target == "." { // RFC 2782: the service is decidedly not available here
			continue
		}
		wg.Go(func() {
			addrs, err := r.Addrs(ctx, s.Target)
			answers[i] = answer{addrs, err}
		})
	}
	wg.Wait()
	for i, s := range srvs {
		if s.Target == "." {
			continue
		}
		res.lookups++
		target := fmt.Sprintf("%s:%d", strings.TrimSuffix(s.Target, "."), s.Port)
		a := answers[i]
		switch {
		case a.err != nil:
			res.failed++
			res.kept = append(res.kept, fmt.Sprintf("%s (%v)", target, a.err))
			for _, f := range prev {
				if f.target == s.Target && f.addr.Port() == s.Port {
					res.found = append(res.found, f)
				}
			}
		case len(a.addrs) == 0:
			res.skipped = append(res.skipped, target)
		}
		for _, ip := range a.addrs {
			res.found = append(res.found, found{addr: netip.AddrPortFrom(ip, s.Port), weight: srvWeight(s.Weight), target: s.Target})
		}
	}
	return res
}

// srvWeight maps an SRV weight (0 to 65535) onto a backend weight (1 to
// 1000): 0, "no preference" in RFC 2782, is 1, and weights past the pool's
// maximum are capped.
func srvWeight(w uint16) int { return min(max(int(w), 1), 1000) }
