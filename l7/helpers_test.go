package l7

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/frontend"
	"github.com/wslb/wslb/internal/servetest"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/metrics"
	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/tunnel"
)

// lb is a running l7 listener.
type lb struct {
	addr    string
	cfg     config.Listener
	proxy   *Proxy
	pools   map[string]*pool.Pool
	fl      *frontend.Listener
	metrics *metrics.Metrics
}

// startLB serves a config whose text is given whole (the listener must be
// the first one); "ADDR" placeholders are not used: callers format addresses in.
// setup, if any, runs on the Proxy before it takes conns; the listener
// logs to the Proxy's Log as it stands then.
func startLB(t testing.TB, yaml string, setup ...func(*Proxy)) *lb {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml), "test.yaml")
	if err != nil {
		t.Fatalf("config:\n%s\n%v", yaml, err)
	}
	return startLBConfig(t, cfg, setup...)
}

// startLBFile is startLB on a config file, which config.Load reads with
// the files it names (a pool's TLS CA and client certificate).
func startLBFile(t testing.TB, yaml string, setup ...func(*Proxy)) *lb {
	t.Helper()
	path := filepath.Join(t.TempDir(), "wslb.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("config:\n%s\n%v", yaml, err)
	}
	return startLBConfig(t, cfg, setup...)
}

func startLBConfig(t testing.TB, cfg *config.Config, setup ...func(*Proxy)) *lb {
	t.Helper()
	return startLBWorkers(t, cfg, 2, nil, setup...)
}

// startLBWorkers is startLBConfig with workers accept loops, which call
// onAccept, if set, after each accept.
func startLBWorkers(t testing.TB, cfg *config.Config, workers int, onAccept func(), setup ...func(*Proxy)) *lb {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	pools := map[string]*pool.Pool{}
	for _, pc := range cfg.Pools {
		pools[pc.Name] = pool.New(pc)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	lc := cfg.Listeners[0]
	px, err := New(lc, pools, m, log)
	if err != nil {
		t.Fatal(err)
	}
	engine, err := tunnel.NewEngine(2)
	if err != nil {
		t.Fatal(err)
	}
	// Registered before the listener's cleanup, so it runs after the drain.
	t.Cleanup(engine.Close)
	px.Engine = engine
	for _, f := range setup {
		f(px)
	}
	fl := &frontend.Listener{Name: lc.Name, Addrs: lc.Listen, Workers: workers, MaxConns: lc.MaxConnections,
		NewHandler: px.NewWorker, OnLimit: px.OnLimit, Refuse: px.Refuse, Log: px.Log, FDs: px.FDs, OnAccept: onAccept}
	servetest.Serve(t, fl)
	return &lb{addr: fl.BoundAddr().String(), cfg: lc, proxy: px, pools: pools, fl: fl, metrics: m}
}

// simpleLB is one l7 listener with pool p over backends and extra listener
// keys (indented already by the caller with 4 spaces).
func simpleLB(t *testing.T, extra string, backends ...string) *lb {
	t.Helper()
	return startLB(t, simpleYAML(extra, backends...))
}

// simpleYAML is simpleLB's config.
func simpleYAML(extra string, backends ...string) string {
	var sb strings.Builder
	sb.WriteString("listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    mode: l7\n    pool: p\n")
	sb.WriteString(extra)
	sb.WriteString("pools:\n  - name: p\n    backends:\n")
	for _, a := range backends {
		fmt.Fprintf(&sb, "      - address: %s\n", a)
	}
	return sb.String()
}

func (l *lb) errs(reason string) float64 {
	return testutil.ToFloat64(l.metrics.Errors.WithLabelValues("web", reason))
}

// countingServer is an httptest server that counts the TCP conns it
// accepted, the requests it served and, over TLS, the handshakes it ran.
type countingServer struct {
	*httptest.Server
	conns      atomic.Int32
	reqs       atomic.Int32
	handshakes atomic.Int32
}

func newBackend(t testing.TB, h http.Handler) *countingServer {
	t.Helper()
	cs := unstartedBackend(h)
	cs.Start()
	t.Cleanup(cs.Close)
	return cs
}

// newTLSBackend is newBackend serving TLS with conf (its certificate, and
// the client certificates it asks for), counting every handshake, full or
// resumed.
func newTLSBackend(t testing.TB, h http.Handler, conf *tls.Config) *countingServer {
	t.Helper()
	cs := unstartedBackend(h)
	cs.TLS = conf.Clone()
	cs.TLS.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		cs.handshakes.Add(1)
		return nil, nil // go on with conf
	}
	// A refused handshake is what some tests are about, not news.
	cs.Config.ErrorLog = log.New(io.Discard, "", 0)
	cs.StartTLS()
	t.Cleanup(cs.Close)
	return cs
}

func unstartedBackend(h http.Handler) *countingServer {
	cs := &countingServer{}
	cs.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cs.reqs.Add(1)
		h.ServeHTTP(w, r)
	}))
	cs.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			cs.conns.Add(1)
		}
	}
	return cs
}

func (cs *countingServer) addr() string { return cs.Listener.Addr().String() }

// exchange sends raw request bytes and parses one response.
func exchange(t *testing.T, addr, raw string) (*http.Response, string) {
	t.Helper()
	c := tcptest.Dial(t, addr)
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	return readResp(t, bufio.NewReader(c), "GET")
}

func readResp(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, string(body)
}

func tlsClient(roots *x509.CertPool) *http.Client {
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}},
	}
}

// wsKey is a valid Sec-WebSocket-Key for hand-written handshakes.
const wsKey = "dGhlIHNhbXBsZSBub25jZQ=="

func upgradeHead(path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: example.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + wsKey + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
}
