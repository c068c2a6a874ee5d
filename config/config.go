// Package config holds wslb's configuration: the typed structs that every other
// package reads, and Load, which decodes config.yaml strictly, applies defaults,
// resolves go-sockaddr templates and reports every problem with its line.
//
// Read load.go for decoding, defaults.go for the defaults, validate.go for the rules
// (names.go for backend names, discovery entries and the resolver block).
package config

import (
	"net/netip"
	"slices"
	"time"
)

// Config is a whole config.yaml after defaults and template resolution.
type Config struct {
	// Workers is the number of accept loops per listener; 0 means GOMAXPROCS.
	Workers   int        `yaml:"workers"`
	Shutdown  Shutdown   `yaml:"shutdown"`
	Admin     Admin      `yaml:"admin"`
	Resolver  Resolver   `yaml:"resolver"`
	Listeners []Listener `yaml:"listeners"`
	Pools     []Pool     `yaml:"pools"`

	// File is the path the configuration was read from, for messages.
	File string `yaml:"-"`
}

// Shutdown controls the drain on SIGTERM/SIGINT.
type Shutdown struct {
	// DrainTimeout is how long established conns may run on after accepting stops.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// CloseSpread is the window over which the conns still open after DrainTimeout
	// are closed, so that their clients do not all reconnect at once; 0 closes at once.
	CloseSpread time.Duration `yaml:"close_spread"`
}

// Admin is the admin listener (/metrics, /healthz, /readyz, /status).
type Admin struct {
	// Listen is the resolved host:port, or unix:PATH for a unix socket
	// (PATH resolved against the config file's folder by Load); empty
	// disables the admin listener.
	Listen string `yaml:"listen"`
	// TokenFile holds the bearer token the /api/ routes require; "" is
	// none. Load resolves it against the config file's folder and reads it.
	TokenFile string `yaml:"token_file"`
	// Token is TokenFile's content without its surrounding white space,
	// read by Load (Parse reads no file); "" when TokenFile is.
	Token string `yaml:"-" json:"-"`
}

// Resolver is how backend names (hostnames and discovery entries) are looked up.
type Resolver struct {
	// Servers are the DNS servers (ip:port) asked in turn; empty means the
	// system's resolver (/etc/resolv.conf, /etc/hosts).
	Servers []string `yaml:"servers"`
	// Interval is how often every name is looked up again.
	Interval time.Duration `yaml:"interval"`
	// Timeout bounds one lookup, every server tried included.
	Timeout time.Duration `yaml:"timeout"`
	// Hold is how long an address that vanished from the answers keeps its
	// backend (taking no new conns) before it is removed.
	Hold time.Duration `yaml:"hold"`
}

// Mode values for Listener.Mode.
const (
	ModeL4 = "l4"
	ModeL7 = "l7"
)

// Listener is one entry of listeners.
type Listener struct {
	Name string `yaml:"name"`
	// Listen is every address to bind, resolved (templates already
	// expanded): the file gives one or a list.
	Listen         Addrs  `yaml:"listen"`
	Mode           string `yaml:"mode"`
	Pool           string `yaml:"pool"`
	MaxConnections int    `yaml:"max_connections"`
	// MaxAcceptRate is the new conns a second the listener accepts (a
	// token bucket with a second's worth of burst); above it conns wait in
	// the kernel's accept queue. 0 is unlimited; fractions are allowed.
	MaxAcceptRate       float64  `yaml:"max_accept_rate"`
	ProxyProtocol       string   `yaml:"proxy_protocol"`
	AcceptProxyProtocol bool     `yaml:"accept_proxy_protocol"`
	Timeouts            Timeouts `yaml:"timeouts"`
	// TLS is nil when the listener does not terminate TLS (l7 only).
	TLS    *TLS    `yaml:"tls"`
	HTTP   HTTP    `yaml:"http"`
	Routes []Route `yaml:"routes"`
}

// Addrs is a listener's listen: the file gives one address or a list.
type Addrs []string

// Timeouts of a listener.
type Timeouts struct {
	Connect   time.Duration `yaml:"connect"`
	Handshake time.Duration `yaml:"handshake"`
	Idle      time.Duration `yaml:"idle"`
	Keepalive time.Duration `yaml:"keepalive"`
	// Send bounds a write to the client or the backend of a plain l7
	// request that makes no progress (nginx send_timeout).
	Send time.Duration `yaml:"send"`
	// ClientBody is the longest wait for the next bytes of a request body
	// (nginx client_body_timeout).
	ClientBody time.Duration `yaml:"client_body"`
}

