package acme

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/internal/certtest"
	"github.com/wslb/wslb/internal/loopback"
)

// block is an acme block whose directory refuses conns: nothing in these
// tests reaches a CA.
func block(t *testing.T, domains ...string) config.ACME {
	return config.ACME{Domains: domains, Directory: "https://" + loopback.DeadAddr(t) + "/dir", Cache: t.TempDir()}
}

func TestManages(t *testing.T) {
	m, err := New(block(t, "Chat.Example.com"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		host string
		want bool
	}{
		{"chat.example.com", true},
		{"CHAT.example.com.", true},
		{"chat.example.com:80", true},
		{"other.example.com", false},
		{"example.com", false},
		{"", false},
	} {
		if got := m.Manages(tc.host); got != tc.want {
			t.Errorf("Manages(%q) = %v, want %v", tc.host, got, tc.want)
		}
		if err := m.policy(t.Context(), tc.host); (err == nil) != tc.want {
			t.Errorf("policy(%q) = %v", tc.host, err)
		}
	}
}

// TestTLSConfig: a ClientHello for an ACME domain or a TLS-ALPN-01
// challenge goes to autocert, any other to the listener's own
// certificates; with none, the handshake fails saying why.
func TestTLSConfig(t *testing.T) {
	m, err := New(block(t, "chat.example.com"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ca := certtest.NewCA(t)
	own := ca.Issue(t, certtest.Leaf{Names: []string{"static.example.com"}})
	base := &tls.Config{Certificates: []tls.Certificate{own}, NextProtos: []string{"http/1.1"}}
	tc := m.TLSConfig(base)
	if want := []string{"http/1.1", "acme-tls/1"}; !slices.Equal(tc.NextProtos, want) {
		t.Errorf("NextProtos %q, want %q", tc.NextProtos, want)
	}
	if len(base.NextProtos) != 1 || base.GetCertificate != nil {
		t.Error("the base config was changed")
	}
	if c, err := tc.GetCertificate(&tls.ClientHelloInfo{ServerName: "static.example.com"}); c != nil || err != nil {
		t.Errorf("another name: %v, %v; want nil, nil (Go picks among Certificates)", c, err)
	}
	// The CA is unreachable: an error from autocert proves it was asked.
	if _, err := tc.GetCertificate(&tls.ClientHelloInfo{ServerName: "chat.example.com"}); err == nil {
		t.Error("an ACME domain was served without its manager")
	}
	_, err = tc.GetCertificate(&tls.ClientHelloInfo{ServerName: "chat.example.com", SupportedProtos: []string{"acme-tls/1"}})
	if err == nil || !strings.Contains(err.Error(), "token cert") {
		t.Errorf("a TLS-ALPN-01 hello without a challenge under way: %v", err)
	}

	alone := m.TLSConfig(&tls.Config{})
	_, err = alone.GetCertificate(&tls.ClientHelloInfo{ServerName: "static.example.com"})
	if err == nil || !strings.Contains(err.Error(), "not one of tls.acme.domains") {
		t.Errorf("another name without certificates of its own: %v", err)
	}
}

func TestNewBadCA(t *testing.T) {
	b := block(t, "chat.example.com")
	b.CA = filepath.Join(t.TempDir(), "missing.pem")
	if _, err := New(b, nil); err == nil || !strings.Contains(err.Error(), "acme ca") {
		t.Errorf("missing CA file: %v", err)
	}
	os.WriteFile(b.CA, []byte("not PEM"), 0o644)
	if _, err := New(b, nil); err == nil || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Errorf("CA file without PEM: %v", err)
	}
}

// TestSet: a block keeps its manager while a config uses it; Keep retires
// the others, whose requests then fail without reaching the CA, and turns
// HTTP-01 on when a plain l7 listener is there to answer it.
func TestSet(t *testing.T) {
	s := &Set{}
	a, b := block(t, "a.example.com"), block(t, "b.example.com")
	ma, err := s.Manager(a)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := s.Manager(a); again != ma {
		t.Error("the same block got another manager")
	}
	mb, _ := s.Manager(b)
	tlsListener := func(c config.ACME) config.Listener {
		return config.Listener{Name: "https", Mode: config.ModeL7, TLS: &config.TLS{ACME: &c}}
	}
	s.Keep(&config.Config{Listeners: []config.Listener{tlsListener(a)}})
	if !mb.rt.done.Load() || ma.rt.done.Load() {
		t.Errorf("retired: a %v, b %v; want b alone", ma.rt.done.Load(), mb.rt.done.Load())
	}
	if _, err := mb.ac.Client.HTTPClient.Get("https://127.0.0.1/"); err == nil || !strings.Contains(err.Error(), "retired") {
		t.Errorf("a retired manager's request: %v", err)
	}
	if again, _ := s.Manager(b); again == mb {
		t.Error("a retired manager came back")
	}

	req := httptest.NewRequest("GET", "http://a.example.com/.well-known/acme-challenge/tok", nil)
	if s.Challenge(req) != nil {
		t.Error("a challenge answered with HTTP-01 off (no plain listener)")
	}
	plain := config.Listener{Name: "http", Mode: config.ModeL7}
	s.Keep(&config.Config{Listeners: []config.Listener{plain, tlsListener(a)}})
	h := s.Challenge(req)
	if h == nil {
		t.Fatal("no handler for a challenge of a.example.com")
	}
	os.WriteFile(filepath.Join(a.Cache, "tok+http-01"), []byte("tok.key"), 0o600)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || rec.Body.String() != "tok.key" {
		t.Errorf("challenge answer %d %q", rec.Code, rec.Body.String())
	}
	for _, u := range []string{"http://c.example.com/.well-known/acme-challenge/tok", "http://a.example.com/other"} {
		if s.Challenge(httptest.NewRequest("GET", u, nil)) != nil {
			t.Errorf("%s taken for a challenge", u)
		}
	}
	var none *Set
	if none.Challenge(req) != nil {
		t.Error("a nil set answered")
	}
	s.Close()
	if !ma.rt.done.Load() {
		t.Error("Close left a manager running")
	}
}
