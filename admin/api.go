package admin

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/status"
)

// The write API's answers to Snapshot.Writes: whether a client may change
// anything, which the status page shows its buttons by.
const (
	WritesOpen      = "open"      // no token, loopback or unix socket
	WritesToken     = "token"     // with the bearer token
	WritesForbidden = "forbidden" // no token on a listener others can reach
)

// maxBody bounds a write's JSON body: {"state": "maint"} is 18 bytes.
const maxBody = 4 << 10

// api serves /api/v1: the pools, a backend's admin state, rebalancing.
type api struct {
	o     Options
	local bool // the listener is loopback or a unix socket
	log   *slog.Logger
}

// routes adds the /api/ routes to mux, behind the CSRF check and the
// token check: a page on another site must not be able to drain a backend
// through the browser of someone on this host.
func (a *api) routes(mux *http.ServeMux) {
	api := http.NewServeMux()
	api.HandleFunc("GET /api/v1/pools", a.pools)
	api.HandleFunc("PUT /api/v1/pools/{pool}/backends/{backend}/state", a.setState)
	api.HandleFunc("POST /api/v1/pools/{pool}/rebalance", a.rebalance)
	api.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		jsonError(w, http.StatusNotFound, "no API route %s %s: the routes are GET /api/v1/pools, "+
			"PUT /api/v1/pools/{pool}/backends/{ip:port}/state and POST /api/v1/pools/{pool}/rebalance", r.Method, r.URL.Path)
	})
	csrf := http.NewCrossOriginProtection()
	csrf.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		jsonError(w, http.StatusForbidden, "cross-origin request refused: call the API from the status page of this listener, curl or wslb ctl")
	}))
	mux.Handle("/api/", csrf.Handler(a.guard(api)))
}

// writes is what this listener allows a client without a token, or that
// it needs one.
func (a *api) writes() string {
	switch {
	case a.token() != "":
		return WritesToken
	case a.local:
		return WritesOpen
	}
	return WritesForbidden
}

func (a *api) token() string {
	if a.o.Token == nil {
		return ""
	}
	return a.o.Token()
}

// guard applies DESIGN's rules: with a token, every /api/ request must
// carry it (401 otherwise); without one, writes are refused (403) unless
// the listener is loopback or a unix socket.
func (a *api) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch a.writes() {
		case WritesToken:
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			// Constant time, so the answer's timing says nothing about how
			// much of a guess was right.
			if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(a.token())) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="wslb admin"`)
				msg := "missing token: send Authorization: Bearer TOKEN with the token from admin.token_file"
				if ok {
					msg = "wrong token: send the one in admin.token_file"
				}
				jsonError(w, http.StatusUnauthorized, "%s", msg)
				return
			}
		case WritesForbidden:
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				jsonError(w, http.StatusForbidden, "writes are refused on an admin listener that is neither loopback nor a unix socket "+
					"without a token: set admin.token_file, or listen on 127.0.0.1 or unix:PATH")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// pools is GET /api/v1/pools: the pools and backends as in /status.json.
func (a *api) pools(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, struct {
		Pools []status.Pool `json:"pools"`
	}{a.o.Status().Pools})
}

// setState is PUT .../backends/{backend}/state with {"state": WORD}.
func (a *api) setState(w http.ResponseWriter, r *http.Request) {
	p, ok := a.pool(w, r.PathValue("pool"))
	if !ok {
		return
	}
	addr := r.PathValue("backend")
	b, ok := p.Backend(addr)
	if !ok {
		names := make([]string, 0, len(p.Backends()))
		for _, b := range p.Backends() {
			names = append(names, b.String())
		}
		jsonError(w, http.StatusNotFound, "pool %s has no backend %q (its backends: %s)", p.Name(), addr, list(names))
		return
	}
	var body struct {
		State *string `json:"state"`
	}
	if err := decodeBody(w, r, &body); err != nil {
		jsonError(w, http.StatusBadRequest, "%v: send {\"state\": \"drain\"} (ready, drain or maint)", err)
		return
	}
	if body.State == nil {
		jsonError(w, http.StatusBadRequest, "the body has no \"state\": send {\"state\": \"drain\"} (ready, drain or maint)")
		return
	}
	s, err := pool.ParseAdmin(*body.State)
	if err != nil {
		jsonError(w, http.StatusBadRequest, "%v", err)
		return
	}
	prev := b.SetAdmin(s)
	a.log.Info("backend state set through the admin API", "pool", p.Name(), "backend", b.String(),
		"state", s.String(), "was", prev.String(), "client", r.RemoteAddr)
	for _, ps := range a.o.Status().Pools {
		if ps.Name != p.Name() {
			continue
		}
		if i := slices.IndexFunc(ps.Backends, func(x status.Backend) bool { return x.Address == b.String() }); i >= 0 {
			writeJSON(w, http.StatusOK, ps.Backends[i])
			return
		}
	}
	// A reload removed it between the two reads: the state was set on
	// a backend that is gone.
	jsonError(w, http.StatusNotFound, "backend %s left pool %s while its state was set", b.String(), p.Name())
}

// rebalance is POST /api/v1/pools/{pool}/rebalance.
func (a *api) rebalance(w http.ResponseWriter, r *http.Request) {
	p, ok := a.pool(w, r.PathValue("pool"))
	if !ok {
		return
	}
	n, err := a.o.Rebalance(p.Name())
	if err != nil {
		jsonError(w, http.StatusNotFound, "%v", err)
		return
	}
	a.log.Info("rebalance started through the admin API", "pool", p.Name(), "moving", n, "client", r.RemoteAddr)
	writeJSON(w, http.StatusAccepted, struct {
		Moving int `json:"moving"`
	}{n})
}

// pool finds the running pool name, or answers 404 naming the pools.
func (a *api) pool(w http.ResponseWriter, name string) (*pool.Pool, bool) {
	var pools map[string]*pool.Pool
	if a.o.Pools != nil {
		pools = a.o.Pools()
	}
	if p := pools[name]; p != nil {
		return p, true
	}
	names := make([]string, 0, len(pools))
	for n := range pools {
		names = append(names, n)
	}
	slices.Sort(names)
	jsonError(w, http.StatusNotFound, "no pool named %q (pools: %s)", name, list(names))
	return nil, false
}

// decodeBody reads one JSON object into v, strictly: unknown fields, a
// second value and more than maxBody bytes are errors.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("empty body")
		}
		return fmt.Errorf("bad JSON body: %v", err)
	}
	if dec.More() {
		return errors.New("bad JSON body: more than one value")
	}
	return nil
}

func list(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// jsonError answers code with {"error": MESSAGE}.
func jsonError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, struct {
		Error string `json:"error"`
	}{fmt.Sprintf(format, args...)})
}

// local reports whether addr, a bound address, is loopback or a unix
// socket: only processes on this host can reach it.
func local(addr net.Addr) bool {
	if _, ok := addr.(*net.UnixAddr); ok {
		return true
	}
	return loopback(addr)
}
