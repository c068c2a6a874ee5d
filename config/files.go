package config

import (
	"crypto/tls"
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
	if t := l.TLS; t != nil && t.Cert != "" && t.Key != "" {
		t.Cert, t.Key = resolve(dir, t.Cert), resolve(dir, t.Key)
		if _, err := tls.LoadX509KeyPair(t.Cert, t.Key); err != nil {
			v.add(key(key(p, "tls"), "cert"), "cannot load certificate and key: %v", err)
		}
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

func resolve(dir, path string) string {
	if filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(dir, path)
}
