package config

import (
	"net"
	"net/url"
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
			case o.block.Key() != a.Key():
				v.add(item(key(key(key(item("listeners", i), "tls"), "acme"), "domains"), j),
					"%s is also in listeners[%d].tls.acme, with other settings: give both listeners the same acme block (they then share its certificates), or the domain to one of them", d, o.listener)
			}
		}
	}
}

// ACMEKey identifies an acme block: listeners whose blocks have equal keys
// share one manager (one account, one order per domain, one renewal).
type ACMEKey struct{ email, domains, directory, ca, cache string }

// Key is a's ACMEKey.
func (a *ACME) Key() ACMEKey {
	return ACMEKey{a.Email, strings.Join(a.Domains, "\n"), a.Directory, a.CA, a.Cache}
}

func (v *checker) acme(a *ACME, p string) {
	if len(a.Domains) == 0 {
		v.add(key(p, "domains"), "acme needs the domains to obtain certificates for")
	}
	for i, d := range a.Domains {
		if !validDomain(d) {
			v.add(item(key(p, "domains"), i), "invalid domain %q: use a DNS name such as chat.example.com (no wildcards: they need a DNS-01 challenge, which wslb does not answer)", d)
		}
	}
	if u, err := url.Parse(a.Directory); err != nil || u.Scheme != "https" || u.Host == "" {
		v.add(key(p, "directory"), "must be the https URL of an ACME directory, got %q", a.Directory)
	}
	if a.Cache == "" {
		v.add(key(p, "cache"), "acme needs a cache folder for its account key and certificates")
	}
}

// validDomain reports whether d is a DNS name ACME can issue for: labels of
// letters, digits and hyphens, at least two of them, no IP address.
func validDomain(d string) bool {
	if len(d) > 253 || net.ParseIP(d) != nil {
		return false
	}
	labels := strings.Split(strings.TrimSuffix(d, "."), ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
