// Package discovery turns a pool's DNS names (backend addresses written as
// host:port, and its SRV and A/AAAA discovery entries) into backends. It
// looks them up with the standard library's resolver at start and every
// resolver.interval, keeps each name's last good answer through failed
// lookups, and holds an address that vanished for resolver.hold before its
// backend goes.
//
// Read resolver.go (one lookup), lookup.go (what one name gives), set.go
// (what a pool's names give together, and the hold), then watcher.go (the
// loop) and check.go (wslb -check's warnings).
package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/wslb/wslb/config"
)

// Resolver looks names up on the configured DNS servers, or with the
// system's configuration (/etc/resolv.conf, /etc/hosts) when there are none.
// It is safe for concurrent use.
type Resolver struct {
	timeout time.Duration
	// One per server, asked in turn; one aimed at the system's servers
	// when none are configured.
	rs []*net.Resolver
}

// NewResolver returns the resolver c describes (a validated resolver block).
func NewResolver(c config.Resolver) *Resolver {
	r := &Resolver{timeout: c.Timeout}
	if len(c.Servers) == 0 {
		r.rs = []*net.Resolver{{PreferGo: true}}
		return r
	}
	for _, server := range c.Servers {
		var d net.Dialer
		r.rs = append(r.rs, &net.Resolver{
			PreferGo: true,
			// The Go resolver still reads /etc/resolv.conf for its options
			// (search, ndots, attempts); only where it sends is replaced.
			Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, server)
			},
		})
	}
	return r
}

// Addrs returns host's A and AAAA addresses, sorted, IPv4-mapped ones
// unmapped. A name that does not exist (NXDOMAIN) or has no such records is
// an answer: no addresses and no error. An error is a failed lookup
// (timeout, SERVFAIL, refused, network error), which says nothing about the
// name.
func (r *Resolver) Addrs(ctx context.Context, host string) ([]netip.Addr, error) {
	var out []netip.Addr
	err := r.ask(ctx, func(ctx context.Context, res *net.Resolver) error {
		addrs, err := res.LookupNetIP(ctx, "ip", host)
		out = out[:0]
		for _, a := range addrs {
			out = append(out, a.Unmap())
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out), nil
}

// SRV returns the SRV records of name, looked up as written
// (_service._proto.domain). Not found is an answer, as for Addrs.
func (r *Resolver) SRV(ctx context.Context, name string) ([]*net.SRV, error) {
	var out []*net.SRV
	err := r.ask(ctx, func(ctx context.Context, res *net.Resolver) error {
		var err error
		_, out, err = res.LookupSRV(ctx, "", "", name)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ask runs one lookup within the timeout, asking each server in turn until
// one answers; each gets an equal share of the time left, so a server that
// times out leaves time for the next. "No such name" is an answer, so it
// ends the turn and is returned as no error with no records.
func (r *Resolver) ask(ctx context.Context, lookup func(context.Context, *net.Resolver) error) error {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	var errs []error
	for i, res := range r.rs {
		share := time.Until(deadline) / time.Duration(len(r.rs)-i)
		sctx, scancel := context.WithTimeout(ctx, share)
		err := lookup(sctx, res)
		scancel()
		if err == nil || notFound(err) {
			return nil
		}
		if len(r.rs) > 1 {
			err = fmt.Errorf("server %d of %d: %w", i+1, len(r.rs), err)
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return errors.Join(errs...)
}

// notFound reports whether err says the name does not exist or has no
// records of the type asked for: an answer, unlike a timeout or SERVFAIL.
func notFound(err error) bool {
	de, ok := errors.AsType[*net.DNSError](err)
	return ok && de.IsNotFound
}
