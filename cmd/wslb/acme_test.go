package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/loopback"
	"github.com/wslb/wslb/internal/pebbletest"
	"github.com/wslb/wslb/internal/syncbuf"
	"github.com/wslb/wslb/internal/wait"
)

const acmeDomain = "test.wslb.example"

// acmeFixture is pebble, and a config file for wslb whose TLS listener
// "https" gets its certificate from it.
type acmeFixture struct {
	peb     *pebbletest.Server
	dir     string // the config's folder; the cache is dir/acme
	path    string
	tlsAddr string
	backend string
	logs    *syncbuf.Buffer // wslb's log, of every start
}

// start runs wslb on the config file, its log kept in f.logs.
func (f *acmeFixture) start(t *testing.T) *running {
	t.Helper()
	cfg, err := config.Load(f.path)
	if err != nil {
		t.Fatal(err)
	}
	return startServeLogged(t, cfg, serveOptions{path: f.path}, f.logs)
}

// failed is a failing test's message: err, then wslb's and pebble's logs.
func (f *acmeFixture) failed(what string, err error) string {
	return fmt.Sprintf("%s: %v\nwslb:\n%s\npebble:\n%s", what, err, f.logs.String(), f.peb.Log())
}

// acmeConfig writes the config file: the TLS listener on f.tlsAddr with
// acme for domains, and, when plainAddr is set, a plain l7 listener there.
func (f *acmeFixture) write(t *testing.T, plainAddr string, domains ...string) {
	t.Helper()
	plain := ""
	if plainAddr != "" {
		plain = fmt.Sprintf("  - {name: http, listen: %s, mode: l7, pool: p}\n", plainAddr)
	}
	text := fmt.Sprintf(`admin: {listen: ""}
shutdown: {drain_timeout: 0s, close_spread: 0s}
listeners:
%s  - name: https
    listen: %s
    mode: l7
    pool: p
    tls:
      acme: {email: ops@wslb.example, domains: [%s], directory: %q, ca: %q, cache: acme}
pools:
  - {name: p, backends: [{address: %s}]}
`, plain, f.tlsAddr, strings.Join(domains, ", "), f.peb.Directory, f.peb.CAFile, f.backend)
	if err := os.WriteFile(f.path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// newACMEFixture starts a WebSocket backend and pebble, which validates
// TLS-ALPN-01 on the port of the TLS listener to come and HTTP-01 on
// httpPort (0: never answered).
func newACMEFixture(t *testing.T, httpPort int, validity time.Duration) *acmeFixture {
	t.Helper()
	f := &acmeFixture{dir: t.TempDir(), logs: &syncbuf.Buffer{}, tlsAddr: loopback.FreeAddr(t), backend: echo.WS(t, echo.WSOptions{Name: "acme-backend"})}
	f.path = filepath.Join(f.dir, "config.yaml")
	tlsPort := portOf(t, f.tlsAddr)
	if httpPort != 0 {
		tlsPort = 0 // pebble can reach HTTP-01 alone
	}
	f.peb = pebbletest.Start(t, pebbletest.Options{HTTPPort: httpPort, TLSPort: tlsPort, Validity: validity,
		Domains: []string{acmeDomain, "other.wslb.example"}})
	return f
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

// handshake runs a TLS handshake with the listener at addr for name,
// verifying its chain against roots, and returns the leaf.
func handshake(addr, name string, roots *x509.CertPool) (*x509.Certificate, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second},
		Config: &tls.Config{ServerName: name, RootCAs: roots, NextProtos: []string{"http/1.1"}}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // an order on the first
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

// wsOverACME opens a WebSocket through the TLS listener with name's SNI
// and checks that it reaches the backend.
func wsOverACME(t *testing.T, addr, name string, roots *x509.CertPool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{ServerName: name, RootCAs: roots}}}
	c := dialWS(ctx, t, "wss://"+addr+"/?hello=1", &websocket.DialOptions{HTTPClient: client})
	if got := greeting(ctx, t, c); got != "acme-backend" {
		t.Fatalf("greeting %q", got)
	}
	wsEcho(ctx, t, c, "over a certificate from ACME")
}

// TestACMETLSALPN01: a TLS listener with tls.acme and no certificate of its
// own, and pebble validating TLS-ALPN-01 on it: the first handshake for the
// domain gets a certificate pebble issued, chained to pebble's root, and a
// WebSocket goes through. A name outside domains fails its handshake and
// orders nothing. A reload of the same file keeps the manager; one that
// changes the block makes another. The cache folder holds the certificate,
// and wslb started again, with pebble stopped, serves it.
func TestACMETLSALPN01(t *testing.T) {
	f := newACMEFixture(t, 0, 0)
	f.write(t, "", acmeDomain)
	r := f.start(t)
	roots := f.peb.Roots(t)

	leaf, err := handshake(f.tlsAddr, acmeDomain, roots)
	if err != nil {
		t.Fatal(f.failed("handshake for "+acmeDomain, err))
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != acmeDomain {
		t.Errorf("certificate for %v, want [%s]", leaf.DNSNames, acmeDomain)
	}
	if got := f.peb.Orders(); got != 1 {
		t.Errorf("pebble took %d orders, want 1", got)
	}
	wsOverACME(t, f.tlsAddr, acmeDomain, roots)

	// other.wslb.example resolves for pebble, so only the host policy
	// keeps wslb from ordering it.
	if _, err := handshake(f.tlsAddr, "other.wslb.example", roots); err == nil {
		t.Fatal("a handshake for a name outside tls.acme.domains succeeded")
	}
	if got := f.peb.Orders(); got != 1 {
		t.Errorf("pebble took %d orders after a name outside domains, want 1", got)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "acme", acmeDomain)); err != nil {
		t.Errorf("the cache holds no certificate: %v", err)
	}

	in := r.in
	block := *in.gen.Load().cfg.Listeners[0].TLS.ACME
	before, _ := in.acme.Manager(block)
	reload := func() {
		t.Helper()
		n := in.metrics.ConfigReloads.WithLabelValues("ok")
		was := testutil.ToFloat64(n)
		in.reloadNow <- struct{}{}
		wait.For(t, "the reload", func() bool { return testutil.ToFloat64(n) == was+1 })
	}
	reload()
	if after, _ := in.acme.Manager(block); after != before {
		t.Error("a reload of the same acme block made another manager")
	}
	f.write(t, "", acmeDomain, "other.wslb.example")
	reload()
	if changed, _ := in.acme.Manager(*in.gen.Load().cfg.Listeners[0].TLS.ACME); changed == before {
		t.Error("a changed acme block kept its manager")
	}
	f.write(t, "", acmeDomain)
	reload()

	r.cancel()
	if code := r.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	f.peb.Stop() // nothing can be ordered now
	f.start(t)
	again, err := handshake(f.tlsAddr, acmeDomain, roots)
	if err != nil {
		t.Fatalf("handshake after a restart, from the cache: %v", err)
	}
	if again.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Errorf("after a restart: serial %v, want the cached %v", again.SerialNumber, leaf.SerialNumber)
	}
	wsOverACME(t, f.tlsAddr, acmeDomain, roots)
}

