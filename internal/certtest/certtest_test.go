package certtest

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/wslb/wslb/internal/tcptest"
)

// handshake runs a real TLS handshake over loopback between a server with
// cert and a client that trusts roots and expects name.
func handshake(t *testing.T, cert tls.Certificate, roots *x509.CertPool, name string) error {
	t.Helper()
	a, b := tcptest.Pair(t)
	srv := tls.Server(b, &tls.Config{Certificates: []tls.Certificate{cert}})
	go srv.Handshake()
	c := tls.Client(a, &tls.Config{RootCAs: roots, ServerName: name})
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return c.Handshake()
}

func TestIssue(t *testing.T) {
	ca := NewCA(t)
	cert := ca.Issue(t, Leaf{Names: []string{"127.0.0.1", "backend.test"}})
	for _, name := range []string{"127.0.0.1", "backend.test"} {
		if err := handshake(t, cert, ca.Pool(), name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	var hostErr x509.HostnameError
	if err := handshake(t, cert, ca.Pool(), "other.test"); !errors.As(err, &hostErr) {
		t.Errorf("wrong name: %v, want a HostnameError", err)
	}
	var authErr x509.UnknownAuthorityError
	if err := handshake(t, cert, NewCA(t).Pool(), "backend.test"); !errors.As(err, &authErr) {
		t.Errorf("another CA: %v, want an UnknownAuthorityError", err)
	}
	var invalid x509.CertificateInvalidError
	old := ca.Issue(t, Leaf{Names: []string{"backend.test"}, Expired: true})
	if err := handshake(t, old, ca.Pool(), "backend.test"); !errors.As(err, &invalid) || invalid.Reason != x509.Expired {
		t.Errorf("expired: %v, want CertificateInvalidError Expired", err)
	}
}

func TestWrite(t *testing.T) {
	ca := NewCA(t)
	certFile, keyFile := Write(t, ca.Issue(t, Leaf{Names: []string{"client"}, Client: true}))
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("client certificate does not verify: %v", err)
	}
	if _, _, roots := SelfSigned(t); roots == nil {
		t.Fatal("SelfSigned returned no roots")
	}
}
