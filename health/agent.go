package health

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/fdbudget"
	"github.com/wslb/wslb/pool"
)

// HAProxy's agent check: every interval the backend's agent, a small program
// on the backend's host, is asked about the backend and answers one line of
// words (agentword.go). A failed connection or an empty answer changes
// nothing, as in HAProxy: the agent reports load and intent, the active
// checks own reachability.

const (
	// AgentTimeout bounds one agent check, connect to answer (DESIGN: ≤ 1 s).
	AgentTimeout = time.Second
	// agentMaxLine is the longest answer read: HAProxy's words, a percentage
	// and a reason fit many times over.
	agentMaxLine = 512
	// agentWarnEvery is how often a failing agent is logged at warn.
	agentWarnEvery = time.Minute
	// agentMaxUnknown bounds the unknown words remembered (each logged once),
	// so an agent answering noise cannot grow the checker's memory.
	agentMaxUnknown = 64
)

// ReasonAgent: the backend's agent said down or up (Hooks.OnChange).
const ReasonAgent = "agent"

// AgentChecker runs the agent check of one backend. Set the exported
// fields, then call Run once, in the goroutine that should own the loop.
type AgentChecker struct {
	Pool    string        // pool name, for log lines and hooks
	Backend *pool.Backend // the backend reported on and told the answers
	Config  config.Agent  // a validated agent block with a port
	Log     *slog.Logger  // nil: discard
	Hooks   Hooks
	// Rand draws the ±10% jitter; nil: seeded from crypto/rand.
	Rand *rand.Rand
	// Dial connects to the agent; nil: a net.Dialer. Tests count or fail dials.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Timeout bounds one check; 0: AgentTimeout.
	Timeout time.Duration
	// Now paces the failure warnings; nil: time.Now.
	Now func() time.Time

	// Only Run's goroutine touches these.
	failing  bool      // the last check failed
	warnedAt time.Time // when a failure was last logged at warn
	failures int       // failed checks since then
	unknown  map[string]bool
}

// Run asks the agent at once, then every interval ±10% (from the start of
// each check), until ctx is done or the backend is removed.
func (a *AgentChecker) Run(ctx context.Context) {
	if a.Config.Port == 0 {
		return
	}
	a.Log = logger(a.Log)
	if a.Rand == nil {
		a.Rand = newRand()
	}
	if a.Now == nil {
		a.Now = time.Now
	}
	if a.Dial == nil {
		var d net.Dialer
		a.Dial = d.DialContext
	}
	if a.Timeout <= 0 {
		a.Timeout = AgentTimeout
	}
	every(ctx, a.Backend, func() time.Duration { return jitter(a.Config.Interval, a.Rand) }, a.check)
}

// Addr is where the agent listens: the backend's IP on the agent's port,
// plain TCP whether or not the pool speaks TLS, as in HAProxy.
func (a *AgentChecker) Addr() string {
	return netip.AddrPortFrom(a.Backend.Addr().Addr(), uint16(a.Config.Port)).String()
}

// check asks once and applies the answer; a check cut short by a stop, or
// one wslb had no descriptor for, says nothing about the agent.
func (a *AgentChecker) check(ctx context.Context) {
	fds := a.Backend.FDs()
	if !fds.Take() {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, a.Timeout)
	line, err := a.ask(cctx)
	cancel()
	fds.Add(-1) // ask closed its conn
	if ctx.Err() != nil || a.Backend.Context().Err() != nil || fdbudget.Exhausted(err) {
		return
	}
	if err == nil && len(bytes.TrimSpace(line)) == 0 {
		err = errors.New("empty answer")
	}
	if a.Hooks.OnAgent != nil {
		a.Hooks.OnAgent(a.Pool, a.Backend, err)
	}
	if err != nil {
		a.failed(err)
		return
	}
	if a.failing {
		a.Log.Info("agent answering again", "pool", a.Pool, "backend", a.Backend.String(), "agent", a.Addr(), "failed_checks", a.failures)
		a.failing, a.failures = false, 0
	}
	a.apply(parseAgent(string(line)), string(line))
}

// ask connects, sends the configured line if any, and reads one line: up to
// a newline, or all the agent sent before closing.
func (a *AgentChecker) ask(ctx context.Context) ([]byte, error) {
	addr := a.Addr()
	conn, err := a.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("agent %s: %w", addr, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	// The deadline covers the timeout; this covers a stop before it.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if a.Config.Send != "" {
		if _, err := conn.Write([]byte(a.Config.Send + "\n")); err != nil {
			return nil, fmt.Errorf("agent %s: send: %w", addr, err)
		}
	}
	r := bufio.NewReaderSize(conn, agentMaxLine)
	line, err := r.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return nil, fmt.Errorf("agent %s: no newline in the first %d bytes of its answer", addr, agentMaxLine)
	case err != nil && !errors.Is(err, io.EOF):
		return nil, fmt.Errorf("agent %s: read: %w", addr, err)
	}
	// At EOF, line is what the agent sent before closing, maybe nothing.
	return line, nil
}

// failed logs a failed check: at warn when the agent starts failing, then
// at most once per agentWarnEvery while it goes on, so a backend without an
// agent does not fill the log every interval.
func (a *AgentChecker) failed(err error) {
	a.failures++
	now := a.Now()
	if a.failing && now.Sub(a.warnedAt) < agentWarnEvery {
		a.Log.Debug("agent check failed", "pool", a.Pool, "backend", a.Backend.String(), "err", err)
		return
	}
	msg := "agent check failed; its last report stands"
	if a.failing {
		msg = "agent check still failing; its last report stands"
	}
	a.Log.Warn(msg, "pool", a.Pool, "backend", a.Backend.String(), "failed_checks", a.failures, "err", err)
	a.failing, a.warnedAt, a.failures = true, now, 0
}