// TestACMEHTTP01: pebble can reach only a plain l7 listener of the same
// wslb (HTTP-01; TLS-ALPN-01 goes to a dead port), and the TLS listener
// still gets its certificate. On the plain listener a challenge path is
// answered by wslb for an ACME domain, also as the second request of a
// kept-alive conn (which the keep-alive loop hands back), and routed to
// the pool for any other host.
func TestACMEHTTP01(t *testing.T) {
	plainAddr := loopback.FreeAddr(t)
	f := newACMEFixture(t, portOf(t, plainAddr), 0)
	f.write(t, plainAddr, acmeDomain)
	f.start(t)
	roots := f.peb.Roots(t)

	leaf, err := handshake(f.tlsAddr, acmeDomain, roots)
	if err != nil {
		t.Fatal(f.failed("handshake for "+acmeDomain, err))
	}
	if leaf.DNSNames[0] != acmeDomain {
		t.Errorf("certificate for %v", leaf.DNSNames)
	}
	if !strings.Contains(f.peb.Log(), "validate w/ HTTP") {
		t.Errorf("pebble's log names no http-01 validation:\n%s", f.peb.Log())
	}
	wsOverACME(t, f.tlsAddr, acmeDomain, roots)

	// A token as autocert keeps it in its cache, where its HTTP handler
	// also looks.
	if err := os.WriteFile(filepath.Join(f.dir, "acme", "tok+http-01"), []byte("tok.thumbprint"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", plainAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	get := func(host, path string) (int, string) {
		t.Helper()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("GET %s%s: %v", host, path, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(body)
	}
	if code, _ := get(acmeDomain, "/"); code == http.StatusOK {
		t.Errorf("a plain GET to the WebSocket backend answered 200")
	}
	// The conn now waits on the keep-alive loop.
	if code, body := get(acmeDomain+":80", "/.well-known/acme-challenge/tok"); code != 200 || body != "tok.thumbprint" {
		t.Errorf("challenge on a kept-alive conn: %d %q", code, body)
	}
	if code, body := get(acmeDomain, "/.well-known/acme-challenge/missing"); code != http.StatusNotFound {
		t.Errorf("unknown token: %d %q, want 404", code, body)
	}
	if code, body := get("backend.example", "/.well-known/acme-challenge/tok"); code == 200 || body == "tok.thumbprint" {
		t.Errorf("another host's challenge was answered by wslb: %d %q", code, body)
	}
}

// TestACMERenewal: pebble issues certificates that live 6 s, and the
// listener serves a new one before the first expires: autocert renews a
// third of the lifetime before the end (30 days for Let's Encrypt's 90),
// in the background, without a handshake waiting for it.
func TestACMERenewal(t *testing.T) {
	f := newACMEFixture(t, 0, 6*time.Second)
	f.write(t, "", acmeDomain)
	f.start(t)
	roots := f.peb.Roots(t)
	first, err := handshake(f.tlsAddr, acmeDomain, roots)
	if err != nil {
		t.Fatal(f.failed("handshake", err))
	}
	// Renewal starts about 3.3 s after issuance; wait.Within polls.
	wait.Within(t, "a renewed certificate", 20*time.Second, func() bool {
		leaf, err := handshake(f.tlsAddr, acmeDomain, roots)
		return err == nil && leaf.SerialNumber.Cmp(first.SerialNumber) != 0 && leaf.NotAfter.After(first.NotAfter)
	})
}

// TestCheckACME: -check reports an acme.ca that cannot be read and one
// that holds no certificate, each with its line, and a domain two
// different acme blocks claim.
func TestCheckACME(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	os.WriteFile(notPEM, []byte("not a certificate\n"), 0o644)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(`listeners:
  - name: a
    listen: 127.0.0.1:0
    mode: l7
    tls:
      acme:
        domains: [chat.example.com]
        ca: missing-ca.pem
  - name: b
    listen: 127.0.0.1:0
    mode: l7
    tls:
      acme: {domains: [chat.example.com], ca: not.pem}
`), 0o644)
	expectProblems(t, bad,
		bad+":8: listeners[0].tls.acme.ca: cannot read: open "+filepath.Join(dir, "missing-ca.pem")+": no such file or directory",
		bad+":13: listeners[1].tls.acme.ca: "+notPEM+" holds no PEM certificate",
		bad+":13: listeners[1].tls.acme.domains[0]: chat.example.com is also in listeners[0].tls.acme, with other settings",
	)
}
