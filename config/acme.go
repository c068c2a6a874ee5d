package config

import (
	"slices"
	"strings"
)

// acmeDomains reports a domain in the acme blocks of two listeners that
// differ: each block has a manager of its own (an account, a cache, a
// renewal), and two would order the same certificate and race to answer
// its challenges. Listeners with the same block share one manager.
func (v *checker) acmeDomains(c *Config) {
	type owner struct {
		listener int
		block    *ACME
	}
	seen := map[string]owner{}
	for i, l := range c.Listeners {
		if l.TLS == nil || l.TLS.ACME == nil {
			continue
		}
		a := l.TLS.ACME
		for j, d := range a.Domains {
			d = strings.ToLower(strings.TrimSuffix(d, "."))
			o, ok := seen[d]
			switch {
			case !ok:
				seen[d] = owner{i, a}
			case !sameACME(o.block, a):
				v.add(item(key(key(key(item("listeners", i), "tls"), "acme"), "domains"), j),
					"%s is also in listeners[%d].tls.acme, with other settings: give both listeners the same acme block (they then share its certificates), or the domain to one of them", d, o.listener)
			}
		}
	}
}

// sameACME reports whether two acme blocks are the same, and so are served
// by one manager.
func sameACME(a, b *ACME) bool {
	return a.Email == b.Email && a.Directory == b.Directory && a.CA == b.CA && a.Cache == b.Cache &&
		slices.Equal(a.Domains, b.Domains)
}
