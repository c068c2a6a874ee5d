package health

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/internal/agenttest"
	"github.com/wslb/wslb/internal/wait"
	"github.com/wslb/wslb/pool"
)

// Backends of the agent tests differ by IP, since an agent is found on its
// backend's IP; the pools never dial them (check none).
var agentIPs = []string{"127.0.0.2", "127.0.0.3"}

const agentInterval = 20 * time.Millisecond

func TestParseAgent(t *testing.T) {
	tests := []struct {
		line string
		want agentReply
	}{
		{"50%\n", agentReply{pct: 50}},
		{"ready 60%", agentReply{pct: 60, admin: "ready"}},
		{"UP,Drain\t75%", agentReply{pct: 75, admin: "drain", state: "up"}},
		{"  maint  ", agentReply{pct: -1, admin: "maint"}},
		{"down #disk full, sorry", agentReply{pct: -1, state: "down", reason: "disk full, sorry"}},
		{"stopped#deploy", agentReply{pct: -1, state: "stopped", reason: "deploy"}},
		{"FAIL", agentReply{pct: -1, state: "fail"}},
		{"up down", agentReply{pct: -1, state: "down"}}, // the last word wins
		{"0%", agentReply{pct: 0}},
		{"250%", agentReply{pct: 250}},
		{"99999999999999999999999%", agentReply{pct: pool.AgentMaxPercent}},
		{"maxconn:30 50% hello", agentReply{pct: 50, unknown: []string{"maxconn:30", "hello"}}},
		{"-5% 5.5% % x%", agentReply{pct: -1, unknown: []string{"-5%", "5.5%", "%", "x%"}}},
		{"", agentReply{pct: -1}},
	}
	for _, tt := range tests {
		if got := parseAgent(tt.line); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parseAgent(%q) = %+v; want %+v", tt.line, got, tt.want)
		}
	}
}

// agentPool is a least_conn pool of check none over one backend per IP of
// agentIPs, with an agent check on agent's port, sending send.
func agentPool(a *agenttest.Agent, send string) (config.Pool, config.Health) {
	h := config.Health{Check: config.CheckNone, Agent: config.Agent{Port: a.Port, Interval: agentInterval, Send: send}}
	c := config.Pool{Name: "p", Balance: config.BalanceLeastConn, Health: h}
	for _, ip := range agentIPs {
		ap := netip.AddrPortFrom(netip.MustParseAddr(ip), 9)
		c.Backends = append(c.Backends, config.Backend{Address: ap.String(), Weight: 1, Addr: ap})
	}
	return c, h
}

// agentHooks records what the agent checkers report.
type agentHooks struct {
	recorder
	mu     sync.Mutex
	admin  []string // "backend state"
	failed atomic.Int64
	ok     atomic.Int64
}

func (r *agentHooks) hooks() Hooks {
	h := r.recorder.hooks()
	h.OnAgent = func(_ string, _ *pool.Backend, err error) {
		if err != nil {
			r.failed.Add(1)
		} else {
			r.ok.Add(1)
		}
	}
	h.SetAdmin = func(b *pool.Backend, state string) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.admin = append(r.admin, b.String()+" "+state)
	}
	return h
}

func (r *agentHooks) admins() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.admin)
}

// askedMore waits until the agent on ip has answered n more conns than now:
// the checker has read n more answers (and applied all but maybe the last).
func askedMore(t *testing.T, a *agenttest.Agent, ip string, n int) {
	t.Helper()
	from := a.Asked(ip)
	// A hung agent takes the checker's whole timeout per ask.
	within := time.Duration(n)*(AgentTimeout+agentInterval) + margin
	wait.Within(t, "the agent asked again", within, func() bool { return a.Asked(ip) >= from+n })
}

// TestAgentWeight: 50% on one of two backends sends it a third of 30 held
// least_conn picks, exactly; 100% again evens them.
func TestAgentWeight(t *testing.T) {
	a := agenttest.Serve(t, "", agentIPs...)
	a.Set(agentIPs[0], "ready 100%")
	a.Set(agentIPs[1], "ready 50%")
	c, h := agentPool(a, "")
	p := pool.New(c)
	startChecks(t, p, h, nil, Hooks{})
	half := p.Backends()[1]
	wait.Within(t, "50%", margin, func() bool { return half.AgentPercent() == 50 })
	if got := heldShare(t, p, half, 30); got != 10.0/30 {
		t.Errorf("share of the backend at 50%%: %.3f of 30 picks; want 10/30", got)
	}
	if w := half.EffectiveWeight(time.Now()); w != 0.5 || half.Weight() != 1 {
		t.Errorf("EffectiveWeight %v, Weight %d; want 0.5 and 1", w, half.Weight())
	}
	a.Set(agentIPs[1], "100%")
	wait.Within(t, "100%", margin, func() bool { return half.AgentPercent() == 100 })
	if got := heldShare(t, p, half, 30); got != 0.5 {
		t.Errorf("share back at 100%%: %.3f; want 0.5", got)
	}
}

