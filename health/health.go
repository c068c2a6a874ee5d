// Package health runs the active checks of DESIGN.md's health keys (one
// Checker goroutine per backend: tcp, http or websocket, with rise and fall),
// the agent check (one AgentChecker per backend), and turns failed dials into
// passive ejections (Passive). The verdicts live
// in pool.Backend, which judges them when read; see pool/state.go.
//
// Read Start first, then checker.go (the loop and rise/fall), probe.go,
// passive.go, and agent.go with agentword.go for HAProxy's agent check.
package health

import (
	"context"
	"log/slog"
	"sync"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/pool"
)

// Reason words passed to Hooks.OnChange and logged with each state change.
const (
	// ReasonCheck: active checks changed the verdict (the first result, rise
	// passes or fall failures), or a pass ended a passive ejection.
	ReasonCheck = "check"
	// ReasonPassive: max_fails failed dials within fail_timeout ejected it.
	ReasonPassive = "passive"
)

// Hooks report to the rest of wslb without health importing metrics. Either
// may be nil. They are called from checker goroutines and from the conn
// goroutines that report failed dials, so they must be safe for concurrent use.
type Hooks struct {
	// OnResult is called after every completed check with its error, nil
	// for a pass: the source of wslb_health_checks_total{pool, backend,
	// result="ok"|"fail"} and of the status page's last error.
	OnResult func(poolName string, b *pool.Backend, err error)
	// OnChange is called once per state change, after it took effect: up is
	// the new state, reason a Reason word, lastErr the last failed check's (or
	// dial's) error, nil when there was none. It feeds wslb_backend_up.
	OnChange func(poolName string, b *pool.Backend, up bool, reason string, lastErr error)
	// OnAgent is called after every agent check with its error, nil when
	// the agent answered a line: wslb_agent_checks_total.
	OnAgent func(poolName string, b *pool.Backend, err error)
	// SetAdmin is called with AgentReady, AgentDrain or AgentMaint when a
	// backend's agent says one that differs from its last (the first one
	// heard is a change), so an operator's own drain is not overridden every
	// interval by an agent that keeps saying ready.
	SetAdmin func(b *pool.Backend, state string)
}

// Start runs one Checker for every backend of p with settings cfg (the pool's
// health block), and one AgentChecker when cfg.Agent has a port, each in its
// own goroutine, until ctx is done or stop is called. stop cancels them all
// and returns once every one has returned; it may be called more than once.
// With check none and no agent it starts nothing. Checkers stamp verdicts
// with p's clock and draw jitter from their own crypto-seeded source. On a
// reload, stop the old pool's checkers and Start the new pool: backends that
// stay keep their state and their agent's last report, and each new checker
// starts from them.
func Start(ctx context.Context, p *pool.Pool, cfg config.Health, log *slog.Logger, hooks Hooks) (stop func()) {
	if !active(cfg) && cfg.Agent.Port == 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, b := range p.Backends() {
		if active(cfg) {
			c := &Checker{Pool: p.Name(), Backend: b, Config: cfg, Log: log, Hooks: hooks, Now: p.Clock()}
			wg.Go(func() { c.Run(ctx) })
		}
		if cfg.Agent.Port != 0 {
			a := &AgentChecker{Pool: p.Name(), Backend: b, Config: cfg.Agent, Log: log, Hooks: hooks}
			wg.Go(func() { a.Run(ctx) })
		}
	}
	return func() {
		cancel()
		wg.Wait()
	}
}

// active reports whether cfg asks for active checks; an empty check (a config
// built by hand) means none, as it does in pool.
func active(cfg config.Health) bool {
	return cfg.Check != "" && cfg.Check != config.CheckNone
}

// logger returns l, or a logger that drops everything: there is no global one.
func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
