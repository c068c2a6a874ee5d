package pool

import (
	"crypto/tls"
	"crypto/x509"

	"github.com/wslb/wslb/config"
)

// clientTLS is the client side of TLS to one backend and the tls block it
// was built from, so that a reload can tell whether it changed.
type clientTLS struct {
	src  *config.BackendTLS
	conf *tls.Config
}

// TLS returns the *tls.Config that every dial and health check to b uses,
// or nil when b's pool speaks plain TCP to it. It is built when a
// configuration is applied, once per backend rather than per dial, so dials
// share it and its session cache, which turns a fresh handshake into a
// resumption.
func (b *Backend) TLS() *tls.Config {
	if c := b.tls.Load(); c != nil {
		return c.conf
	}
	return nil
}

// configureTLS gives b the TLS client of its pool's tls block t (nil: plain
// TCP). A reload that changes neither t's settings nor the certificates it
// loaded, nor b's name, keeps the client b has, with its sessions and its
// idle conns; IdleCache drops the idle conns of a client that was replaced.
func (b *Backend) configureTLS(c config.Backend, t *config.BackendTLS) {
	if t == nil {
		b.tls.Store(nil)
		return
	}
	name := serverName(c, t)
	if cur := b.tls.Load(); cur != nil && cur.conf.ServerName == name && cur.src.Equal(t) {
		return
	}
	b.tls.Store(&clientTLS{src: t, conf: newClientConfig(t, name)})
}

// serverName is what b's certificate must be valid for, and its SNI: the
// pool's server_name, else the hostname b was written with, else b's IP,
// which crypto/tls checks against the certificate's IP addresses (and, as
// RFC 6066 asks, does not send as SNI).
func serverName(c config.Backend, t *config.BackendTLS) string {
	if t.ServerName != "" {
		return t.ServerName
	}
	if h := c.Hostname(); h != "" {
		return h
	}
	return c.Addr.Addr().String()
}

func newClientConfig(t *config.BackendTLS, name string) *tls.Config {
	roots := t.Roots
	if roots == nil && t.CA != "" {
		// A CA was named but never loaded (a config from Parse): trust
		// nothing rather than fall back to the system's roots.
		roots = x509.NewCertPool()
	}
	c := &tls.Config{
		ServerName:         name,
		RootCAs:            roots,
		InsecureSkipVerify: t.InsecureSkipVerify,
		// wslb speaks HTTP/1.1 to backends; one that chose h2 would send
		// frames wslb cannot read.
		NextProtos: []string{"http/1.1"},
		// One entry: every conn of this config asks for one server name.
		ClientSessionCache: tls.NewLRUClientSessionCache(1),
	}
	if cert := t.Certificate; cert != nil {
		// Sent whichever CAs the backend says it accepts, as nginx's
		// proxy_ssl_certificate is: a backend that refuses it says so in its
		// alert, where crypto/tls's own choice would quietly send nothing.
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return c
}
