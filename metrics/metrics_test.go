package metrics

import (
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// TestExpositionLints touches one child of every vector so each family is
// exposed, then runs promlint over the whole registry.
func TestExpositionLints(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.ConnectionsActive.WithLabelValues("l", "p", "127.0.0.1:1").Inc()
	m.ConnectionsTotal.WithLabelValues("l", "p", "127.0.0.1:1").Inc()
	m.Upgrades.WithLabelValues("l", "p").Inc()
	m.HTTPRequests.WithLabelValues("l", "p", "101").Inc()
	m.Bytes.WithLabelValues("l", "p", "127.0.0.1:1", Rx).Add(3)
	m.BackendUp.WithLabelValues("p", "127.0.0.1:1").Set(1)
	m.BackendConnect.WithLabelValues("p", "127.0.0.1:1").Observe(0.001)
	m.Handshake.WithLabelValues("l").Observe(0.01)
	m.IdleConnections.WithLabelValues("p", "127.0.0.1:1").Set(2)
	m.TunnelDuration.WithLabelValues("l", "p").Observe(3600)
	m.TunnelsClosed.WithLabelValues("l", "p", "client").Inc()
	m.Errors.WithLabelValues("l", "limit").Inc()
	m.HealthChecks.WithLabelValues("p", "127.0.0.1:1", "ok").Inc()
	m.AgentChecks.WithLabelValues("p", "127.0.0.1:1", "ok").Inc()
	m.BackendWeight.WithLabelValues("p", "127.0.0.1:1").Set(0.5)
	m.ConfigReloads.WithLabelValues("ok").Inc()
	m.DNSLookups.WithLabelValues("p", "ok").Inc()
	m.Backends.WithLabelValues("p").Set(3)

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var wslb int
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "wslb_") {
			wslb++
		}
	}
	if wslb != 18 {
		t.Fatalf("%d wslb_ families, want the 16 of DESIGN.md and the agent check's 2", wslb)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func TestBuildInfo(t *testing.T) {
	reg := prometheus.NewRegistry()
	RegisterBuildInfo(reg, "v1.2.3")
	want := `# HELP wslb_build_info Always 1; its labels say which wslb build runs and with which Go.
# TYPE wslb_build_info gauge
wslb_build_info{goversion="` + runtime.Version() + `",version="v1.2.3"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "wslb_build_info"); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}
