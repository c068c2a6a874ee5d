package pool

import "time"

// Slow start ramps a recovering backend's effective weight from rampFloor to
// full over the pool's slow_start, linearly. A recovery is a move from down to
// up (SetState) or the end of a passive ejection; a backend's first pass is
// not one. least_conn would otherwise hand a restarted backend every new conn
// until its count caught up with its peers: a thundering herd of reconnects.

// Weights are handled in thousandths while ramping so that least_conn's
// comparison stays in integers.
const (
	permille  = 1000
	rampFloor = 100 // a recovering backend starts at 10% of its weight
)

// rampPermille is the share of its weight b gets at now, in thousandths:
// permille when it is not ramping.
func (b *Backend) rampPermille(now time.Time) int64 {
	ss := b.slowStart.Load()
	from := b.rampFrom.Load()
	if ss <= 0 || from == 0 {
		return permille
	}
	e := b.stamp(now) - from
	switch {
	case e >= ss:
		return permille
	case e <= 0:
		return rampFloor
	}
	// Floats because e*900 overflows int64 for slow_start beyond ~115 days.
	return rampFloor + int64(float64(permille-rampFloor)*float64(e)/float64(ss))
}

// weightUnit is effWeight's unit, 1/100000 of a weight: the agent's
// hundredths (agent.go) times slow start's thousandths.
const weightUnit = AgentFull * permille

// effWeight is b's weight at now in weightUnits, as least_conn compares it:
// the configured weight scaled by the agent's percentage and the slow start
// ramp. At most maxWeight*weightUnit (10^8); 0 only at an agent's 0%, which
// is never picked.
func (b *Backend) effWeight(now time.Time) int64 {
	return b.agentWeight() * b.rampPermille(now)
}

// EffectiveWeight is b's weight at now as its agent scales it and slow start
// ramps it: Weight when neither applies, down to a tenth of it just after a
// recovery, 0.5 for 50% of weight 1.
func (b *Backend) EffectiveWeight(now time.Time) float64 {
	return float64(b.effWeight(now)) / weightUnit
}

// rampTurn reports whether round_robin may take b for a slot of its schedule
// that landed on it. While b ramps only its share of landings are taken, by a
// deterministic counter (Bresenham: landing c is taken when ⌊c·p⌋ steps up),
// so shares are exact without randomness.
func (b *Backend) rampTurn(now time.Time) bool {
	p := b.rampPermille(now)
	if p >= permille {
		return true
	}
	c := b.rampTurns.Add(1)
	return c*uint64(p)/permille != (c-1)*uint64(p)/permille
}
