package config

import (
	"reflect"
	"time"
)

// The defaults below are DESIGN.md's config block, block by block. Each is a
// function rather than a variable so that every listener and pool gets its own
// slices and maps, and the package keeps no mutable state.

func defaultConfig() Config {
	return Config{
		Workers: 0, // GOMAXPROCS
		Shutdown: Shutdown{
			DrainTimeout: 30 * time.Second,
			CloseSpread:  5 * time.Second,
		},
		Admin: Admin{Listen: "127.0.0.1:9090"},
		Resolver: Resolver{
			Servers:  []string{}, // the system's resolver
			Interval: 5 * time.Second,
			Timeout:  2 * time.Second,
			Hold:     30 * time.Second,
		},
	}
}

// defaultListener has no Mode: mode is required. Its HTTP block is added only
// for l7 listeners, see applyDefaults.
func defaultListener() Listener {
	return Listener{
		MaxConnections:      0, // unlimited
		ProxyProtocol:       "",
		AcceptProxyProtocol: false,
		Timeouts: Timeouts{
			Connect:    5 * time.Second,
			Handshake:  10 * time.Second,
			Idle:       time.Hour,
			Keepalive:  75 * time.Second,
			Send:       60 * time.Second,
			ClientBody: 60 * time.Second,
		},
	}
}

// defaultTLS applies only when a listener has a tls block.
func defaultTLS() TLS {
	return TLS{MinVersion: "1.2", RedirectHTTP: true, HTTP2: true}
}

// defaultACME applies only when a listener's tls has an acme block.
func defaultACME() ACME {
	return ACME{
		Email:     "",
		Directory: "https://acme-v02.api.letsencrypt.org/directory",
		CA:        "",
		Cache:     "acme",
	}
}

func defaultHTTP() HTTP {
	return HTTP{
		MaxHeaderBytes:   32768,
		MaxBodyBytes:     1 << 30,
		MinBodyRate:      240,
		ForwardedHeaders: true,
		Forwarded:        false,
		TrustedProxies:   []string{},
		PreserveHost:     true,
		RedirectHTTPS:    false,
		HTTPSPort:        443,
		RedirectCode:     308,
		RequestHeaders:   map[string]string{},
		ResponseHeaders:  map[string]string{},
		UpgradeProtocols: []string{"websocket"},
	}
}

// defaultRoute gives a static route the fallback of
// `try_files $uri $uri/ /index.html`; a pool route has none.
func defaultRoute(static bool) Route {
	r := Route{StripPrefix: false, RewritePrefix: ""}
	if static {
		r.Fallback = "/index.html"
	}
	return r
}

func defaultPool() Pool {
	return Pool{
		Balance:                  BalanceLeastConn,
		IdlePerWorker:            32,
		MaxConnectionsPerBackend: 0, // unlimited
		SlowStart:                0,
		MaxConnectionAge:         0, // off
		Rebalance:                Rebalance{Enabled: false, Tolerance: 0.2, Rate: 10},
		Health: Health{
			Check:        CheckTCP,
			Path:         "/healthz",
			ExpectStatus: 200,
			Interval:     2 * time.Second,
			Timeout:      time.Second,
			Rise:         2,
			Fall:         3,
			Agent:        Agent{Port: 0, Interval: 5 * time.Second, Send: ""},
		},
		Passive: Passive{
			MaxFails:    3,
			FailTimeout: 10 * time.Second,
		},
	}
}

// defaultBackendTLS applies only when a pool has a tls block: verify against
// the system's roots and each backend's own name, no client certificate.
func defaultBackendTLS() BackendTLS {
	return BackendTLS{ServerName: "", CA: "", InsecureSkipVerify: false, Cert: "", Key: ""}
}

func defaultBackend() Backend {
	return Backend{Weight: 1}
}

// applyDefaults gives every key the file left out its default. A key that is
// present keeps its value even when it is zero: validation judges it.
func applyDefaults(c *Config, idx index) {
	fill(c, defaultConfig(), "", idx)
	for i := range c.Listeners {
		l, p := &c.Listeners[i], item("listeners", i)
		def := defaultListener()
		if l.Mode == ModeL7 {
			def.HTTP = defaultHTTP()
		}
		fill(l, def, p, idx)
		if l.TLS != nil {
			fill(l.TLS, defaultTLS(), key(p, "tls"), idx)
			if l.TLS.ACME != nil {
				fill(l.TLS.ACME, defaultACME(), key(key(p, "tls"), "acme"), idx)
			}
		}
		for j := range l.Routes {
			r := &l.Routes[j]
			fill(r, defaultRoute(r.Static != ""), item(key(p, "routes"), j), idx)
		}
	}
	for i := range c.Pools {
		pl, p := &c.Pools[i], item("pools", i)
		fill(pl, defaultPool(), p, idx)
		if pl.TLS != nil {
			fill(pl.TLS, defaultBackendTLS(), key(p, "tls"), idx)
		}
		for j := range pl.Backends {
			fill(&pl.Backends[j], defaultBackend(), item(key(p, "backends"), j), idx)
		}
	}
}

// fill copies from def every field of dst whose key is absent under path, descending into nested blocks. Optional
// blocks (pointers) and lists of blocks are left to applyDefaults, since their
// defaults depend on where they are.
func fill[T any](dst *T, def T, path string, idx index) {
	fillValue(reflect.ValueOf(dst).Elem(), reflect.ValueOf(&def).Elem(), path, idx)
}

func fillValue(dst, def reflect.Value, path string, idx index) {
	t := dst.Type()
	for i := range t.NumField() {
		name := yamlName(t.Field(i))
		if name == "" {
			continue
		}
		p, f := key(path, name), dst.Field(i)
		switch {
		case f.Kind() == reflect.Struct:
			fillValue(f, def.Field(i), p, idx)
		case f.Kind() == reflect.Pointer:
		case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.Struct:
		case !idx.isSet(p):
			f.Set(def.Field(i))
		}
	}
}