// TLS terminates TLS on an l7 listener.
type TLS struct {
	// Cert and Key are one certificate: the same as a Certificates list
	// of one, and kept for configs written before there was a list.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// Certificates are picked by the ClientHello's SNI against the names
	// in each certificate (exact names and wildcards); the first is the
	// default for a name none holds, or no SNI. Cert/Key, when set, come
	// first.
	Certificates []CertFile `yaml:"certificates"`
	MinVersion   string     `yaml:"min_version"`
	RedirectHTTP bool       `yaml:"redirect_http"`
	// HTTP2 offers h2 in ALPN (h2, http/1.1): requests and RFC 8441
	// WebSockets on one multiplexed conn. h2c is never offered.
	HTTP2 bool `yaml:"http2"`
	// ACME, when set, obtains and renews certificates for its domains.
	ACME *ACME `yaml:"acme"`
}

// CertFile is a certificate chain and its key, PEM files.
type CertFile struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// ACME obtains certificates from an ACME CA (Let's Encrypt by default) for
// Domains only, on their first ClientHello, and renews them before expiry.
type ACME struct {
	Email   string   `yaml:"email"`
	Domains []string `yaml:"domains"`
	// Directory is the CA's ACME directory URL.
	Directory string `yaml:"directory"`
	// CA is a PEM file of the roots to trust the directory's TLS with
	// (a private ACME CA); "" trusts the system's.
	CA string `yaml:"ca"`
	// Cache is the folder of the account key and the certificates,
	// relative to the config file.
	Cache string `yaml:"cache"`
}

// HTTP holds the l7 request handling knobs.
type HTTP struct {
	MaxHeaderBytes   Size     `yaml:"max_header_bytes"`
	MaxBodyBytes     Size     `yaml:"max_body_bytes"`
	ForwardedHeaders bool     `yaml:"forwarded_headers"`
	Forwarded        bool     `yaml:"forwarded"`
	TrustedProxies   []string `yaml:"trusted_proxies"`
	PreserveHost     bool     `yaml:"preserve_host"`
	RedirectHTTPS    bool     `yaml:"redirect_https"`
	HTTPSPort        int      `yaml:"https_port"`
	// RedirectCode is the status of redirect_https and tls.redirect_http.
	RedirectCode     int               `yaml:"redirect_code"`
	RequestHeaders   map[string]string `yaml:"request_headers"`
	ResponseHeaders  map[string]string `yaml:"response_headers"`
	UpgradeProtocols []string          `yaml:"upgrade_protocols"`
	// MinBodyRate is the bytes/s a request body must average, after its
	// first 5 s, over the time wslb waited for it (slow-POST defence); 0 is
	// off.
	MinBodyRate int64 `yaml:"min_body_rate"`

	// TrustedPrefixes is TrustedProxies parsed; a bare address becomes a /32 or /128.
	TrustedPrefixes []netip.Prefix `yaml:"-"`
	// SetHeaders is RequestHeaders parsed, sorted by name.
	SetHeaders []RequestHeader `yaml:"-"`
}

// Route is one l7 route: a path prefix served by a pool or a static folder.
type Route struct {
	Path        string `yaml:"path"`
	Pool        string `yaml:"pool"`
	StripPrefix bool   `yaml:"strip_prefix"`
	// RewritePrefix replaces the matched prefix on its way to the pool;
	// strip_prefix is the same as "/".
	RewritePrefix string `yaml:"rewrite_prefix"`
	Static        string `yaml:"static"`
	// Fallback is the file of Static served for a path that is no file
	// (nginx try_files' last argument); "" answers 404 instead.
	Fallback string `yaml:"fallback"`
}

// Balance values for Pool.Balance.
const (
	BalanceLeastConn  = "least_conn"
	BalanceRoundRobin = "round_robin"
	BalanceSourceHash = "source_hash"
)

// Check values for Health.Check.
const (
	CheckTCP       = "tcp"
	CheckHTTP      = "http"
	CheckWebSocket = "websocket"
	CheckNone      = "none"
)

