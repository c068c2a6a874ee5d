// Package acme obtains and renews the certificates of the TLS listeners
// that have a tls.acme block, from an ACME CA (Let's Encrypt, or the
// directory configured), with golang.org/x/crypto/acme/autocert. A Manager
// serves one acme block: its listener's handshakes get the certificates of
// its domains from it, and it answers TLS-ALPN-01 challenges in them. A Set
// holds the process's managers across reloads, and is what plain l7
// listeners ask for the answer to an HTTP-01 challenge. Read manager.go,
// then set.go.
package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"

	xacme "golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"github.com/wslb/wslb/config"
)

// Manager obtains, caches and renews the certificates of one acme block's
// domains. Renewal is autocert's: a certificate is renewed, in the
// background, 30 days before it expires (a third of its lifetime before,
// for one shorter than 90 days); the renewed one is written to the cache
// and served from then on.
type Manager struct {
	cfg     config.ACME
	domains map[string]bool
	ac      *autocert.Manager
	rt      *retiring
	log     *slog.Logger

	// http01 is ac.HTTPHandler, set once HTTP-01 is on (EnableHTTP01).
	http01 atomic.Pointer[http.Handler]
}

// New returns the Manager of acme block c, whose CA file (if any) it reads
// now. Nothing is asked of the CA until a ClientHello names one of the
// domains.
func New(c config.ACME, log *slog.Logger) (*Manager, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if c.CA != "" {
		pem, err := os.ReadFile(c.CA)
		if err != nil {
			return nil, fmt.Errorf("acme ca: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("acme ca: %s holds no PEM certificate", c.CA)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: roots}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{cfg: c, domains: map[string]bool{}, rt: &retiring{next: tr}, log: log}
	for _, d := range c.Domains {
		m.domains[normalize(d)] = true
	}
	m.ac = &autocert.Manager{
		// Configuring acme is agreeing to the CA's terms (README).
		Prompt:     autocert.AcceptTOS,
		HostPolicy: m.policy,
		Cache:      autocert.DirCache(c.Cache),
		Email:      c.Email,
		Client: &xacme.Client{
			DirectoryURL: c.Directory,
			HTTPClient:   &http.Client{Transport: m.rt},
			UserAgent:    "wslb",
		},
	}
	return m, nil
}

// normalize is a server name as the domains are kept: lower case, without
// the root's dot.
func normalize(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }

// Manages reports whether host (a server name or a Host header, with or
// without a port) is one of m's domains.
func (m *Manager) Manages(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return m.domains[normalize(host)]
}

// policy is autocert's HostPolicy: only the configured domains, so that a
// ClientHello with any other name cannot make wslb order a certificate
// (and spend the CA's rate limits).
func (m *Manager) policy(_ context.Context, host string) error {
	if !m.Manages(host) {
		return fmt.Errorf("acme: %q is not one of tls.acme.domains", host)
	}
	return nil
}

// TLSConfig returns a copy of base whose handshakes get a certificate from
// m when the ClientHello names one of its domains, or is a TLS-ALPN-01
// challenge (ALPN acme-tls/1 alone), and from base's certificates
// otherwise (Go picks among them by SNI, or base.GetCertificate does). With
// no certificate of its own, a handshake for another name fails with an
// error that says so. acme-tls/1 joins base's ALPN protocols, last: a
// client that offers it alone is the CA, and no browser offers it.
func (m *Manager) TLSConfig(base *tls.Config) *tls.Config {
	tc := base.Clone()
	fallback := base.GetCertificate
	static := len(base.Certificates) > 0
	tc.NextProtos = append(slices.Clone(base.NextProtos), xacme.ALPNProto)
	tc.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if isChallenge(hello) || m.Manages(hello.ServerName) {
			return m.certificate(hello)
		}
		if fallback != nil {
			return fallback(hello)
		}
		if !static {
			return nil, fmt.Errorf("no certificate for server name %q: it is not one of tls.acme.domains and the listener has no certificate of its own", hello.ServerName)
		}
		return nil, nil // Go picks among tc.Certificates
	}
	return tc
}

// isChallenge reports whether hello is a CA's TLS-ALPN-01 validation
// (RFC 8737: it offers acme-tls/1 alone).
func isChallenge(hello *tls.ClientHelloInfo) bool {
	return len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == xacme.ALPNProto
}

// certificate is autocert's, with a failure to obtain a certificate
// logged: the client sees only a failed handshake.
func (m *Manager) certificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	cert, err := m.ac.GetCertificate(hello)
	if err != nil && !isChallenge(hello) {
		m.log.Warn("acme: no certificate", "server_name", hello.ServerName, "directory", m.cfg.Directory, "err", err)
	}
	return cert, err
}

// EnableHTTP01 makes m offer HTTP-01 as well as TLS-ALPN-01 (autocert
// tries TLS-ALPN-01 first, then HTTP-01), answered by the handler that
// HTTP01Handler returns. It cannot be undone: autocert has no way to.
func (m *Manager) EnableHTTP01() {
	if m.http01.Load() == nil {
		h := m.ac.HTTPHandler(nil)
		m.http01.CompareAndSwap(nil, &h)
	}
}

// HTTP01Handler answers a request for /.well-known/acme-challenge/TOKEN
// of one of m's domains; nil until EnableHTTP01.
func (m *Manager) HTTP01Handler() http.Handler {
	if h := m.http01.Load(); h != nil {
		return *h
	}
	return nil
}

// retire makes every later request of m to the CA fail at once: autocert
// has no way to stop its renewal timers, so a manager a reload dropped
// would otherwise go on renewing certificates nobody serves. Its timers
// still fire, fail without a packet sent, and wait again.
func (m *Manager) retire() { m.rt.done.Store(true) }

// errRetired is what a retired manager's requests fail with.
var errRetired = errors.New("acme: the manager was retired by a reload (its tls.acme block changed or went away)")

// retiring is the CA client's transport, which retire closes for good.
type retiring struct {
	next http.RoundTripper
	done atomic.Bool
}

func (r *retiring) RoundTrip(req *http.Request) (*http.Response, error) {
	if r.done.Load() {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, errRetired
	}
	return r.next.RoundTrip(req)
}
