package discovery

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/wslb/wslb/config"
)

// Check looks every name of cfg up once, as `wslb -check` does, and returns
// a warning for each that gives no backend now or fails, and for each SRV
// target that does not resolve, located like a problem (FILE:LINE: path:
// warning: MESSAGE). Warnings do not fail the check: a name that does not
// resolve is not fatal at start either.
func Check(ctx context.Context, cfg *config.Config) []config.Problem {
	r := NewResolver(cfg.Resolver)
	var names []config.Name
	for _, p := range cfg.Pools {
		names = append(names, p.Names...)
	}
	results := make([]result, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() { results[i] = lookup(ctx, r, n, nil) })
	}
	wg.Wait()
	var out []config.Problem
	for i, n := range names {
		warn := func(format string, args ...any) {
			out = append(out, config.Problem{File: cfg.File, Line: n.Line, Path: n.Path,
				Msg: "warning: " + fmt.Sprintf(format, args...)})
		}
		res := results[i]
		what := "A/AAAA"
		if n.SRV {
			what = "SRV"
		}
		switch {
		case res.err != nil:
			warn("lookup of %s failed: %v; wslb would start without its backends and keep looking it up", n.Host, res.err)
		case len(res.found) == 0 && len(res.skipped) == 0 && len(res.kept) == 0:
			warn("%s has no %s records (NXDOMAIN or an empty answer): it gives no backends until it has", n.Host, what)
		}
		if len(res.skipped) > 0 {
			warn("SRV targets of %s that do not resolve are skipped: %s", n.Host, strings.Join(res.skipped, ", "))
		}
		if len(res.kept) > 0 {
			warn("SRV target lookups of %s failed: %s", n.Host, strings.Join(res.kept, ", "))
		}
	}
	return out
}
