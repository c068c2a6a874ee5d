// Package handoff hands an established conn pair (an l4 conn, an l7 tunnel)
// to the tunnel and returns; when the tunnel ends it settles what the pair
// held: the backend's reservation, the active gauge, the tunnel metrics and
// the listener's hold on the client conn. l4 and l7 share it so that the
// rules of a tunnel's life live in one place.
package handoff

import (
	"context"
	"net"
	"time"

	"github.com/wslb/wslb/frontend"
	"github.com/wslb/wslb/metrics"
	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/tunnel"
)

// Start relays client and backend (a conn to b of pool p) with r on engine e
// and returns at once; it owns both conns from then on. ctx is the client
// conn's, from frontend: a drain cancels it, and a reload that removes b ends
// the tunnel in its turn of the retirement spread; nothing else a reload does
// may cut it. ended, when set, is called with how the tunnel ended and how
// long it lived, after the metrics and before the listener lets go of the
// conn. The closure is what an idle tunnel costs besides the tunnel itself,
// so it keeps little.
func Start(ctx context.Context, e *tunnel.Engine, r tunnel.Relay, m *metrics.Metrics, listener string, p *pool.Pool, b *pool.Backend,
	client, backend net.Conn, ended func(s tunnel.Stats, lived time.Duration)) {
	pn := p.Name()
	mc := m.Conn(listener, pn, b.String())
	closed := mc.Open()
	r.Rx, r.Tx = mc.Rx, mc.Tx
	ctx, cancel, release := frontend.Detach(ctx)
	stopRemoved := b.OnRemoved(func() { cancel(pool.ErrRemoved) })
	start := time.Now()
	r.Start(ctx, e, client, backend, func(s tunnel.Stats) {
		stopRemoved()
		lived := time.Since(start)
		m.TunnelEnded(listener, pn, s.Reason(), lived)
		closed()
		b.Release()
		if ended != nil {
			ended(s, lived)
		}
		release()
	})
}