// Pool is one entry of pools.
type Pool struct {
	Name                     string        `yaml:"name"`
	Balance                  string        `yaml:"balance"`
	Backends                 []Backend     `yaml:"backends"`
	Discovery                []Discovery   `yaml:"discovery"`
	IdlePerWorker            int           `yaml:"idle_per_worker"`
	MaxConnectionsPerBackend int           `yaml:"max_connections_per_backend"`
	SlowStart                time.Duration `yaml:"slow_start"`
	MaxConnectionAge         time.Duration `yaml:"max_connection_age"`
	Rebalance                Rebalance     `yaml:"rebalance"`
	Health                   Health        `yaml:"health"`
	Passive                  Passive       `yaml:"passive"`

	// Names are the DNS names the pool's backends come from, in file order:
	// every backend address that is a hostname, then every discovery
	// entry. Filled in by validation; nil when every address is an IP.
	Names []Name `yaml:"-"`
	// TLS is nil when the pool speaks plain TCP to its backends.
	TLS *BackendTLS `yaml:"tls"`
}

// MaxWeight is the largest weight a backend may have.
const MaxWeight = 1000

// Backend is one server of a pool.
type Backend struct {
	// Address is the address as written (possibly a template or a hostname).
	Address string `yaml:"address"`
	Weight  int    `yaml:"weight"`

	// Addr is Address resolved to an IP and port. It is unset when Address
	// is a hostname: the pool's Names then hold it, and each address it
	// resolves to becomes a backend of its own.
	Addr netip.AddrPort `yaml:"-"`

	// Source and Held are never read from the file: discovery sets them on
	// the backends it makes from Names. Source is the name the address came
	// from; Held says it vanished from the answers and takes no new conns
	// until resolver.hold has passed.
	Source string `yaml:"-"`
	Held   bool   `yaml:"-"`
}

// Discovery is one entry of pools[].discovery: exactly one of SRV (each
// record's target:port is a backend) or Name with Port (each A/AAAA
// address with Port is a backend).
type Discovery struct {
	SRV  string `yaml:"srv"`
	Name string `yaml:"name"`
	Port int    `yaml:"port"`
}

// Name is one DNS name a pool's backends come from, as validation read it
// from a hostname backend address or a discovery entry.
type Name struct {
	// Path and Line locate the name in the file, for log lines and -check's
	// warnings: pools[0].backends[1].address, pools[0].discovery[0].srv.
	Path string
	Line int
	// SRV: Host is looked up for SRV records, whose targets give the
	// addresses, ports and weights. Otherwise Host's A and AAAA addresses
	// are backends on Port with Weight.
	SRV    bool
	Host   string
	Port   uint16
	Weight int
}

// Health configures a pool's active checks.
type Health struct {
	Check        string        `yaml:"check"`
	Path         string        `yaml:"path"`
	ExpectStatus int           `yaml:"expect_status"`
	Interval     time.Duration `yaml:"interval"`
	Timeout      time.Duration `yaml:"timeout"`
	Rise         int           `yaml:"rise"`
	Fall         int           `yaml:"fall"`
	Agent        Agent         `yaml:"agent"`
}

// Agent is pools[].health.agent: HAProxy's agent check, a line each backend
// reports about itself on a port of its own (package health, agent.go).
type Agent struct {
	// Port on the backend's IP; 0 turns the agent check off.
	Port     int           `yaml:"port"`
	Interval time.Duration `yaml:"interval"`
	// Send is a line sent to the agent before it answers; "" sends nothing.
	// A newline is appended when it is sent.
	Send string `yaml:"send"`
}

// Passive configures ejection after failed dials.
type Passive struct {
	MaxFails    int           `yaml:"max_fails"`
	FailTimeout time.Duration `yaml:"fail_timeout"`
}

// Rebalance is pools[].rebalance: closing the youngest tunnels of backends
// that hold more than their weighted share, so that clients reconnect to
// the others (package rebalance).
type Rebalance struct {
	Enabled bool `yaml:"enabled"`
	// Tolerance: a backend is over its share when it holds more than
	// (1 + Tolerance) × its weighted share of the pool's tunnels.
	Tolerance float64 `yaml:"tolerance"`
	// Rate is the most tunnels closed per second in the pool.
	Rate int `yaml:"rate"`
}

// PoolByName returns the pool called name, or nil.
func (c *Config) PoolByName(name string) *Pool {
	for i := range c.Pools {
		if c.Pools[i].Name == name {
			return &c.Pools[i]
		}
	}
	return nil
}

// PoolNames lists the pools l sends to (its own pool, then its routes'),
// each once, in configuration order.
func (l Listener) PoolNames() []string {
	out := []string{}
	add := func(name string) {
		if name != "" && !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	add(l.Pool)
	for _, r := range l.Routes {
		add(r.Pool)
	}
	return out
}
