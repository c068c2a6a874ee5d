package config

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
)

// BackendTLS makes a pool speak TLS to its backends (https and wss
// upstreams). Load reads the files it names into Roots and Certificate, so
// what -check loaded is what runs and a reload reads them afresh; Parse, which
// reads no file, leaves those nil.
type BackendTLS struct {
	// ServerName is sent as SNI and is the name every backend's certificate
	// must be valid for; empty means each backend's own hostname, or its IP
	// (see Backend.Hostname).
	ServerName string `yaml:"server_name"`
	// CA is a PEM bundle of the CAs to trust; empty means the system's roots.
	CA                 string `yaml:"ca"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
	// Cert and Key are a client certificate chain and its key, for backends
	// that require mutual TLS; both or neither.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`

	// Roots holds CA's certificates once Load has read them; nil without a
	// CA, and also when a CA was named but not read (Parse): whoever builds
	// a TLS client from this must then trust nothing rather than fall back
	// to the system's roots.
	Roots *x509.CertPool `yaml:"-"`
	// Certificate is Cert and Key once Load has read them, else nil.
	Certificate *tls.Certificate `yaml:"-"`
}

// Equal reports whether t and o make the same TLS client: the same settings
// and the same certificates, wherever the files were read from. A reload
// keeps a backend's TLS client (its sessions, its idle conns) when nothing
// changed.
func (t *BackendTLS) Equal(o *BackendTLS) bool {
	if t == nil || o == nil {
		return t == o
	}
	if t.ServerName != o.ServerName || t.InsecureSkipVerify != o.InsecureSkipVerify ||
		(t.CA == "") != (o.CA == "") || (t.Cert == "") != (o.Cert == "") {
		return false
	}
	if (t.Roots == nil) != (o.Roots == nil) || t.Roots != nil && !t.Roots.Equal(o.Roots) {
		return false
	}
	if t.Certificate == nil || o.Certificate == nil {
		return t.Certificate == o.Certificate
	}
	// The same chain has the same public key, and Load checked that each
	// key matches its chain, so the keys are the same too.
	return slices.EqualFunc(t.Certificate.Certificate, o.Certificate.Certificate, bytes.Equal)
}

// Hostname is the DNS name b's address was written with, or "" when it is an
// IP address or a go-sockaddr template. A pool's TLS verifies b against it
// when tls.server_name is empty, and against b's IP when it is "" too.
func (b Backend) Hostname() string {
	if strings.Contains(b.Address, "{{") {
		return ""
	}
	host, _, err := net.SplitHostPort(b.Address)
	if err != nil {
		return ""
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return ""
	}
	return host
}

// backendTLS checks a pool's tls block at path p and, with files, resolves
// its file paths against dir (as listeners' are) and loads them.
func (v *checker) backendTLS(t *BackendTLS, p string, withFiles bool, dir string) {
	switch {
	case t.Cert != "" && t.Key == "":
		v.add(key(p, "key"), "cert needs its key: set key too (mutual TLS takes both), or remove cert")
	case t.Key != "" && t.Cert == "":
		v.add(key(p, "cert"), "key needs its certificate: set cert too (mutual TLS takes both), or remove key")
	}
	if n := t.ServerName; n != "" && !validServerName(n) {
		v.add(key(p, "server_name"), "invalid server name %q: use a host name or an IP address, without a port", n)
	}
	if !withFiles {
		return
	}
	if t.CA != "" {
		t.CA = resolve(dir, t.CA)
		roots, err := loadRoots(t.CA)
		if err != nil {
			v.add(key(p, "ca"), "%v", err)
		}
		t.Roots = roots
	}
	if t.Cert != "" && t.Key != "" {
		t.Cert, t.Key = resolve(dir, t.Cert), resolve(dir, t.Key)
		cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			v.add(key(p, "cert"), "cannot load client certificate and key: %v", err)
		} else {
			t.Certificate = &cert
		}
	}
}

// validServerName accepts an IP address or something shaped like a DNS name;
// whether it matches a certificate is for the handshake to say.
func validServerName(s string) bool {
	if _, err := netip.ParseAddr(s); err == nil {
		return true
	}
	return !strings.ContainsAny(s, " \t\r\n/:@[]") && !strings.HasPrefix(s, ".") && !strings.Contains(s, "..")
}

// loadRoots reads a PEM bundle of CA certificates. Every CERTIFICATE block
// must parse: a bundle that silently lost a CA would fail later, at a dial,
// with a message far from its cause.
func loadRoots(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read CA bundle: %v", err)
	}
	roots := x509.NewCertPool()
	n := 0
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		n++
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CA bundle %s: certificate %d does not parse: %v", path, n, err)
		}
		roots.AddCert(c)
	}
	if n == 0 {
		return nil, fmt.Errorf("CA bundle %s holds no PEM certificate: ca must be a PEM file of CA certificates", path)
	}
	return roots, nil
}

// tlsPoolsOnL4 reports l4 listeners whose pool speaks TLS: an l4 listener
// passes bytes untouched, so it cannot wrap them in TLS.
func (v *checker) tlsPoolsOnL4(c *Config) {
	for i, l := range c.Listeners {
		if l.Mode != ModeL4 {
			continue
		}
		if pl := c.PoolByName(l.Pool); pl != nil && pl.TLS != nil {
			v.add(key(item("listeners", i), "pool"),
				"pool %q speaks TLS to its backends: only l7 listeners can use it (make this listener l7, or give it a pool without tls)", l.Pool)
		}
	}
}
