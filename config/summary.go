package config

import "fmt"

// Summary is the line `wslb -check` prints for a valid file, such as
// "config.yaml: ok: 2 listeners (1 l4, 1 l7), 1 pool, 3 backends", with
// ", 2 DNS names looked up" when backends come from names.
func (c *Config) Summary() string {
	var l4, l7, backends, names int
	for _, l := range c.Listeners {
		if l.Mode == ModeL4 {
			l4++
		} else {
			l7++
		}
	}
	for _, p := range c.Pools {
		backends += len(p.Backends)
		names += len(p.Names)
	}
	s := fmt.Sprintf("%s: ok: %s (%d l4, %d l7), %s, %s", c.File,
		count(len(c.Listeners), "listener"), l4, l7, count(len(c.Pools), "pool"), count(backends, "backend"))
	if names > 0 {
		s += fmt.Sprintf(", %s looked up", count(names, "DNS name"))
	}
	return s
}

// count writes "1 pool" or "2 pools".
func count(n int, noun string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
