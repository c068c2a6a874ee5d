// Package metrics defines every wslb_* Prometheus collector (DESIGN.md's
// metrics table) on a registry the caller passes in; nothing is global.
//
// Handlers fetch label children once per conn (WithLabelValues), never per read.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics holds the collectors. Label names are in each field's comment.
type Metrics struct {
	ConnectionsActive *prometheus.GaugeVec   // listener, pool, backend
	ConnectionsTotal  *prometheus.CounterVec // listener, pool, backend
	// ConnectionsAccepted counts every conn a listener accepted, before any
	// limit may refuse it: the reconnect rate is its rate().
	ConnectionsAccepted *prometheus.CounterVec   // listener
	Upgrades            *prometheus.CounterVec   // listener, pool
	HTTPRequests        *prometheus.CounterVec   // listener, pool, code
	Bytes               *prometheus.CounterVec   // listener, pool, backend, direction
	BackendUp           *prometheus.GaugeVec     // pool, backend
	BackendConnect      *prometheus.HistogramVec // pool, backend
	Handshake           *prometheus.HistogramVec // listener
	IdleConnections     *prometheus.GaugeVec     // pool, backend
	TunnelDuration      *prometheus.HistogramVec // listener, pool
	TunnelsClosed       *prometheus.CounterVec   // listener, pool, reason
	Errors              *prometheus.CounterVec   // listener, reason
	HealthChecks        *prometheus.CounterVec   // pool, backend, result
	AgentChecks         *prometheus.CounterVec   // pool, backend, result
	BackendWeight       *prometheus.GaugeVec     // pool, backend
	ConfigReloads       *prometheus.CounterVec   // result
	DNSLookups          *prometheus.CounterVec   // pool, result
	Backends            *prometheus.GaugeVec     // pool
	BackendState        *prometheus.GaugeVec     // pool, backend, state
}

// Direction label values of wslb_bytes_total.
const (
	Rx = "rx" // from the client
	Tx = "tx" // to the client
)

// tunnelBuckets reach days: WebSocket tunnels routinely live that long, and a
// histogram that tops out at minutes hides exactly the conns a drain cuts.
var tunnelBuckets = []float64{1, 10, 60, 300, 1800, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400}

// New registers every collector on reg, plus the Go and process collectors.
func New(reg prometheus.Registerer) *Metrics {
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := promauto.With(reg)
	m := &Metrics{
		ConnectionsActive: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wslb_connections_active",
			Help: "Connections a backend is serving for clients right now: l4 conns, WebSocket tunnels and in-flight plain requests.",
		}, []string{"listener", "pool", "backend"}),
		ConnectionsTotal: f.NewCounterVec(prometheus.CounterOpts{
			Name: "wslb_connections_total",
			Help: "Connections established to a backend for clients.",
		}, []string{"listener", "pool", "backend"}),
		ConnectionsAccepted: f.NewCounterVec(prometheus.CounterOpts{
			Name: "wslb_connections_accepted_total",
			Help: "Connections a listener accepted from clients, those refused by a limit included.",
		}, []string{"listener"}),
		Upgrades: f.NewCounterVec(prometheus.CounterOpts{
			Name: "wslb_upgrades_total",
			Help: "Upgrade requests that became tunnels (101 relayed).",
		}, []string{"listener", "pool"}),
		HTTPRequests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "wslb_http_requests_total",
			Help: "HTTP requests answered, by status code.",
		}, []string{"listener", "pool", "code"}),
		Bytes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "wslb_bytes_total",
			Help: "Bytes relayed; direction rx is from the client, tx is to the client.",
		}, []string{"listener", "pool", "backend", "direction"}),
		Handshake: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wslb_handshake_seconds",
			Help:    "Time from accept to the first response byte relayed.",
			Buckets: prometheus.DefBuckets,
		}, []string{"listener"}),
		TunnelDuration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wslb_tunnel_duration_seconds",
			Help:    "Lifetime of tunnels and l4 conns, from the 101 or the l4 connect to the close.",
			Buckets: tunnelBuckets,
		}, []string{"listener", "pool"}),
		TunnelsClosed: f.NewCounterVec(prometheus.CounterOpts{
			Name: "wslb_tunnels_closed_total",
			Help: "Tunnels and l4 conns closed, by who or what closed them.",
		}, []string{"listener", "pool", "reason"}),
		Errors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "wslb_errors_total",
			Help: "Failures seen by a listener, by reason.",
		}, []string{"listener", "reason"}),
		ConfigReloads: f.NewCounterVec(prometheus.CounterOpts{
			Name: "wslb_config_reloads_total",
			Help: "Configuration reloads, by result (ok, rejected).",
		}, []string{"result"}),
	}
	backendMetrics(f, m)
	// A vec with no series is missing from the exposition; alerts on
	// rejected reloads need the series at 0 from the start.
	m.ConfigReloads.WithLabelValues("ok")
	m.ConfigReloads.WithLabelValues("rejected")
	return m
}

// backendMetrics makes the series about backends and their checks: New's
// other half.
func backendMetrics(f promauto.Factory, m *Metrics) {
	m.BackendUp = f.NewGaugeVec(prometheus.GaugeOpts{
		Name: "wslb_backend_up",
		Help: "1 when the backend may take new connections, else 0.",
	}, []string{"pool", "backend"})
	m.BackendConnect = f.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "wslb_backend_connect_seconds",
		Help:    "Time to dial a backend, successful or not.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"pool", "backend"})
	m.IdleConnections = f.NewGaugeVec(prometheus.GaugeOpts{
		Name: "wslb_idle_connections",
		Help: "Idle keep-alive connections cached per backend, all workers together.",
	}, []string{"pool", "backend"})
	m.HealthChecks = f.NewCounterVec(prometheus.CounterOpts{
		Name: "wslb_health_checks_total",
		Help: "Active health checks run, by result.",
	}, []string{"pool", "backend", "result"})
	m.AgentChecks = f.NewCounterVec(prometheus.CounterOpts{
		Name: "wslb_agent_checks_total",
		Help: "Agent checks run, by result (ok: the agent answered a line; fail: no connection, no answer or a timeout).",
	}, []string{"pool", "backend", "result"})
	m.BackendWeight = f.NewGaugeVec(prometheus.GaugeOpts{
		Name: "wslb_backend_weight",
		Help: "The backend's effective weight: its configured weight as its agent scales it and slow start ramps it.",
	}, []string{"pool", "backend"})
	m.DNSLookups = f.NewCounterVec(prometheus.CounterOpts{
		Name: "wslb_dns_lookups_total",
		Help: "DNS lookups of a pool's backend names, by result (ok: an answer, NXDOMAIN and empty ones included; error: failed).",
	}, []string{"pool", "result"})
	m.Backends = f.NewGaugeVec(prometheus.GaugeOpts{
		Name: "wslb_backends",
		Help: "Backends a pool has now, in any state (held ones included).",
	}, []string{"pool"})
	m.BackendState = f.NewGaugeVec(prometheus.GaugeOpts{
		Name: "wslb_backend_state",
		Help: "A backend's operator state: 1 for the current one of ready, drain and maint, 0 for the others.",
	}, []string{"pool", "backend", "state"})
}
