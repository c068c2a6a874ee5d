package pool

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"testing"
	"time"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/internal/certtest"
	"github.com/wslb/wslb/internal/tcptest"
)

// tlsConfig is a pool of n backends over TLS with t.
func tlsConfig(n int, t *config.BackendTLS) config.Pool {
	c := testConfig(config.BalanceLeastConn, make([]int, n)...)
	c.TLS = t
	return c
}

func TestBackendTLS(t *testing.T) {
	ca := certtest.NewCA(t)
	client := ca.Issue(t, certtest.Leaf{Names: []string{"wslb"}, Client: true})
	loaded := func() *config.BackendTLS { return &config.BackendTLS{CA: "ca.pem", Roots: ca.Pool()} }

	if b := New(testConfig(config.BalanceLeastConn, 1)).Backends()[0]; b.TLS() != nil {
		t.Fatal("a plain pool's backend has a TLS client")
	}
	pc := tlsConfig(2, loaded())
	pc.Backends[1].Address = "chat-2.internal:80" // as written by name, resolved to 10.0.0.2
	p := New(pc)
	b0, b1 := p.Backends()[0], p.Backends()[1]
	if c := b0.TLS(); c == nil || c.ServerName != "10.0.0.1" || !c.RootCAs.Equal(ca.Pool()) ||
		len(c.NextProtos) != 1 || c.NextProtos[0] != "http/1.1" || c.ClientSessionCache == nil || c.GetClientCertificate != nil {
		t.Fatalf("IP backend's TLS client = %+v; want ServerName 10.0.0.1, the CA, ALPN http/1.1, a session cache, no client certificate", c)
	}
	if got := b1.TLS().ServerName; got != "chat-2.internal" {
		t.Errorf("named backend verified as %q, want its hostname", got)
	}
	first := b0.TLS()

	// A reload that loaded the same files again keeps the client (and so
	// the sessions and idle conns); any change builds a new one.
	p = Reconcile(p, tlsConfig(2, loaded()))
	if p.Backends()[0].TLS() != first {
		t.Error("an unchanged tls block rebuilt the TLS client")
	}
	named := loaded()
	named.ServerName, named.Cert, named.Key, named.Certificate = "chat.internal", "c", "k", &client
	p = Reconcile(p, tlsConfig(2, named))
	c := p.Backends()[0].TLS()
	if c == first || c.ServerName != "chat.internal" || p.Backends()[1].TLS().ServerName != "chat.internal" {
		t.Fatalf("server_name not applied: %q", c.ServerName)
	}
	if got, err := c.GetClientCertificate(&tls.CertificateRequestInfo{}); err != nil || got != &client {
		t.Errorf("client certificate = %v, %v; want the configured one, whatever the backend asks for", got, err)
	}
	unloaded := &config.BackendTLS{CA: "ca.pem"} // Parse: the CA was never read
	p = Reconcile(p, tlsConfig(2, unloaded))
	if roots := p.Backends()[0].TLS().RootCAs; roots == nil || !roots.Equal(x509.NewCertPool()) {
		t.Error("a CA never loaded falls back to the system's roots; want an empty pool that trusts nothing")
	}
	p = Reconcile(p, tlsConfig(2, nil))
	if p.Backends()[0].TLS() != nil {
		t.Error("removing the tls block left a TLS client")
	}
}

// tlsConnPair is a handshaken TLS conn to a test server over loopback TCP,
// the end the cache holds; the server writes through a tcptest.Batch.
type tlsConnPair struct {
	client *tls.Conn
	server *tls.Conn
	batch  *tcptest.Batch
}

func dialTLS(t *testing.T, ca *certtest.CA, name string) tlsConnPair {
	t.Helper()
	a, s := tcptest.Pair(t)
	bc := &tcptest.Batch{Conn: s}
	server := tls.Server(bc, &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, certtest.Leaf{Names: []string{name}})}})
	client := tls.Client(a, &tls.Config{ServerName: name, RootCAs: ca.Pool()})
	errs := make(chan error, 1)
	go func() { errs <- server.Handshake() }()
	a.SetDeadline(time.Now().Add(5 * time.Second))
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	a.SetDeadline(time.Time{})
	return tlsConnPair{client: client, server: server, batch: bc}
}

