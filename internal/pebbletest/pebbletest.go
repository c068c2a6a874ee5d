// Package pebbletest runs Let's Encrypt's pebble ACME server (a Go tool of
// this module: go.mod's tool directive) on loopback for the length of a test,
// with a DNS server of the test's own (internal/dnstest) that sends its
// validation authority to 127.0.0.1, so that the challenges reach the wslb
// listeners the test started. Its directory speaks TLS with a certificate
// from a CA of the test's own (internal/certtest), whose root file is what
// wslb's tls.acme.ca takes.
package pebbletest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wslb/wslb/internal/certtest"
	"github.com/wslb/wslb/internal/dnstest"
	"github.com/wslb/wslb/internal/loopback"
	"github.com/wslb/wslb/internal/syncbuf"
	"github.com/wslb/wslb/internal/wait"
)

// buildTimeout bounds `go tool -n pebble`, which builds pebble into the Go
// build cache the first time (about 5 s from a warm module cache; a clean
// clone downloads pebble's three modules first) and only prints the cached
// binary's path after that.
const buildTimeout = 3 * time.Minute

// Options say where pebble validates the challenges and what it issues.
type Options struct {
	// HTTPPort and TLSPort are the loopback ports pebble's validation
	// authority connects to for HTTP-01 and TLS-ALPN-01; 0 is a port
	// nothing listens on, so that challenge type always fails.
	HTTPPort, TLSPort int
	// Domains resolve to 127.0.0.1 for the validation authority; other
	// names do not exist.
	Domains []string
	// Validity, when set, is the lifetime of the certificates pebble issues
	// (whole seconds, at least 2); 0 is pebble's 90 days.
	Validity time.Duration
}

// Server is a pebble that Start started.
type Server struct {
	// Directory is the ACME directory URL, for tls.acme.directory.
	Directory string
	// CAFile holds the root that the directory's TLS certificate chains
	// to, for tls.acme.ca.
	CAFile string
	// DNS answers the validation authority's lookups; a test may add names.
	DNS *dnstest.Server

	mgmt   string // the management API's host:port
	client *http.Client
	logs   *syncbuf.Buffer
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start builds (once per build cache) and runs pebble on free loopback
// ports until the test ends, and returns once its directory answers.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	bin := binary(t)
	dir := t.TempDir()
	ca := certtest.NewCA(t)
	certFile, keyFile := certtest.Write(t, ca.Issue(t, certtest.Leaf{Names: []string{"127.0.0.1", "localhost"}}))
	s := &Server{
		CAFile: ca.WriteRoots(t),
		DNS:    dnstest.Start(t),
		mgmt:   loopback.FreeAddr(t),
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}},
		logs:   &syncbuf.Buffer{},
		exited: make(chan struct{}),
	}
	for _, d := range o.Domains {
		s.DNS.SetAddrs(d, "127.0.0.1")
	}
	listen := loopback.FreeAddr(t)
	s.Directory = "https://" + listen + "/dir"
	cfgFile := filepath.Join(dir, "pebble.json")
	writeConfig(t, cfgFile, listen, s.mgmt, certFile, keyFile, o)

	s.cmd = exec.Command(bin, "-config", cfgFile, "-dnsserver", s.DNS.Addr())
	// No sleep before a validation, and no nonce refused at random: the
	// tests wait for events, not for pebble's chaos.
	s.cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start pebble: %v", err)
	}
	go func() { _ = s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(s.Stop)
	if !wait.Until(wait.Timeout, s.answers) {
		t.Fatalf("pebble's directory %s did not answer; its log:\n%s", s.Directory, s.logs.String())
	}
	return s
}

// binary returns the path of the pebble binary in the build cache, built
// there first if it is not.
func binary(t testing.TB) string {
	t.Helper()
	gocmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("pebble runs as a Go tool, and there is no go command: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, gocmd, "tool", "-n", "pebble")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go tool -n pebble: %v: %s", err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// writeConfig writes pebble's JSON config to path.
func writeConfig(t testing.TB, path, listen, mgmt, certFile, keyFile string, o Options) {
	t.Helper()
	port := func(p int) int {
		if p == 0 {
			_, ps, _ := net.SplitHostPort(loopback.DeadAddr(t))
			p, _ = strconv.Atoi(ps)
		}
		return p
	}
	profile := map[string]any{"description": "wslb tests"}
	if o.Validity > 0 {
		profile["validityPeriod"] = int(o.Validity / time.Second)
	}
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":           listen,
		"managementListenAddress": mgmt,
		"certificate":             certFile,
		"privateKey":              keyFile,
		"httpPort":                port(o.HTTPPort),
		"tlsPort":                 port(o.TLSPort),
		"keyAlgorithm":            "ecdsa",
		"profiles":                map[string]any{"default": profile},
	}}
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// answers reports whether the directory answers 200.
func (s *Server) answers() bool {
	select {
	case <-s.exited:
		return false
	default:
	}
	resp, err := s.client.Get(s.Directory)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Roots returns the root that pebble signs the certificates it issues
// with (its management API's /roots/0), to verify an issued chain.
func (s *Server) Roots(t testing.TB) *x509.CertPool {
	t.Helper()
	resp, err := s.client.Get("https://" + s.mgmt + "/roots/0")
	if err != nil {
		t.Fatalf("pebble's root: %v", err)
	}
	defer resp.Body.Close()
	pem, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pebble's root: %d %v", resp.StatusCode, err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pem) {
		t.Fatalf("pebble's root is not PEM: %q", pem)
	}
	return p
}

// Orders is how many orders pebble has taken, from its log.
func (s *Server) Orders() int {
	return strings.Count(s.logs.String(), "Added order")
}

// Log is what pebble wrote so far, for a failing test's message.
func (s *Server) Log() string { return s.logs.String() }

// Stop kills pebble and waits for it to exit; the test's cleanup calls it
// too, so a test may stop pebble early to prove nothing asks it again.
func (s *Server) Stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second): // SIGKILL cannot be refused; bounded all the same
	}
}