// TestAgentDownUp: down takes the backend out of Pick (and Healthy) with
// its reason logged, up brings it back, each announced once.
func TestAgentDownUp(t *testing.T) {
	a := agenttest.Serve(t, "", agentIPs...)
	a.Set(agentIPs[0], "up")
	a.Set(agentIPs[1], "down #disk full")
	c, h := agentPool(a, "")
	p := pool.New(c)
	var rec agentHooks
	var logs logBuffer
	startChecks(t, p, h, logs.logger(), rec.hooks())
	b := p.Backends()[1]
	wait.Within(t, "down", margin, func() bool { return !b.Healthy() })
	neverPicked(t, p, b, 20)
	askedMore(t, a, agentIPs[1], 3)
	a.Set(agentIPs[1], "UP 100%")
	wait.Within(t, "up", margin, b.Healthy)
	askedMore(t, a, agentIPs[1], 3)
	got := rec.changes(b.String())
	if len(got) != 2 || got[0].up || got[0].reason != ReasonAgent || !got[1].up || got[1].reason != ReasonAgent {
		t.Fatalf("changes %+v; want down then up, reason agent, once each", got)
	}
	if got[0].err == nil || got[0].err.Error() != "agent says down: disk full" {
		t.Errorf("down's error %v; want the agent's word and reason", got[0].err)
	}
	if n := logs.count("backend down: its agent says down"); n != 1 || !strings.Contains(logs.String(), `agent_reason="disk full"`) {
		t.Errorf("%d down lines (want 1, with its reason):\n%s", n, logs.String())
	}
	if len(rec.changes(p.Backends()[0].String())) != 0 {
		t.Error("the agent saying up on a backend that was never down announced a change")
	}
}

// TestAgentDownUpWithActiveChecks: a backend its agent says up is available
// only while its active checks say so too.
func TestAgentDownUpWithActiveChecks(t *testing.T) {
	a := agenttest.Serve(t, "", "127.0.0.1")
	a.Set("127.0.0.1", "down")
	be := newTestBackend(t, nil)
	cfg := healthConfig(config.CheckTCP)
	cfg.Agent = config.Agent{Port: a.Port, Interval: agentInterval}
	p := pool.New(poolConfig(cfg, be))
	startChecks(t, p, cfg, nil, Hooks{})
	b := p.Backends()[0]
	wait.Within(t, "checked up, agent down", margin, func() bool { return b.Up() && b.AgentDown() })
	if b.Healthy() {
		t.Fatal("healthy while its agent says down")
	}
	be.stop()
	a.Set("127.0.0.1", "up")
	wait.Within(t, "checked down, agent up", time.Duration(cfg.Fall)*cfg.Interval+margin, func() bool {
		return b.State() == pool.StateDown && !b.AgentDown()
	})
	if b.Healthy() {
		t.Fatal("healthy while its active checks say down")
	}
}

// TestAgentAdmin: ready, drain and maint reach the SetAdmin hook once per
// change of the agent's word, not once per check.
func TestAgentAdmin(t *testing.T) {
	a := agenttest.Serve(t, "", agentIPs...)
	c, h := agentPool(a, "")
	p := pool.New(c)
	var rec agentHooks
	startChecks(t, p, h, nil, rec.hooks())
	b := p.Backends()[0].String()
	var want []string
	for _, word := range []string{"drain", "MAINT 10%", "ready"} {
		a.Set(agentIPs[0], word)
		want = append(want, b+" "+strings.ToLower(strings.Fields(word)[0]))
		wait.Within(t, word, margin, func() bool { return len(rec.admins()) == len(want) })
		askedMore(t, a, agentIPs[0], 3)
	}
	if got := rec.admins(); !slices.Equal(got, want) {
		t.Errorf("SetAdmin calls %q; want %q", got, want)
	}
}

