package pool

import (
	"sync/atomic"

	"github.com/wslb/wslb/config"
)

// What a backend's agent (HAProxy's agent check, run by package health)
// last reported about it. The report lives on the Backend, not in the
// checker, so a reload that keeps the backend keeps it too: a new checker
// starts from the agent's last word rather than from full weight.
//
// The percentage scales the configured weight exactly: it is kept as a
// whole percent and weights are compared in hundredths (times slow start's
// thousandths, see effWeight), so 50% of weight 1 is half of weight 1 and
// least_conn gives such a backend half the conns of a full one.

const (
	// AgentFull is the percentage a backend has until its agent says
	// otherwise, and again once a reload turns the agent check off.
	AgentFull = 100
	// maxWeight is config's largest weight. An agent may ask for more than
	// 100%, but, as HAProxy caps a relative weight at its largest (256), the
	// effective weight never passes the largest a config could write.
	maxWeight = config.MaxWeight
	// AgentMaxPercent is the largest percentage kept: any more would lift
	// even a weight of 1 past maxWeight.
	AgentMaxPercent = maxWeight * AgentFull
)

type agentReport struct {
	pct   atomic.Int64           // percent of the configured weight, 0 up
	down  atomic.Bool            // the agent said down (or stopped, fail)
	admin atomic.Pointer[string] // its last ready, drain or maint; nil before one
}

// AgentPercent is the percentage of its configured weight the backend's
// agent last asked for: AgentFull when there is no agent or it has not
// answered yet.
func (b *Backend) AgentPercent() int { return int(b.agent.pct.Load()) }

// SetAgentPercent records an agent's weight percentage (negative counts as
// 0: no new conns; above AgentMaxPercent as AgentMaxPercent) and reports
// whether it changed.
func (b *Backend) SetAgentPercent(pct int) (changed bool) {
	p := int64(min(max(pct, 0), AgentMaxPercent))
	if b.agent.pct.Swap(p) == p {
		return false
	}
	// After the store: a round_robin that reads the new generation reads
	// the new weight with it.
	b.group.Load().weights.Add(1)
	return true
}

// AgentDown reports whether the agent said the backend is down: it takes no
// new conns until its agent says up, whatever the active checks say.
func (b *Backend) AgentDown() bool { return b.agent.down.Load() }

// SetAgentDown records an agent's down (true) or up (false) and reports
// whether it changed.
func (b *Backend) SetAgentDown(down bool) (changed bool) {
	return b.agent.down.Swap(down) != down
}

// SetAgentAdmin records the agent's last administrative word (ready, drain,
// maint) and reports whether it differs from the one before; the first is a
// change.
func (b *Backend) SetAgentAdmin(word string) (changed bool) {
	old := b.agent.admin.Swap(&word)
	return old == nil || *old != word
}

// resetAgent forgets every report: the pool's agent check is off.
func (b *Backend) resetAgent() {
	b.SetAgentPercent(AgentFull)
	b.agent.down.Store(false)
	b.agent.admin.Store(nil)
}

// agentWeight is the configured weight scaled by the agent's percentage, in
// hundredths of a weight, capped at maxWeight.
func (b *Backend) agentWeight() int64 {
	return min(b.weight.Load()*b.agent.pct.Load(), maxWeight*AgentFull)
}

// agentRefuses reports whether the agent's 0% keeps new conns away. Like
// HAProxy's weight 0 it is not a health verdict: the backend stays up.
func (b *Backend) agentRefuses() bool { return b.agent.pct.Load() == 0 }
