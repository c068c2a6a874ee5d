package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Errors are one listener's wslb_errors_total children, one per reason word,
// fetched once per listener configuration so a failure costs no label lookup.
type Errors struct {
	NoBackend, Dial, Timeout, BadRequest, BadHandshake, BadUpgradeResponse,
	TLS, Limit, ProxyProtocol prometheus.Counter
}

// ListenerErrors returns the error counters of listener. Every reason's
// series exists from then on, at 0, so alerts see it before it first fires.
func (m *Metrics) ListenerErrors(listener string) Errors {
	e := func(reason string) prometheus.Counter { return m.Errors.WithLabelValues(listener, reason) }
	return Errors{
		NoBackend:          e("no_backend"),
		Dial:               e("dial"),
		Timeout:            e("timeout"),
		BadRequest:         e("bad_request"),
		BadHandshake:       e("bad_handshake"),
		BadUpgradeResponse: e("bad_upgrade_response"),
		TLS:                e("tls"),
		Limit:              e("limit"),
		ProxyProtocol:      e("proxy_protocol"),
	}
}

// Conn is the series one l4 conn, tunnel or plain request updates once its
// backend is known. It is fetched once per conn (never per read).
type Conn struct {
	Total  prometheus.Counter // wslb_connections_total
	Active prometheus.Gauge   // wslb_connections_active
	Rx, Tx prometheus.Counter // wslb_bytes_total by direction
}

// Conn returns the series of a conn that listener sends to backend of pool.
func (m *Metrics) Conn(listener, pool, backend string) Conn {
	return Conn{
		Total:  m.ConnectionsTotal.WithLabelValues(listener, pool, backend),
		Active: m.ConnectionsActive.WithLabelValues(listener, pool, backend),
		Rx:     m.Bytes.WithLabelValues(listener, pool, backend, Rx),
		Tx:     m.Bytes.WithLabelValues(listener, pool, backend, Tx),
	}
}

// Open counts the conn as established and active; call the returned func
// when it ends, so the gauge returns to its prior value whoever ends it.
func (c Conn) Open() (done func()) {
	c.Total.Inc()
	c.Active.Inc()
	return c.Active.Dec
}

// TunnelEnded records a finished tunnel or l4 conn: how long it lived and the
// reason word for who or what closed it.
func (m *Metrics) TunnelEnded(listener, pool, reason string, lived time.Duration) {
	m.TunnelDuration.WithLabelValues(listener, pool).Observe(lived.Seconds())
	m.TunnelsClosed.WithLabelValues(listener, pool, reason).Inc()
}
