// Package upstream connects l4 and l7 conns to backends: it picks a backend
// of a pool and reserves it, takes a kept-alive conn to it or dials it within
// the listener's connect timeout, tries one other backend when a dial fails,
// tells the passive health checks, and sends the PROXY header. With only the
// descriptor reserve left it dials nothing (fdbudget): a local shortage is
// never a backend's failure.
//
// l4 and l7 differ only in what they do with the conn Connect returns; the
// reservation it carries is theirs to release, once (see Conn).
package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/wslb/wslb/fdbudget"
	"github.com/wslb/wslb/frontend"
	"github.com/wslb/wslb/metrics"
	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/proxyheader"
)

// The reason words of an Error, as wslb_errors_total counts them.
const (
	ReasonNoBackend = "no_backend" // nothing was eligible: l7 answers 503
	ReasonDial      = "dial"       // the dial and its one retry failed: l7 answers 502
	ReasonLimit     = "limit"      // out of descriptors: no dial attempted, l7 answers 503
)

// ErrNoDescriptors is why a dial was not attempted: only the reserve of the
// process's file descriptors is left (fdbudget).
var ErrNoDescriptors = errors.New("out of file descriptors: only the reserve is left")

// Error is why Connect returned no conn. Reason is its wslb_errors_total
// word, which l4 and l7 answer by (a close, a 503 or a 502).
type Error struct {
	Reason string
	Err    error
}

func (e *Error) Error() string { return e.Reason + ": " + e.Err.Error() }

func (e *Error) Unwrap() error { return e.Err }

// Reason returns the reason word of err if it is an *Error, else "error".
func Reason(err error) string {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Reason
	}
	return "error"
}

// Dialer connects the conns of one listener configuration. Set its fields
// once, when the configuration is applied; every worker may then use it.
type Dialer struct {
	// Listener names the listener in log lines.
	Listener string
	// Timeout bounds a dial (timeouts.connect); 0 is no bound.
	Timeout time.Duration
	// ProxyProtocol is the PROXY header version sent on every new conn ("",
	// "v1", "v2"). Such a conn belongs to its client: Connect never takes one
	// from an idle cache.
	ProxyProtocol string
	// Metrics receives wslb_backend_connect_seconds; Errs counts no_backend,
	// dial and limit.
	Metrics *metrics.Metrics
	Errs    metrics.Errors
	// OnDialError, when set, is told of every failed dial (the passive checks).
	OnDialError func(b *pool.Backend, err error)
	// Log gets a warning per failed dial.
	Log *slog.Logger
}

// Request is what one connect is for.
type Request struct {
	Pool *pool.Pool
	// ClientIP is what source_hash hashes: the peer, or the address a
	// trusted proxy or an accepted PROXY header named.
	ClientIP netip.Addr
	// Addrs are what an outgoing PROXY header carries: the client conn's
	// ends, or those of the PROXY header it came with.
	Addrs proxyheader.Addrs
	// Idle, when set, is asked first for a kept-alive conn to the picked
	// backend (l7's per-worker cache: pool.IdleCache.Get).
	Idle func(b *pool.Backend) (net.Conn, *bufio.Reader, bool)
	// Tried, when set, is a backend whose dial failed already (an event
	// loop's non-blocking connect, given up through Failed): Connect tries
	// one other, as it would have after its own failed dial.
	Tried *pool.Backend
}

// Conn is a conn to Backend, on which it holds one reservation: whoever
// holds the Conn releases Backend exactly once, when done with it (or hands
// that duty on, as a tunnel's handoff does).
type Conn struct {
	Backend *pool.Backend
	Net     net.Conn
	// Reader is what the idle cache kept with a reused conn (bytes may be
	// buffered in it), or nil.
	Reader *bufio.Reader
	// Reused is set when the conn came from the idle cache: it may have
	// died unnoticed since.
	Reused bool
}

// Connect reserves a backend of r.Pool and returns a conn to it: an idle one
// when r.Idle has one, else a new dial. A failed dial releases its backend,
// is counted and reported, and one other backend is tried, as nginx's
// proxy_next_upstream does for a refused connect: nothing has been sent, so
// trying again is safe. The error is an *Error.
//
// Out of descriptors (the backend's fdbudget has only its reserve left, or
// the dial failed with EMFILE, ENFILE, ENOBUFS or ENOMEM) is nobody's
// failure: no dial is attempted, no passive failure reported, no other
// backend tried, and the error's reason is limit (l7 answers 503). An idle
// conn needs no new descriptor and is still used.
func (d *Dialer) Connect(ctx context.Context, r Request) (Conn, error) {
	tried, tries := r.Tried, 2
	if tried != nil {
		tries = 1
	}
	for range tries {
		b, err := d.Reserve(r, tried)
		if err != nil {
			return Conn{}, err
		}
		if r.Idle != nil && d.ProxyProtocol == "" {
			if c, br, ok := r.Idle(b); ok {
				return Conn{Backend: b, Net: c, Reader: br, Reused: true}, nil
			}
		}
		if err := d.Spare(b); err != nil {
			return Conn{}, err
		}
		c, err := d.Dial(ctx, r, b)
		if err == nil {
			return c, nil
		}
		if err := d.Failed(r, b, err); err != nil {
			return Conn{}, err
		}
		tried = b
	}
	return Conn{}, &Error{Reason: ReasonDial, Err: errors.New("dial failed twice")}
}

