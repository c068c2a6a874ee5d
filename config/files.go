package config

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
)

// files resolves the file paths of l7 listeners (tls.cert, tls.key, a route's
// static folder) against the config file's folder, as a relative path in an
// nginx config is resolved against its prefix, so wslb behaves the same
// whatever directory it is started from. It also checks that they exist and
// load, so `wslb -check` catches a missing certificate before a deploy does.
func (v *checker) files(l *Listener, p, dir string) {
	if l.Mode != ModeL7 {
		return
	}
	if t := l.TLS; t != nil {
		v.tlsFiles(t, key(p, "tls"), dir)
	}
	for i := range l.Routes {
		r := &l.Routes[i]
		if r.Static == "" {
			continue
		}
		r.Static = resolve(dir, r.Static)
		if fi, err := os.Stat(r.Static); err != nil {
			v.add(key(item(key(p, "routes"), i), "static"), "cannot use folder: %v", err)
		} else if !fi.IsDir() {
			v.add(key(item(key(p, "routes"), i), "static"), "%s is not a folder", r.Static)
		}
	}
}

// tlsFiles resolves and loads a TLS listener's certificates, and resolves
// its ACME CA file (loaded) and cache folder (made on first use).
func (v *checker) tlsFiles(t *TLS, p, dir string) {
	if t.Cert != "" && t.Key != "" {
		t.Cert, t.Key = resolve(dir, t.Cert), resolve(dir, t.Key)
		if _, err := tls.LoadX509KeyPair(t.Cert, t.Key); err != nil {
			v.add(key(p, "cert"), "cannot load certificate and key: %v", err)
		}
	}
	for i := range t.Certificates {
		c := &t.Certificates[i]
		if c.Cert == "" || c.Key == "" {
			continue
		}
		c.Cert, c.Key = resolve(dir, c.Cert), resolve(dir, c.Key)
		if _, err := tls.LoadX509KeyPair(c.Cert, c.Key); err != nil {
			v.add(key(item(key(p, "certificates"), i), "cert"), "cannot load certificate and key: %v", err)
		}
	}
	if a := t.ACME; a != nil {
		if a.Cache != "" {
			a.Cache = resolve(dir, a.Cache)
		}
		if a.CA != "" {
			a.CA = resolve(dir, a.CA)
			if pem, err := os.ReadFile(a.CA); err != nil {
				v.add(key(key(p, "acme"), "ca"), "cannot read: %v", err)
			} else if !x509.NewCertPool().AppendCertsFromPEM(pem) {
				v.add(key(key(p, "acme"), "ca"), "%s holds no PEM certificate", a.CA)
			}
		}
	}
}

// Certs is every certificate of t in the order SNI picks among them:
// cert/key first when set, then certificates.
func (t *TLS) Certs() []CertFile {
	out := make([]CertFile, 0, 1+len(t.Certificates))
	if t.Cert != "" {
		out = append(out, CertFile{Cert: t.Cert, Key: t.Key})
	}
	return append(out, t.Certificates...)
}

func resolve(dir, path string) string {
	if filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(dir, path)
}
