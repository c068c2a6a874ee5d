// Package status builds what the admin listener's /status.json serves and the
// /status page draws: every listener, pool and backend with its live counts,
// health and a short history of its connection count.
//
// Counts are read from the same places the proxies update (pool.Backend
// atomics, frontend.Listener, the metrics counters), so the page and
// /metrics never disagree.
package status

import "time"

// Snapshot is the whole of /status.json. Field names are part of the admin
// API: dashboards and scripts read them.
type Snapshot struct {
	Version     string     `json:"version"`
	Now         time.Time  `json:"now"`
	Started     time.Time  `json:"started"`
	Uptime      float64    `json:"uptime_seconds"`
	Ready       bool       `json:"ready"`
	ReadyReason string     `json:"ready_reason"`
	Draining    bool       `json:"draining"`
	Totals      Totals     `json:"totals"`
	Listeners   []Listener `json:"listeners"`
	Pools       []Pool     `json:"pools"`
	// HistoryInterval is the spacing of Backend.History samples, in seconds.
	HistoryInterval float64 `json:"history_interval_seconds"`
	// Writes says whether this client may use the write API (the page
	// shows its buttons by it): "open", "token" (with a bearer token) or
	// "forbidden". The admin listener fills it in per request.
	Writes string `json:"writes"`
}

// Totals sum every backend of every pool.
type Totals struct {
	Active           int64  `json:"active"`
	ConnectionsTotal uint64 `json:"connections_total"`
	RxBytes          uint64 `json:"rx_bytes"`
	TxBytes          uint64 `json:"tx_bytes"`
}

// Listener is one configured listener.
type Listener struct {
	Name           string   `json:"name"`
	Mode           string   `json:"mode"`
	Addr           string   `json:"addr"`  // the first of Addrs
	Addrs          []string `json:"addrs"` // bound, one per address of listen
	TLS            bool     `json:"tls"`
	Pools          []string `json:"pools"`
	Active         int64    `json:"active"` // client conns open on it right now
	MaxConnections int      `json:"max_connections"`
	// Errors is wslb_errors_total of the listener, every reason word.
	Errors map[string]uint64 `json:"errors"`
}

// Pool is one pool and its backends, in configuration order.
type Pool struct {
	Name       string    `json:"name"`
	Balance    string    `json:"balance"`
	Check      string    `json:"check"`
	BackendsUp int       `json:"backends_up"`
	Active     int64     `json:"active"`
	Backends   []Backend `json:"backends"`
}

// Backend is one backend of a pool.
type Backend struct {
	Address string `json:"address"`
	// Name is the DNS name the address came from (a hostname backend, an
	// SRV or A/AAAA discovery entry); "" for an address written as an IP.
	Name string `json:"name"`
	// Held: the address vanished from the DNS answers; the backend takes no
	// new conns while its own run on, until resolver.hold has passed.
	Held bool `json:"held"`
	// State is the active checks' verdict: up, down or unknown (never checked).
	State string `json:"state"`
	// AdminState is the operator's (or agent's) state: ready, drain (no new
	// conns) or maint (no new conns, its tunnels closed).
	AdminState string `json:"admin_state"`
	// Up is what wslb_backend_up says: it may take new conns (healthy, not
	// passively ejected, not removed).
	Up      bool `json:"up"`
	Ejected bool `json:"ejected"`
	Weight  int  `json:"weight"`
	// EffectiveWeight is Weight as the agent's percentage scales it and slow
	// start ramps it: 0.5 for 50% of weight 1.
	EffectiveWeight float64 `json:"effective_weight"`
	// AgentPercent is the percentage of Weight the backend's agent last
	// reported (100 with no agent check, or before its first answer);
	// AgentDown, that the agent said down (or stopped, fail).
	AgentPercent   int   `json:"agent_percent"`
	AgentDown      bool  `json:"agent_down"`
	MaxConnections int   `json:"max_connections"` // 0: no limit
	Active         int64 `json:"active"`
	Idle           int64 `json:"idle"`
	// ConnectionsTotal, RxBytes and TxBytes sum every listener's series.
	ConnectionsTotal uint64 `json:"connections_total"`
	RxBytes          uint64 `json:"rx_bytes"`
	TxBytes          uint64 `json:"tx_bytes"`
	// LastCheck is when the last active check finished; nil before the first.
	LastCheck   *time.Time `json:"last_check"`
	LastCheckOK bool       `json:"last_check_ok"`
	// LastError is the last failed check's or dial's error, kept after the
	// backend recovers so an operator can see what happened; "" if none yet.
	LastError   string     `json:"last_error"`
	LastErrorAt *time.Time `json:"last_error_at"`
	// History holds the active count sampled every HistoryInterval, oldest
	// first, ending with the latest sample.
	History []int64 `json:"history"`
}
