package status

import (
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/frontend"
	"github.com/wslb/wslb/metrics"
	"github.com/wslb/wslb/pool"
)

// HistoryLen is how many samples Backend.History keeps: two minutes at the
// one-second interval the admin page polls at.
const HistoryLen = 120

// Board keeps what the running proxies do not: each backend's last check
// result and error, and its recent connection counts. It is safe for
// concurrent use. Entries are keyed by pool and address, so they survive a
// reload that keeps the backend.
type Board struct {
	mu       sync.Mutex
	backends map[metrics.PoolBackend]*record
	interval time.Duration
}

type record struct {
	lastCheck   time.Time
	lastCheckOK bool
	lastErr     string
	lastErrAt   time.Time
	ring        [HistoryLen]int64
	n           int // samples taken, may exceed HistoryLen
}

// NewBoard returns an empty board whose history is sampled every interval
// (the caller runs Sample at that pace).
func NewBoard(interval time.Duration) *Board {
	return &Board{backends: map[metrics.PoolBackend]*record{}, interval: interval}
}

func (bd *Board) rec(poolName, backend string) *record {
	k := metrics.PoolBackend{Pool: poolName, Backend: backend}
	r := bd.backends[k]
	if r == nil {
		r = &record{}
		bd.backends[k] = r
	}
	return r
}

// CheckDone records an active check's result at now; err nil is a pass.
func (bd *Board) CheckDone(poolName, backend string, err error, now time.Time) {
	bd.mu.Lock()
	defer bd.mu.Unlock()
	r := bd.rec(poolName, backend)
	r.lastCheck, r.lastCheckOK = now, err == nil
	if err != nil {
		r.lastErr, r.lastErrAt = err.Error(), now
	}
}

// Failed records an error that was not an active check's, such as the dial
// failure behind a passive ejection.
func (bd *Board) Failed(poolName, backend string, err error, now time.Time) {
	if err == nil {
		return
	}
	bd.mu.Lock()
	defer bd.mu.Unlock()
	r := bd.rec(poolName, backend)
	r.lastErr, r.lastErrAt = err.Error(), now
}

// Sample appends every backend's active count to its history. Backends no
// longer in pools are forgotten, so a reload that removes one frees its entry.
func (bd *Board) Sample(pools map[string]*pool.Pool) {
	bd.mu.Lock()
	defer bd.mu.Unlock()
	seen := make(map[metrics.PoolBackend]bool, len(bd.backends))
	for name, p := range pools {
		for _, b := range p.Backends() {
			k := metrics.PoolBackend{Pool: name, Backend: b.String()}
			seen[k] = true
			r := bd.rec(name, k.Backend)
			r.ring[r.n%HistoryLen] = b.Active()
			r.n++
		}
	}
	for k := range bd.backends {
		if !seen[k] {
			delete(bd.backends, k)
		}
	}
}

// history returns r's samples oldest first.
func (r *record) history() []int64 {
	n := min(r.n, HistoryLen)
	out := make([]int64, 0, n)
	for i := r.n - n; i < r.n; i++ {
		out = append(out, r.ring[i%HistoryLen])
	}
	return out
}

// Sources are the live parts a snapshot is read from. cmd/wslb fills them in
// from the running configuration on every request, so a reload shows at once.
type Sources struct {
	Version   string
	Started   time.Time
	Config    *config.Config
	Pools     map[string]*pool.Pool
	Listeners []*frontend.Listener // in Config.Listeners order
	Metrics   *metrics.Metrics
	Ready     func() (bool, string)
	Draining  bool
}

// Snapshot builds the status at now.
func (bd *Board) Snapshot(src Sources, now time.Time) Snapshot {
	ready, why := src.Ready()
	s := Snapshot{
		Version: src.Version + " (" + runtime.Version() + ")",
		Now:     now, Started: src.Started, Uptime: now.Sub(src.Started).Seconds(),
		Ready: ready, ReadyReason: why, Draining: src.Draining,
		HistoryInterval: bd.interval.Seconds(),
		Listeners:       []Listener{},
		Pools:           []Pool{},
	}
	for i, lc := range src.Config.Listeners {
		l := Listener{
			Name: lc.Name, Mode: lc.Mode, Addrs: slices.Clone(lc.Listen), TLS: lc.TLS != nil,
			Pools: lc.PoolNames(), MaxConnections: lc.MaxConnections, Errors: map[string]uint64{},
		}
		for reason, v := range src.Metrics.ErrorCounts(lc.Name) {
			l.Errors[reason] = uint64(v)
		}
		if i < len(src.Listeners) && src.Listeners[i] != nil {
			l.Addrs = l.Addrs[:0]
			for _, a := range src.Listeners[i].BoundAddrs() {
				l.Addrs = append(l.Addrs, a.String())
			}
			l.Active = src.Listeners[i].Active()
		}
		if len(l.Addrs) > 0 {
			l.Addr = l.Addrs[0]
		}
		s.Listeners = append(s.Listeners, l)
	}
	sums := src.Metrics.Sums()
	bd.mu.Lock()
	defer bd.mu.Unlock()
	for _, pc := range src.Config.Pools {
		p := src.Pools[pc.Name]
		if p == nil {
			continue
		}
		ps := Pool{Name: pc.Name, Balance: pc.Balance, Check: pc.Health.Check, Backends: []Backend{}}
		for _, b := range p.Backends() {
			bs := bd.backend(pc.Name, b, sums, now)
			if bs.Up {
				ps.BackendsUp++
			}
			ps.Active += bs.Active
			s.Totals.ConnectionsTotal += bs.ConnectionsTotal
			s.Totals.RxBytes += bs.RxBytes
			s.Totals.TxBytes += bs.TxBytes
			ps.Backends = append(ps.Backends, bs)
		}
		s.Totals.Active += ps.Active
		s.Pools = append(s.Pools, ps)
	}
	return s
}

// backend describes b; the caller holds bd.mu.
func (bd *Board) backend(poolName string, b *pool.Backend, sums map[metrics.PoolBackend]metrics.BackendSums, now time.Time) Backend {
	sum := sums[metrics.PoolBackend{Pool: poolName, Backend: b.String()}]
	out := Backend{
		Address: b.String(), Name: b.Source(), Held: b.Holds()&pool.HoldVanished != 0,
		State: b.State().String(), AdminState: b.Admin().String(), Up: b.Healthy(), Ejected: b.Ejected(),
		Weight: b.Weight(), EffectiveWeight: b.EffectiveWeight(now), MaxConnections: b.MaxConns(),
		AgentPercent: b.AgentPercent(), AgentDown: b.AgentDown(),
		Active: b.Active(), Idle: b.Idle(),
		ConnectionsTotal: uint64(sum.Conns), RxBytes: uint64(sum.Rx), TxBytes: uint64(sum.Tx),
		History: []int64{},
	}
	if r := bd.backends[metrics.PoolBackend{Pool: poolName, Backend: b.String()}]; r != nil {
		if !r.lastCheck.IsZero() {
			t := r.lastCheck
			out.LastCheck, out.LastCheckOK = &t, r.lastCheckOK
		}
		if r.lastErr != "" {
			t := r.lastErrAt
			out.LastError, out.LastErrorAt = r.lastErr, &t
		}
		out.History = r.history()
	}
	return out
}
