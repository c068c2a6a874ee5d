package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// PoolBackend names one backend of one pool.
type PoolBackend struct{ Pool, Backend string }

// BackendSums are one backend's counters summed over every listener.
type BackendSums struct {
	Conns  float64 // wslb_connections_total
	Rx, Tx float64 // wslb_bytes_total by direction
}

// Sums reads wslb_connections_total and wslb_bytes_total and sums them per
// pool and backend, for the status page: reading the counters themselves
// keeps it and /metrics in step. It walks every series, so it is meant for a
// page refreshed once a second, not a hot path.
func (m *Metrics) Sums() map[PoolBackend]BackendSums {
	out := map[PoolBackend]BackendSums{}
	each(m.ConnectionsTotal, func(l map[string]string, v float64) {
		k := PoolBackend{l["pool"], l["backend"]}
		s := out[k]
		s.Conns += v
		out[k] = s
	})
	each(m.Bytes, func(l map[string]string, v float64) {
		k := PoolBackend{l["pool"], l["backend"]}
		s := out[k]
		if l["direction"] == Rx {
			s.Rx += v
		} else {
			s.Tx += v
		}
		out[k] = s
	})
	return out
}

// each calls f with the labels and value of every counter series of c.
func each(c prometheus.Collector, f func(labels map[string]string, v float64)) {
	ch := make(chan prometheus.Metric, 64)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	var d dto.Metric
	for m := range ch {
		d.Reset()
		if m.Write(&d) != nil || d.Counter == nil {
			continue
		}
		l := make(map[string]string, len(d.Label))
		for _, p := range d.Label {
			l[p.GetName()] = p.GetValue()
		}
		f(l, d.Counter.GetValue())
	}
}

// ErrorCounts reads every wslb_errors_total series of listener, by reason
// word: for the status page, and for tests that check no other reason moved.
func (m *Metrics) ErrorCounts(listener string) map[string]float64 {
	out := map[string]float64{}
	each(m.Errors, func(l map[string]string, v float64) {
		if l["listener"] == listener {
			out[l["reason"]] = v
		}
	})
	return out
}
