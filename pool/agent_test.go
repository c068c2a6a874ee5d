package pool

import (
	"slices"
	"testing"
	"time"

	"github.com/wslb/wslb/config"
)

// heldCounts makes n picks without releasing them and returns how many each
// backend got, then releases them all.
func heldCounts(t *testing.T, p *Pool, n int) []int {
	t.Helper()
	got := make([]int, len(p.Backends()))
	var held []*Backend
	for i := range n {
		b, err := p.Pick(clientIP(i), nil)
		if err != nil {
			t.Fatalf("pick %d: %v", i, err)
		}
		got[index(p, b)]++
		held = append(held, b)
	}
	for _, b := range held {
		b.Release()
	}
	return got
}

// TestAgentEffectiveWeight checks the weight math: a percentage scales the
// configured weight exactly (50% of 1 is 0.5, not 0 or 1), is capped at the
// largest configured weight, and 0% is 0.
func TestAgentEffectiveWeight(t *testing.T) {
	tests := []struct {
		weight, pct int
		want        float64
	}{
		{1, 100, 1},
		{1, 50, 0.5},
		{1, 1, 0.01},
		{1, 0, 0},
		{3, 33, 0.99},
		{10, 250, 25},
		{1000, 100, 1000},
		{1000, 200, 1000}, // capped, as HAProxy caps a relative weight at its largest
		{600, 256, 1000},
	}
	for _, tt := range tests {
		p := New(testConfig(config.BalanceLeastConn, tt.weight))
		b := p.Backends()[0]
		b.SetAgentPercent(tt.pct)
		if got := b.EffectiveWeight(time.Now()); got != tt.want {
			t.Errorf("weight %d at %d%%: EffectiveWeight = %v; want %v", tt.weight, tt.pct, got, tt.want)
		}
		if b.Weight() != tt.weight {
			t.Errorf("weight %d at %d%%: Weight = %d; the configured weight must not change", tt.weight, tt.pct, b.Weight())
		}
	}
}

// TestAgentShares holds picks over backends whose agents report percentages
// and checks every policy's split follows the effective weights exactly.
func TestAgentShares(t *testing.T) {
	tests := []struct {
		name    string
		weights []int
		pcts    []int
		picks   int
		want    []int
	}{
		{"50% of 1 against 100% of 1", []int{1, 1}, []int{100, 50}, 30, []int{20, 10}},
		{"50% of 2 equals 100% of 1", []int{2, 1}, []int{50, 100}, 30, []int{15, 15}},
		{"1% of 1 is not 0", []int{1, 1}, []int{100, 1}, 101, []int{100, 1}},
		{"above 100%", []int{1, 1}, []int{100, 200}, 30, []int{10, 20}},
		{"0% takes none", []int{1, 1, 1}, []int{100, 0, 100}, 30, []int{15, 0, 15}},
	}
	for _, balance := range []string{config.BalanceLeastConn, config.BalanceRoundRobin} {
		for _, tt := range tests {
			t.Run(balance+"/"+tt.name, func(t *testing.T) {
				p := New(testConfig(balance, tt.weights...))
				for i, b := range p.Backends() {
					b.SetAgentPercent(tt.pcts[i])
				}
				if got := heldCounts(t, p, tt.picks); !slices.Equal(got, tt.want) {
					t.Errorf("picks = %v; want %v", got, tt.want)
				}
			})
		}
	}
}

// TestAgentChangeRebuildsRoundRobin checks that a percentage that changes
// after the pool is built reaches round_robin's precomputed schedule.
func TestAgentChangeRebuildsRoundRobin(t *testing.T) {
	p := New(testConfig(config.BalanceRoundRobin, 1, 1))
	if got := heldCounts(t, p, 10); !slices.Equal(got, []int{5, 5}) {
		t.Fatalf("before: picks = %v; want [5 5]", got)
	}
	p.Backends()[0].SetAgentPercent(25)
	if got := heldCounts(t, p, 10); !slices.Equal(got, []int{2, 8}) {
		t.Errorf("at 25%%: picks = %v; want [2 8]", got)
	}
	p.Backends()[0].SetAgentPercent(0)
	p.Backends()[1].SetAgentPercent(0)
	if _, err := p.Pick(clientIP(1), nil); err != ErrNoBackend {
		t.Errorf("every backend at 0%%: Pick err = %v; want ErrNoBackend", err)
	}
}