// Reserve picks a backend of r.Pool other than tried (the one whose dial just
// failed, or nil) and reserves it: Connect's first step, for a caller that
// opens the conn itself (an event loop's non-blocking connect). The error is
// an *Error, counted as Connect counts it.
func (d *Dialer) Reserve(r Request, tried *pool.Backend) (*pool.Backend, error) {
	b, err := r.Pool.Pick(r.ClientIP, tried)
	if err == nil {
		return b, nil
	}
	if tried == nil {
		d.Errs.NoBackend.Inc()
		return nil, &Error{Reason: ReasonNoBackend, Err: err}
	}
	// Only the backend that just failed was eligible.
	return nil, &Error{Reason: ReasonDial, Err: fmt.Errorf("no other backend after a failed dial: %w", err)}
}

// Spare checks, before a new dial to b, that more than the descriptor
// reserve is left. If not it releases b, counts a limit error and returns it.
func (d *Dialer) Spare(b *pool.Backend) error {
	if b.FDs().Spare() {
		return nil
	}
	b.Release()
	d.Errs.Limit.Inc()
	return &Error{Reason: ReasonLimit, Err: ErrNoDescriptors}
}

// Failed takes a failed dial to b, reserved by Reserve: it releases b,
// counts and logs the failure and tells the passive checks. It returns nil
// when another backend may be tried, else the *Error to give up with (out of
// local resources: nobody's failure, and no other backend would fare better).
func (d *Dialer) Failed(r Request, b *pool.Backend, err error) error {
	b.Release()
	if fdbudget.Exhausted(err) {
		d.Errs.Limit.Inc()
		d.Log.Warn("backend dial failed for lack of local resources (descriptors, buffers or memory); the backend is not blamed",
			"listener", d.Listener, "pool", r.Pool.Name(), "backend", b.String(), "err", err)
		return &Error{Reason: ReasonLimit, Err: err}
	}
	d.Errs.Dial.Inc()
	if d.OnDialError != nil {
		d.OnDialError(b, err)
	}
	d.Log.Warn("backend dial failed", "listener", d.Listener, "pool", r.Pool.Name(), "backend", b.String(), "err", err)
	return nil
}

// Dial opens a new conn to b, which the caller has reserved and keeps
// reserved whatever happens: a TCP dial, the PROXY header when configured
// to, then, when b's pool speaks TLS, the TLS handshake (a certificate that
// does not verify fails the dial). The dial and the handshake share the
// connect timeout. It neither counts nor reports a failure: Connect does,
// and l7's replay of a request whose kept-alive conn died counts its own.
func (d *Dialer) Dial(ctx context.Context, r Request, b *pool.Backend) (Conn, error) {
	start := time.Now()
	c, err := d.open(ctx, r, b, start)
	d.Metrics.BackendConnect.WithLabelValues(r.Pool.Name(), b.String()).Observe(time.Since(start).Seconds())
	if err != nil {
		return Conn{}, err
	}
	return Conn{Backend: b, Net: c}, nil
}

// open is Dial's connect, started at start.
func (d *Dialer) open(ctx context.Context, r Request, b *pool.Backend, start time.Time) (net.Conn, error) {
	var deadline time.Time
	if d.Timeout > 0 {
		deadline = start.Add(d.Timeout)
	}
	nd := net.Dialer{Deadline: deadline, KeepAliveConfig: frontend.KeepAlive()}
	c, err := nd.DialContext(ctx, "tcp", b.String())
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", b, err)
	}
	// The PROXY header goes first, in the clear, as HAProxy's send-proxy
	// does over ssl: it describes the TCP conn, not what runs on it.
	if v := d.ProxyProtocol; v != "" {
		if err := proxyheader.Write(c, v, r.Addrs); err != nil {
			c.Close()
			return nil, fmt.Errorf("PROXY header to %s: %w", b, err)
		}
	}
	if conf := b.TLS(); conf != nil {
		return handshake(ctx, c, b, conf, deadline)
	}
	return c, nil
}
