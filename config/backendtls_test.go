package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wslb/wslb/internal/certtest"
)

// tlsPoolHead is an l7 listener on pool ws, whose keys follow at line 5.
const tlsPoolHead = `
listeners: [{name: a, listen: ":0", mode: l7, pool: ws}]
pools:
  - name: ws
    backends: [{address: 127.0.0.1:9001}]
`

func TestValidateBackendTLS(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		wants []want
	}{
		{"every key", tlsPoolHead + `    tls:
      server_name: chat.internal
      ca: ca.pem
      insecure_skip_verify: false
      cert: client.crt
      key: client.key`, nil},
		{"an empty block is TLS with the defaults", tlsPoolHead + "    tls: {}", nil},
		{"cert without key", tlsPoolHead + "    tls:\n      cert: client.crt",
			[]want{{5, "pools[0].tls.key", "cert needs its key"}}},
		{"key without cert", tlsPoolHead + "    tls: {key: client.key}",
			[]want{{5, "pools[0].tls.cert", "key needs its certificate"}}},
		{"server name with a port", tlsPoolHead + "    tls:\n      server_name: chat.internal:443",
			[]want{{6, "pools[0].tls.server_name", `invalid server name "chat.internal:443"`}}},
		{"an IPv6 server name", tlsPoolHead + `    tls: {server_name: "::1"}`, nil},
		{"l4 listener on a TLS pool", `
listeners:
  - {name: web, listen: ":0", mode: l7, pool: ws}
  - name: tcp
    listen: ":0"
    mode: l4
    pool: ws
pools:
  - name: ws
    backends: [{address: 127.0.0.1:9001}]
    tls: {}`,
			[]want{{6, "listeners[1].pool", `pool "ws" speaks TLS to its backends: only l7 listeners can use it`}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { expect(t, tc.src, tc.wants...) })
	}
}

// TestLoadBackendTLSFiles: Load resolves a pool's TLS files against the
// config file's folder, loads them into the config, and reports each that
// does not load with its line.
func TestLoadBackendTLSFiles(t *testing.T) {
	ca := certtest.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := certtest.Write(t, ca.Issue(t, certtest.Leaf{Names: []string{"wslb"}, Client: true}))
	caFile := ca.WriteRoots(t)
	for from, to := range map[string]string{caFile: "ca.pem", certFile: "client.crt", keyFile: "client.key"} {
		data, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, to), data, 0o600)
	}
	os.WriteFile(filepath.Join(dir, "junk.pem"), []byte("not a certificate\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "broken.pem"), []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o600)
	write := func(body string) string {
		p := filepath.Join(dir, "wslb.yaml")
		os.WriteFile(p, []byte(body), 0o644)
		return p
	}

	c, err := Load(write(`listeners: [{name: a, listen: "127.0.0.1:0", mode: l7, pool: ws}]
pools:
  - name: ws
    backends: [{address: 127.0.0.1:9001}]
    tls: {ca: ca.pem, cert: client.crt, key: client.key}
`))
	if err != nil {
		t.Fatal(err)
	}
	bt := c.Pools[0].TLS
	if bt.CA != filepath.Join(dir, "ca.pem") || bt.Cert != filepath.Join(dir, "client.crt") || bt.Key != filepath.Join(dir, "client.key") {
		t.Errorf("paths not resolved against the config's folder: %+v", bt)
	}
	if bt.Roots == nil || !bt.Roots.Equal(ca.Pool()) {
		t.Error("Roots do not hold the CA")
	}
	if bt.Certificate == nil || len(bt.Certificate.Certificate) != 1 {
		t.Error("client certificate not loaded")
	}

	bad := write(`listeners: [{name: a, listen: "127.0.0.1:0", mode: l7, pool: ws}]
pools:
  - name: ws
    backends: [{address: 127.0.0.1:9001}]
    tls: {ca: missing.pem, cert: client.key, key: client.crt}
  - name: junk
    backends: [{address: 127.0.0.1:9001}]
    tls:
      ca: junk.pem
  - name: broken
    backends: [{address: 127.0.0.1:9001}]
    tls:
      ca: broken.pem
`)
	_, err = Load(bad)
	if err == nil {
		t.Fatal("Load accepted files that do not load")
	}
	got := err.Error()
	for _, want := range []string{
		bad + ":5: pools[0].tls.ca: cannot read CA bundle: open " + filepath.Join(dir, "missing.pem"),
		bad + ":5: pools[0].tls.cert: cannot load client certificate and key",
		bad + ":9: pools[1].tls.ca: CA bundle " + filepath.Join(dir, "junk.pem") + " holds no PEM certificate",
		bad + ":13: pools[2].tls.ca: CA bundle " + filepath.Join(dir, "broken.pem") + ": certificate 1 does not parse",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("problems lack %q:\n%s", want, got)
		}
	}
}

func TestBackendTLSEqual(t *testing.T) {
	ca, other := certtest.NewCA(t), certtest.NewCA(t)
	client := ca.Issue(t, certtest.Leaf{Names: []string{"wslb"}, Client: true})
	client2 := ca.Issue(t, certtest.Leaf{Names: []string{"wslb"}, Client: true})
	base := func() *BackendTLS {
		return &BackendTLS{ServerName: "a", CA: "/x/ca.pem", Roots: ca.Pool(), Cert: "c", Key: "k", Certificate: &client}
	}
	moved := base()
	moved.CA, moved.Cert, moved.Key = "/y/ca.pem", "c2", "k2"
	tests := []struct {
		name string
		o    *BackendTLS
		want bool
	}{
		{"the same, loaded again", base(), true},
		{"the same files elsewhere", moved, true},
		{"nil", nil, false},
		{"another name", func() *BackendTLS { b := base(); b.ServerName = "b"; return b }(), false},
		{"another CA", func() *BackendTLS { b := base(); b.Roots = other.Pool(); return b }(), false},
		{"no CA", func() *BackendTLS { b := base(); b.CA, b.Roots = "", nil; return b }(), false},
		{"another client certificate", func() *BackendTLS { b := base(); b.Certificate = &client2; return b }(), false},
		{"no client certificate", func() *BackendTLS { b := base(); b.Cert, b.Key, b.Certificate = "", "", nil; return b }(), false},
		{"verification off", func() *BackendTLS { b := base(); b.InsecureSkipVerify = true; return b }(), false},
	}
	for _, tc := range tests {
		if got := base().Equal(tc.o); got != tc.want {
			t.Errorf("%s: Equal = %v, want %v", tc.name, got, tc.want)
		}
	}
	if !(*BackendTLS)(nil).Equal(nil) {
		t.Error("nil is not Equal to nil")
	}
}

func TestBackendHostname(t *testing.T) {
	for address, want := range map[string]string{
		"127.0.0.1:9001":           "",
		"[::1]:9001":               "",
		"{{ GetPrivateIP }}:9001":  "",
		"chat-1.internal:9001":     "chat-1.internal",
		"not an address":           "",
		"backend.example.com:443":  "backend.example.com",
		"[fe80::1%eth0]:9001":      "",
		"chat-1.internal.:9001":    "chat-1.internal.",
		"localhost:9001":           "localhost",
		"2001:db8::1":              "",
		"host-without-port.test":   "",
		"10.0.0.1":                 "",
		"{{ GetAllInterfaces }}:1": "",
	} {
		if got := (Backend{Address: address}).Hostname(); got != want {
			t.Errorf("Hostname of %q = %q, want %q", address, got, want)
		}
	}
}
