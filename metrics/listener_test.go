package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestConnOpenAndTunnelEnded(t *testing.T) {
	m := New(prometheus.NewRegistry())
	c := m.Conn("l", "p", "127.0.0.1:1")
	done := c.Open()
	if testutil.ToFloat64(c.Active) != 1 || testutil.ToFloat64(c.Total) != 1 {
		t.Fatal("Open did not count the conn")
	}
	done()
	if testutil.ToFloat64(c.Active) != 0 || testutil.ToFloat64(c.Total) != 1 {
		t.Fatal("the gauge did not return to its prior value")
	}
	m.TunnelEnded("l", "p", "client", time.Minute)
	if got := testutil.ToFloat64(m.TunnelsClosed.WithLabelValues("l", "p", "client")); got != 1 {
		t.Fatalf("tunnels_closed = %v", got)
	}
	e := m.ListenerErrors("l")
	e.Dial.Inc()
	if got := testutil.ToFloat64(m.Errors.WithLabelValues("l", "dial")); got != 1 {
		t.Fatalf("errors_total{dial} = %v", got)
	}
	if got := testutil.CollectAndCount(m.Errors); got != 9 {
		t.Fatalf("%d error series for one listener, want every reason (9)", got)
	}
}