// TestAgentSourceHash checks that a backend at 0% gets none of its clients,
// which fall to their next choice, and gets them back at 100%.
func TestAgentSourceHash(t *testing.T) {
	p := New(testConfig(config.BalanceSourceHash, 1, 1, 1))
	first := make([]*Backend, 100)
	for i := range first {
		first[i] = pick(t, p, clientIP(i), nil) // pick releases
	}
	zero := p.Backends()[1]
	zero.SetAgentPercent(0)
	for i := range first {
		if b := pick(t, p, clientIP(i), nil); b == zero {
			t.Fatalf("client %d: picked the backend at 0%%", i)
		}
	}
	zero.SetAgentPercent(AgentFull)
	for i := range first {
		if b := pick(t, p, clientIP(i), nil); b != first[i] {
			t.Fatalf("client %d: back at 100%% it moved to %v from %v", i, b, first[i])
		}
	}
}

// TestAgentDown checks that down takes a backend out of every policy and of
// Healthy, and up brings it back.
func TestAgentDown(t *testing.T) {
	for _, balance := range policies {
		t.Run(balance, func(t *testing.T) {
			p := New(testConfig(balance, 1))
			b := p.Backends()[0]
			if !b.SetAgentDown(true) || b.SetAgentDown(true) {
				t.Fatal("SetAgentDown(true) twice: want changed, then not")
			}
			if b.Healthy() || b.Available() {
				t.Error("down: Healthy or Available; want neither")
			}
			if _, err := p.Pick(clientIP(1), nil); err != ErrNoBackend {
				t.Errorf("down: Pick err = %v; want ErrNoBackend", err)
			}
			b.SetAgentDown(false)
			got, err := p.Pick(clientIP(1), nil)
			if err != nil || got != b {
				t.Fatalf("up: Pick = %v, %v; want the backend", got, err)
			}
			got.Release()
		})
	}
}

// TestAgentReload checks that a reload keeps the agent's last report while
// the backend stays and the agent check is on, with the configured weight
// following the config, and forgets it once the agent check is turned off.
func TestAgentReload(t *testing.T) {
	c := testConfig(config.BalanceLeastConn, 1, 1)
	c.Health.Agent.Port = 9777
	p := New(c)
	b := p.Backends()[1]
	b.SetAgentPercent(50)
	b.SetAgentDown(true)
	b.SetAgentAdmin("drain")

	c.Backends[1].Weight = 4
	p = Reconcile(p, c)
	if p.Backends()[1] != b || b.AgentPercent() != 50 || !b.AgentDown() || b.Weight() != 4 {
		t.Fatalf("after a reload: percent %d, down %v, weight %d; want 50, true, 4", b.AgentPercent(), b.AgentDown(), b.Weight())
	}
	if got := b.EffectiveWeight(time.Now()); got != 2 {
		t.Errorf("after a reload: EffectiveWeight = %v; want 2 (50%% of the new weight 4)", got)
	}
	if b.SetAgentAdmin("drain") {
		t.Error("after a reload: the agent's last drain was forgotten")
	}

	c.Health.Agent.Port = 0
	p = Reconcile(p, c)
	if b.AgentPercent() != AgentFull || b.AgentDown() || !b.SetAgentAdmin("drain") {
		t.Errorf("agent turned off: percent %d, down %v; want the report forgotten", b.AgentPercent(), b.AgentDown())
	}
}

// BenchmarkPickAgentWeights measures a held-and-released pick over 8
// backends whose agents report different percentages, per policy: the cost
// of the exact weights (and of round_robin's generation check).
func BenchmarkPickAgentWeights(b *testing.B) {
	for _, balance := range policies {
		b.Run(balance, func(b *testing.B) {
			p := New(testConfig(balance, 1, 1, 1, 1, 1, 1, 1, 1))
			for i, be := range p.Backends() {
				be.SetAgentPercent(30 + 10*i)
			}
			for b.Loop() {
				be, err := p.Pick(clientIP(7), nil)
				if err != nil {
					b.Fatal(err)
				}
				be.Release()
			}
		})
	}
}
