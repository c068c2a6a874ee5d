package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wslb/wslb/internal/certtest"
	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/wait"
	"github.com/wslb/wslb/pool"
)

// TestCheckBackendTLS: -check reports a TLS pool behind an l4 listener, a
// CA bundle that cannot be read and a client certificate without its key,
// each with its line, and passes a pool whose files load.
func TestCheckBackendTLS(t *testing.T) {
	dir := t.TempDir()
	ca := certtest.NewCA(t)
	certFile, keyFile := certtest.Write(t, ca.Issue(t, certtest.Leaf{Names: []string{"wslb"}, Client: true}))
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(`listeners:
  - {name: web, listen: 127.0.0.1:0, mode: l7, pool: secure}
  - name: tcp
    listen: 127.0.0.1:0
    mode: l4
    pool: secure
pools:
  - name: secure
    backends: [{address: 127.0.0.1:9443}]
    tls:
      ca: missing-ca.pem
      cert: `+certFile+`
`), 0o644)
	expectProblems(t, bad,
		bad+`:6: listeners[1].pool: pool "secure" speaks TLS to its backends: only l7 listeners can use it`,
		bad+":10: pools[0].tls.key: cert needs its key",
		bad+":11: pools[0].tls.ca: cannot read CA bundle: open "+filepath.Join(dir, "missing-ca.pem")+": no such file or directory",
	)

	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte(fmt.Sprintf(`listeners: [{name: web, listen: 127.0.0.1:0, mode: l7, pool: secure}]
pools:
  - {name: secure, backends: [{address: 127.0.0.1:9443}], tls: {ca: %s, cert: %s, key: %s}}
`, ca.WriteRoots(t), certFile, keyFile)), 0o644)
	var errOut bytes.Buffer
	if code := run(t.Context(), []string{"-check", "-config", good}, io.Discard, &errOut); code != 0 {
		t.Fatalf("exit %d for a good file: %s", code, errOut.String())
	}
}

// TestBackendTLSReloadAndDrain runs serve on a config file whose pool
// speaks TLS to a wss backend, with WebSocket checks over TLS. The CA file
// first holds the wrong CA: the checks take the backend down. The right CA
// written to the same file and a reload of the unchanged config bring it
// up, since a reload reads the files again. Then a tunnel over TLS works,
// and the drain ends it as it ends a plain one.
func TestBackendTLSReloadAndDrain(t *testing.T) {
	right, wrong := certtest.NewCA(t), certtest.NewCA(t)
	backend := echo.WS(t, echo.WSOptions{Name: "wss-backend", TLS: &tls.Config{
		Certificates: []tls.Certificate{right.Issue(t, certtest.Leaf{Names: []string{"127.0.0.1"}})}}})
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem") // tls.ca is relative to the config file
	copyFile(t, wrong.WriteRoots(t), caFile)
	path := filepath.Join(dir, "config.yaml")
	os.WriteFile(path, []byte(fmt.Sprintf(`
admin: {listen: ""}
shutdown: {drain_timeout: 0s, close_spread: 0s}
listeners:
  - {name: web, listen: 127.0.0.1:0, mode: l7, pool: p}
pools:
  - name: p
    backends: [{address: %s}]
    health: {check: websocket, path: /, interval: 100ms, timeout: 90ms, rise: 1, fall: 1}
    tls: {ca: ca.pem}
`, backend)), 0o644)
	r := startServeFile(t, path)
	in := r.in
	b := in.gen.Load().pools["p"].Backends()[0]
	wait.For(t, "the backend down: its certificate is from another CA", func() bool { return b.State() == pool.StateDown })
	if got := testutil.ToFloat64(in.metrics.HealthChecks.WithLabelValues("p", backend, "fail")); got < 1 {
		t.Errorf("failed checks = %v", got)
	}
	resp, err := http.Get("http://" + in.addr(0) + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d with the only backend down, want 503", resp.StatusCode)
	}

	copyFile(t, right.WriteRoots(t), caFile)
	before := testutil.ToFloat64(in.metrics.ConfigReloads.WithLabelValues("ok"))
	in.reloadNow <- struct{}{}
	wait.For(t, "the reload", func() bool { return testutil.ToFloat64(in.metrics.ConfigReloads.WithLabelValues("ok")) == before+1 })
	wait.For(t, "the backend up under the new CA", b.Up)

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c := dialWS(ctx, t, "ws://"+in.addr(0)+"/?hello=1", nil)
	if _, hello, err := c.Read(ctx); err != nil || string(hello) != "connected to wss-backend" {
		t.Fatalf("greeting %q: %v", hello, err)
	}
	wsEcho(ctx, t, c, "over TLS to the backend")

	r.cancel() // as SIGTERM does
	if _, _, err := c.Read(ctx); err == nil || ctx.Err() != nil {
		t.Fatalf("the tunnel was not ended by the drain: %v", err)
	}
	if code := r.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if got := testutil.ToFloat64(in.metrics.TunnelsClosed.WithLabelValues("web", "p", "drain")); got != 1 {
		t.Errorf("tunnels closed by the drain = %v, want 1", got)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
