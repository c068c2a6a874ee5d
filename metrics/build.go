package metrics

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
)

// RegisterBuildInfo registers wslb_build_info{version, goversion} on reg,
// always 1: the Prometheus convention by which a query joins the running
// version onto any other series, and a dashboard sees a rollout.
func RegisterBuildInfo(reg prometheus.Registerer, version string) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "wslb_build_info",
		Help:        "Always 1; its labels say which wslb build runs and with which Go.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	g.Set(1)
	reg.MustRegister(g)
}
