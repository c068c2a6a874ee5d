package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadResolvesFiles: Load makes static folders and TLS files relative to
// the config file, and reports those that do not exist with their line.
func TestLoadResolvesFiles(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "web"), 0o755)
	write := func(body string) string {
		p := filepath.Join(dir, "wslb.yaml")
		os.WriteFile(p, []byte(body), 0o644)
		return p
	}
	good := write(`listeners:
  - name: web
    listen: 127.0.0.1:0
    mode: l7
    routes:
      - {path: /, static: web}
`)
	c, err := Load(good)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Listeners[0].Routes[0].Static, filepath.Join(dir, "web"); got != want {
		t.Fatalf("static resolved to %q, want %q", got, want)
	}

	bad := write(`listeners:
  - name: web
    listen: 127.0.0.1:0
    mode: l7
    tls: {cert: missing.crt, key: missing.key}
    routes:
      - {path: /, static: nowhere}
`)
	_, err = Load(bad)
	got := err.Error()
	for _, want := range []string{
		bad + ":5: listeners[0].tls.cert: cannot load certificate and key",
		bad + ":7: listeners[0].routes[0].static: cannot use folder",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("problems lack %q:\n%s", want, got)
		}
	}
}

// TestLoadTLSFiles: every certificate of tls.certificates and acme's ca
// and cache are resolved against the config file's folder, and files that
// do not load are reported where they are named.
func TestLoadTLSFiles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "wslb.yaml")
	os.WriteFile(filepath.Join(dir, "notpem.crt"), []byte("not a certificate"), 0o644)
	os.WriteFile(p, []byte(`listeners:
  - name: web
    listen: 127.0.0.1:0
    mode: l7
    tls:
      certificates:
        - {cert: missing.crt, key: missing.key}
      acme:
        domains: [chat.example.com]
        ca: notpem.crt
        cache: state/acme
`), 0o644)
	_, err := Load(p)
	if err == nil {
		t.Fatal("loaded a config whose certificate files are missing")
	}
	for _, want := range []string{
		p + ":7: listeners[0].tls.certificates[0].cert: cannot load certificate and key",
		p + ":10: listeners[0].tls.acme.ca: " + filepath.Join(dir, "notpem.crt") + " holds no PEM certificate",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("problems lack %q:\n%s", want, err)
		}
	}
	c, err := Parse([]byte(`listeners:
  - {name: web, listen: 127.0.0.1:0, mode: l7, tls: {acme: {domains: [chat.example.com]}}}
`), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if a := c.Listeners[0].TLS.ACME; a.Directory != "https://acme-v02.api.letsencrypt.org/directory" || a.Cache != "acme" || !c.Listeners[0].TLS.HTTP2 {
		t.Errorf("acme defaults = %+v, http2 %v", *a, c.Listeners[0].TLS.HTTP2)
	}
}

func TestResponseHeadersAndMappedPrefixes(t *testing.T) {
	_, err := Parse([]byte(`listeners:
  - name: web
    listen: 127.0.0.1:0
    mode: l7
    http:
      trusted_proxies: ["::ffff:10.0.0.0/104"]
      response_headers:
        "Bad Name": x
        X-Ok: "a\nb"
`), "t.yaml")
	got := err.Error()
	for _, want := range []string{
		"t.yaml:8: listeners[0].http.response_headers.Bad Name: invalid header name",
		"t.yaml:9: listeners[0].http.response_headers.X-Ok: header value must not contain CR, LF or NUL",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("problems lack %q:\n%s", want, got)
		}
	}
	c, err := Parse([]byte(`listeners:
  - {name: web, listen: 127.0.0.1:0, mode: l7, http: {trusted_proxies: ["::ffff:10.0.0.0/104"]}}
`), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Listeners[0].HTTP.TrustedPrefixes[0].String(); got != "10.0.0.0/8" {
		t.Fatalf("4-in-6 prefix became %s, want 10.0.0.0/8", got)
	}
}