// TestAgentChangesNothing: after a report of 75%, unknown words, an empty
// answer, no newline in 512 bytes, a hung agent (the 1 s timeout), and a
// refused connection all leave the 75% and the health as they were.
func TestAgentChangesNothing(t *testing.T) {
	a := agenttest.Serve(t, "", agentIPs...)
	ip := agentIPs[1]
	a.Set(ip, "75%")
	c, h := agentPool(a, "")
	p := pool.New(c)
	var rec agentHooks
	var logs logBuffer
	startChecks(t, p, h, logs.logger(), rec.hooks())
	b := p.Backends()[1]
	wait.Within(t, "75%", margin, func() bool { return b.AgentPercent() == 75 })
	check := func(what string) {
		t.Helper()
		if b.AgentPercent() != 75 || !b.Healthy() || b.AgentDown() {
			t.Fatalf("after %s: percent %d, healthy %v; want 75 and healthy", what, b.AgentPercent(), b.Healthy())
		}
	}
	for _, answer := range []string{"hello world, how are you", "", "   ", strings.Repeat("x", 600), agenttest.Silent} {
		a.Set(ip, answer)
		askedMore(t, a, ip, 2)
		check(strings.ToValidUTF8(answer[:min(len(answer), 20)], "?"))
	}
	a.Refuse(ip)
	from := rec.failed.Load()
	wait.Within(t, "refused twice", margin, func() bool { return rec.failed.Load() >= from+2 })
	check("refused")
	if len(rec.changes(b.String())) != 0 || len(rec.admins()) != 0 {
		t.Errorf("changes %v, admin %v; want none", rec.changes(b.String()), rec.admins())
	}
	// Failures start failing once, at warn: later ones wait a minute.
	if n := logs.count("level=WARN msg=\"agent check failed; its last report stands\" pool=p backend=" + b.String()); n != 1 {
		t.Errorf("%d warnings about the failing agent; want 1 (rate limited):\n%s", n, logs.String())
	}
}

// TestAgentFailureWarnings: a failing agent is logged at warn when it
// starts failing, then at most once a minute, and its recovery once.
func TestAgentFailureWarnings(t *testing.T) {
	clk := newClock()
	var logs logBuffer
	var refuse atomic.Bool
	refuse.Store(true)
	ap := netip.MustParseAddrPort("127.0.0.1:9")
	p := pool.New(config.Pool{Name: "p", Backends: []config.Backend{{Address: ap.String(), Weight: 1, Addr: ap}}})
	ac := &AgentChecker{
		Pool: "p", Backend: p.Backends()[0], Config: config.Agent{Port: 1, Interval: time.Hour}, Log: logs.logger(), Now: clk.now,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if refuse.Load() {
				return nil, errors.New("connection refused")
			}
			c, s := net.Pipe()
			go func() { s.Write([]byte("ready\n")); s.Close() }()
			return c, nil
		},
		Timeout: time.Second,
	}
	ac.Log = logger(ac.Log)
	ctx := t.Context()
	for range 10 {
		ac.check(ctx)
		clk.advance(5 * time.Second)
	}
	if n := logs.count("level=WARN"); n != 1 {
		t.Fatalf("%d warnings in 50 s of failures; want 1:\n%s", n, logs.String())
	}
	clk.advance(time.Minute)
	ac.check(ctx)
	if n := logs.count("agent check still failing"); n != 1 || logs.count("failed_checks=10") != 1 {
		t.Fatalf("after a minute: want one 'still failing' line counting the 10 quiet failures:\n%s", logs.String())
	}
	refuse.Store(false)
	ac.check(ctx)
	ac.check(ctx)
	if n := logs.count("agent answering again"); n != 1 {
		t.Errorf("%d recovery lines; want 1:\n%s", n, logs.String())
	}
}

// TestAgentSend: the configured line reaches the agent, with a newline.
func TestAgentSend(t *testing.T) {
	a := agenttest.Serve(t, "hello wslb", agentIPs...)
	a.Set(agentIPs[0], "30%")
	c, h := agentPool(a, "hello wslb")
	p := pool.New(c)
	startChecks(t, p, h, nil, Hooks{})
	select {
	case got := <-a.Sent:
		if got != "hello wslb" {
			t.Errorf("the agent got %q; want \"hello wslb\"", got)
		}
	case <-time.After(time.Second + margin):
		t.Fatal("the agent got no line")
	}
	wait.Within(t, "30% read after the send", margin, func() bool { return p.Backends()[0].AgentPercent() == 30 })
}

// TestAgentReloadKeepsPercent: the checkers of a reloaded pool start from
// the agent's last report rather than from full weight.
func TestAgentReloadKeepsPercent(t *testing.T) {
	a := agenttest.Serve(t, "", agentIPs...)
	a.Set(agentIPs[1], "40%")
	c, h := agentPool(a, "")
	p := pool.New(c)
	stop := Start(t.Context(), p, h, nil, Hooks{})
	b := p.Backends()[1]
	wait.Within(t, "40%", margin, func() bool { return b.AgentPercent() == 40 })
	stop()
	a.Refuse(agentIPs[1]) // the agent is away while wslb reloads
	c.Backends[0].Weight = 3
	p = pool.Reconcile(p, c)
	startChecks(t, p, h, nil, Hooks{})
	if p.Backends()[1] != b || b.AgentPercent() != 40 {
		t.Fatalf("after the reload: percent %d; want 40 kept", b.AgentPercent())
	}
	if got := heldShare(t, p, b, 34); got != 4.0/34 {
		t.Errorf("share at 40%% of 1 against 3: %.3f of 34 picks; want 4/34", got)
	}
}
