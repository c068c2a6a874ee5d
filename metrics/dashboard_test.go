package metrics

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

const dashboardPath = "../deploy/grafana/wslb.json"

// pendingMetrics are metrics a dashboard change may use before the branch
// that registers them is merged; none now. The test fails while a name here
// is also registered, to say it should go.
var pendingMetrics = []string{}

// TestDashboardMetrics checks that every metric name the Grafana dashboard
// (deploy/grafana/wslb.json) queries, in its panels, variables and
// annotations, is one wslb exposes: a collector of New, the build info, or
// the Go and process collectors; a histogram's or summary's name with its
// _bucket, _sum or _count suffix.
func TestDashboardMetrics(t *testing.T) {
	data, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	queries := dashboardQueries(dash)
	if len(queries) < 15 {
		t.Fatalf("found %d queries in %s; the walk is broken", len(queries), dashboardPath)
	}
	exposed := exposedNames(t)
	name := regexp.MustCompile(`\b(?:wslb|go|process)_[a-z0-9_]+\b`)
	used := map[string]bool{}
	for _, q := range queries {
		names := name.FindAllString(q, -1)
		if len(names) == 0 {
			t.Errorf("query %q uses no wslb, go or process metric", q)
		}
		for _, n := range names {
			used[n] = true
			switch {
			case exposed[n]:
			case slices.Contains(pendingMetrics, n):
			default:
				t.Errorf("query %q uses %s, which wslb does not expose", q, n)
			}
		}
	}
	for _, n := range pendingMetrics {
		if exposed[n] {
			t.Errorf("%s is registered now: remove it from pendingMetrics", n)
		}
		if !used[n] {
			t.Errorf("%s is in pendingMetrics but the dashboard does not use it", n)
		}
	}
}

// dashboardQueries collects every "expr" (panel targets, annotations) and
// every "query" string (template variables) of the dashboard's JSON.
func dashboardQueries(v any) []string {
	var out []string
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && (k == "expr" || (k == "query" && strings.Contains(s, "("))) {
				out = append(out, s)
				continue
			}
			out = append(out, dashboardQueries(x)...)
		}
	case []any:
		for _, x := range v {
			out = append(out, dashboardQueries(x)...)
		}
	}
	return out
}

// exposedNames is every name a query may use: each family New and
// RegisterBuildInfo register (from their descriptions, so vectors with no
// series yet count), with the suffixes of histograms and summaries.
func exposedNames(t *testing.T) map[string]bool {
	t.Helper()
	reg := &recordingRegistry{Registry: prometheus.NewRegistry()}
	New(reg)
	RegisterBuildInfo(reg, "v0")
	kinds := map[string]dto.MetricType{}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		kinds[f.GetName()] = f.GetType()
	}
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	for _, c := range reg.collectors {
		ch := make(chan *prometheus.Desc, 64)
		go func() {
			c.Describe(ch)
			close(ch)
		}()
		for d := range ch {
			m := fqName.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("no fqName in %s", d)
			}
			if _, ok := kinds[m[1]]; ok {
				continue
			}
			switch c.(type) {
			case *prometheus.HistogramVec, prometheus.Histogram:
				kinds[m[1]] = dto.MetricType_HISTOGRAM
			case *prometheus.SummaryVec, prometheus.Summary:
				kinds[m[1]] = dto.MetricType_SUMMARY
			default:
				kinds[m[1]] = dto.MetricType_UNTYPED
			}
		}
	}
	names := map[string]bool{}
	for n, k := range kinds {
		names[n] = true
		switch k {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			names[n+"_bucket"], names[n+"_sum"], names[n+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			names[n+"_sum"], names[n+"_count"] = true, true
		}
	}
	return names
}

// recordingRegistry is a registry that also keeps every collector
// registered on it, to describe them.
type recordingRegistry struct {
	*prometheus.Registry
	collectors []prometheus.Collector
}

func (r *recordingRegistry) Register(c prometheus.Collector) error {
	r.collectors = append(r.collectors, c)
	return r.Registry.Register(c)
}

func (r *recordingRegistry) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}