// answer has the server send resp and then more, in one segment, and the
// client read resp only: what follows is read from the socket with it and
// held by crypto/tls.
func (p tlsConnPair) answer(t *testing.T, resp string, more func()) {
	t.Helper()
	p.batch.Hold = true
	p.server.Write([]byte(resp))
	more()
	if err := p.batch.Flush(); err != nil {
		t.Fatal(err)
	}
	p.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(resp))
	if _, err := io.ReadFull(p.client, got); err != nil && err != io.EOF {
		t.Fatalf("read %q: %v", resp, err)
	}
}

// TestIdleTLS: kept-alive TLS conns go to and come from the cache as plain
// ones do, and the liveness probe sees what the backend sent on them,
// whether it waits on the socket or in crypto/tls.
func TestIdleTLS(t *testing.T) {
	ca := certtest.NewCA(t)
	newBackend := func() *Backend { return New(tlsConfig(1, &config.BackendTLS{})).Backends()[0] }
	tests := []struct {
		name  string
		do    func(t *testing.T, p tlsConnPair)
		alive bool
	}{
		{"a quiet conn", func(*testing.T, tlsConnPair) {}, true},
		{"close_notify on the socket", func(t *testing.T, p tlsConnPair) {
			p.server.CloseWrite()
			waitStale(t, p.client)
		}, false},
		{"close_notify read with the last response", func(t *testing.T, p tlsConnPair) {
			p.answer(t, "resp", func() { p.server.CloseWrite() })
		}, false},
		{"a record read with the last response", func(t *testing.T, p tlsConnPair) {
			p.answer(t, "resp", func() { p.server.Write([]byte("junk")) })
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBackend()
			p := dialTLS(t, ca, "backend.test")
			tt.do(t, p)
			var c IdleCache
			defer c.Close()
			c.Put(b, p.client, nil)
			got, _, ok := c.Get(b)
			if ok != tt.alive {
				t.Fatalf("Get = %v, want %v", ok, tt.alive)
			}
			if !ok {
				return
			}
			// The probe left the conn usable: a round trip still works.
			got.SetDeadline(time.Now().Add(5 * time.Second))
			go func() {
				buf := make([]byte, 4)
				io.ReadFull(p.server, buf)
				p.server.Write(buf)
			}()
			got.Write([]byte("ping"))
			buf := make([]byte, 4)
			if _, err := io.ReadFull(got, buf); err != nil || string(buf) != "ping" {
				t.Fatalf("round trip after Get: %q, %v", buf, err)
			}
		})
	}
}

// TestIdleTLSReload: a reload that changes a pool's TLS client retires the
// idle conns made under the old one; one that loads the same files keeps
// them. A plain conn is never cached for a TLS backend.
func TestIdleTLSReload(t *testing.T) {
	ca := certtest.NewCA(t)
	loaded := func(name string) *config.BackendTLS {
		return &config.BackendTLS{ServerName: name, CA: "ca", Roots: ca.Pool()}
	}
	p := New(tlsConfig(1, loaded("backend.test")))
	b := p.Backends()[0]
	var c IdleCache
	defer c.Close()

	kept := dialTLS(t, ca, "backend.test")
	c.Put(b, kept.client, nil)
	p = Reconcile(p, tlsConfig(1, loaded("backend.test")))
	if got, _, ok := c.Get(b); !ok || got != kept.client {
		t.Fatal("an unchanged reload dropped the idle TLS conn")
	}

	old := dialTLS(t, ca, "backend.test")
	c.Put(b, old.client, nil)
	Reconcile(p, tlsConfig(1, loaded("other.test")))
	if _, _, ok := c.Get(b); ok {
		t.Fatal("a conn verified under the old server_name was handed out")
	}
	old.server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := old.server.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the retired conn was not closed: %v", err)
	}

	plain := dialPairs(t, 1)[0]
	c.Put(b, plain.client, nil)
	if c.Len(b) != 0 || !closedByCache(t, plain) {
		t.Error("a plain conn was cached for a TLS backend")
	}
	tlsToPlain := New(testConfig(config.BalanceLeastConn, 1)).Backends()[0]
	stray := dialTLS(t, ca, "backend.test")
	c.Put(tlsToPlain, stray.client, nil)
	if c.Len(tlsToPlain) != 0 {
		t.Error("a TLS conn was cached for a plain backend")
	}
}
