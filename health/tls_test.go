package health

import (
	"crypto/tls"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/internal/certtest"
	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/wait"
	"github.com/wslb/wslb/pool"
)

// newTLSBackend is newTestBackend serving https and wss with cert.
func newTLSBackend(t *testing.T, h http.Handler, cert tls.Certificate) *backend {
	t.Helper()
	if h == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	}
	b := &backend{t: t, addr: "127.0.0.1:0", h: h, tls: &tls.Config{Certificates: []tls.Certificate{cert}}}
	b.start()
	t.Cleanup(b.stop)
	return b
}

// tlsHealthConfig is healthConfig with room for a TLS handshake under -race.
func tlsHealthConfig(check string) config.Health {
	cfg := healthConfig(check)
	cfg.Interval, cfg.Timeout = 250*time.Millisecond, 200*time.Millisecond
	return cfg
}

// TestChecksOverTLS: on a pool that speaks TLS, every kind of check speaks
// it too, with the pool's settings: a backend whose certificate verifies is
// up, and one whose certificate is for another name or from another CA is
// down, with the verification error, as a dial to it would fail.
func TestChecksOverTLS(t *testing.T) {
	ca, other := certtest.NewCA(t), certtest.NewCA(t)
	cert := ca.Issue(t, certtest.Leaf{Names: []string{"127.0.0.1", "backend.test"}})
	tests := []struct {
		name    string
		tls     config.BackendTLS
		up      bool
		errPart string
	}{
		{name: "verified against the IP", tls: config.BackendTLS{CA: "ca", Roots: ca.Pool()}, up: true},
		{name: "verified against server_name", tls: config.BackendTLS{ServerName: "backend.test", CA: "ca", Roots: ca.Pool()}, up: true},
		{name: "wrong name", tls: config.BackendTLS{ServerName: "other.test", CA: "ca", Roots: ca.Pool()},
			errPart: "certificate is valid for backend.test, not other.test"},
		{name: "another CA", tls: config.BackendTLS{CA: "other", Roots: other.Pool()},
			errPart: "certificate signed by unknown authority"},
		{name: "another CA, insecure_skip_verify", tls: config.BackendTLS{CA: "other", Roots: other.Pool(), InsecureSkipVerify: true}, up: true},
	}
	for _, check := range []string{config.CheckTCP, config.CheckHTTP, config.CheckWebSocket} {
		var overTLS atomic.Int32 // requests that came over TLS, for http and websocket
		h := handlerFor(check)
		if h != nil {
			inner := h
			h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.TLS != nil {
					overTLS.Add(1)
				}
				inner.ServeHTTP(w, r)
			})
		}
		be := newTLSBackend(t, h, cert)
		for _, tt := range tests {
			t.Run(check+"/"+tt.name, func(t *testing.T) {
				cfg := tlsHealthConfig(check)
				pc := poolConfig(cfg, be)
				pc.TLS = &tt.tls
				p := pool.New(pc)
				b := p.Backends()[0]
				var rec recorder
				startChecks(t, p, cfg, nil, rec.hooks())
				wait.For(t, "first verdict", func() bool { return b.State() != pool.StateUnknown })
				if b.Up() != tt.up {
					t.Fatalf("Up() = %v, want %v (events %+v)", b.Up(), tt.up, rec.changes(b.String()))
				}
				if tt.up {
					return
				}
				ev := rec.changes(b.String())
				if len(ev) != 1 || ev[0].err == nil || !strings.Contains(ev[0].err.Error(), tt.errPart) {
					t.Fatalf("events %+v; want one down with %q", ev, tt.errPart)
				}
			})
		}
		if h != nil && overTLS.Load() == 0 {
			t.Errorf("%s checks reached the backend, but none over TLS", check)
		}
	}
}

// TestCheckSeesNewCertificate: an up backend that comes back from a restart
// with a certificate from another CA fails its checks and goes down; a
// resumed session from before cannot hide the new certificate, since the
// restarted server does not know it.
func TestCheckSeesNewCertificate(t *testing.T) {
	ca, other := certtest.NewCA(t), certtest.NewCA(t)
	be := newTLSBackend(t, echo.WSHandler(echo.WSOptions{}), ca.Issue(t, certtest.Leaf{Names: []string{"127.0.0.1"}}))
	cfg := tlsHealthConfig(config.CheckWebSocket)
	pc := poolConfig(cfg, be)
	pc.TLS = &config.BackendTLS{CA: "ca", Roots: ca.Pool()}
	p := pool.New(pc)
	b := p.Backends()[0]
	var rec recorder
	startChecks(t, p, cfg, nil, rec.hooks())
	wait.For(t, "up", b.Up)

	be.stop()
	be.tls = &tls.Config{Certificates: []tls.Certificate{other.Issue(t, certtest.Leaf{Names: []string{"127.0.0.1"}})}}
	be.start()
	wait.Within(t, "down", time.Duration(cfg.Fall+1)*cfg.Interval+time.Second, func() bool { return b.State() == pool.StateDown })
	ev := rec.changes(b.String())
	if last := ev[len(ev)-1]; last.up || last.err == nil || !strings.Contains(last.err.Error(), "unknown authority") {
		t.Fatalf("last event %+v; want down for the unknown authority", last)
	}
}
