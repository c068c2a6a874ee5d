// Package admin serves the admin listener: /metrics, /healthz, /readyz,
// /status.json and the /status page (admin.go); the /api/v1 write API and
// its token and CSRF rules (api.go); its limits, so that it can
// neither starve the proxied conns nor be held forever (listener.go); and
// the Host check that keeps a loopback listener from DNS rebinding (host.go).
package admin

import (
	_ "embed"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/status"
)

// statusPage is the /status page: one self-contained file (inline CSS and
// script, no external assets) that redraws itself from /status.json.
//
//go:embed status.html
var statusPage []byte

// Options are what the admin routes read.
type Options struct {
	// Gatherer is scraped on every /metrics request.
	Gatherer prometheus.Gatherer
	// Ready reports whether the process should receive traffic, and why
	// not; it is called on every /readyz request.
	Ready func() (bool, string)
	// Status builds /status.json; it is called on every request.
	Status func() status.Snapshot
	// Addr is the bound address; on loopback, requests must name it or
	// localhost (checkHost). nil: no check. Loopback and unix socket
	// listeners take writes without a token.
	Addr net.Addr

	// Pools are the running pools by name, which the write API changes.
	Pools func() map[string]*pool.Pool
	// Rebalance starts rebalancing a pool now and returns how many tunnels
	// will be moved (POST /api/v1/pools/{pool}/rebalance).
	Rebalance func(pool string) (int, error)
	// Token is the bearer token every /api/ request must carry; "" is
	// none. It is called per request, so a reload's token applies at once.
	Token func() string
	// Log records every change made through the write API; nil is none.
	Log *slog.Logger
}

// Handler returns the admin routes.
func Handler(o Options) http.Handler {
	mux := routes(o)
	if o.Addr != nil && loopback(o.Addr) {
		return checkHost(mux, o.Addr.String())
	}
	return mux
}

// routes are the admin routes, whatever the Host.
func routes(o Options) *http.ServeMux {
	mux := http.NewServeMux()
	a := &api{o: o, local: o.Addr != nil && local(o.Addr), log: o.Log}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.routes(mux)
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		ok, why := o.Ready()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		w.Write([]byte(why + "\n"))
	})
	mux.HandleFunc("GET /status.json", func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "no-store")
		s := o.Status()
		s.Writes = a.writes()
		json.NewEncoder(w).Encode(s)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		// The page may only talk to this listener: a status page that can
		// load remote code is one more way in.
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src data:")
		w.Write(statusPage)
	})
	mux.Handle("GET /{$}", http.RedirectHandler("/status", http.StatusFound))
	return mux
}
