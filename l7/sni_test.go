package l7

import (
	"crypto/tls"
	"fmt"
	"os"
	"testing"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/internal/certtest"
	"github.com/wslb/wslb/internal/echo"
)

// serverCert completes a TLS handshake with the listener at addr, asking
// for name by SNI ("" sends none), and returns the leaf it was given.
func serverCert(t *testing.T, addr, name string, roots *tls.Config) (leafName string, serial string) {
	t.Helper()
	conf := roots.Clone()
	conf.ServerName = name
	if name == "" {
		conf.InsecureSkipVerify = true // no name to verify against; the leaf is checked below
	}
	d := &tls.Dialer{Config: conf}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("handshake with SNI %q: %v", name, err)
	}
	defer c.Close()
	leaf := c.(*tls.Conn).ConnectionState().PeerCertificates[0]
	return leaf.Subject.CommonName, leaf.SerialNumber.String()
}

// TestCertificatesBySNI: tls.cert is the default and tls.certificates are
// picked by the names in each (exact and wildcard); a reload reads the files
// again.
func TestCertificatesBySNI(t *testing.T) {
	ca := certtest.NewCA(t)
	defCert, defKey := certtest.Write(t, ca.Issue(t, certtest.Leaf{Names: []string{"default.test", "127.0.0.1"}}))
	aCert, aKey := certtest.Write(t, ca.Issue(t, certtest.Leaf{Names: []string{"a.test"}}))
	wCert, wKey := certtest.Write(t, ca.Issue(t, certtest.Leaf{Names: []string{"*.wild.test"}}))
	be := newBackend(t, echo.WSHandler(echo.WSOptions{}))
	yaml := simpleYAML(fmt.Sprintf("    tls:\n      cert: %s\n      key: %s\n      certificates:\n        - {cert: %s, key: %s}\n        - {cert: %s, key: %s}\n",
		defCert, defKey, aCert, aKey, wCert, wKey), be.addr())
	l := startLB(t, yaml)
	roots := &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}

	for _, tc := range []struct{ sni, want string }{
		{"a.test", "a.test"},
		{"x.wild.test", "*.wild.test"},
		{"A.TEST", "a.test"}, // names compare without case
		{"default.test", "default.test"},
		{"", "default.test"}, // no SNI: the first certificate
	} {
		if got, _ := serverCert(t, l.addr, tc.sni, roots); got != tc.want {
			t.Errorf("SNI %q got the certificate of %q, want %q", tc.sni, got, tc.want)
		}
	}
	// A name no certificate holds gets the default one, which the client
	// then rejects: the handshake fails for the client, as with nginx.
	conf := roots.Clone()
	conf.ServerName = "other.test"
	if c, err := (&tls.Dialer{Config: conf}).Dial("tcp", l.addr); err == nil {
		c.Close()
		t.Error("SNI other.test: handshake verified a certificate for a name none holds")
	}

	// Reload: a.test's files now hold a new certificate.
	_, oldSerial := serverCert(t, l.addr, "a.test", roots)
	fresh := ca.Issue(t, certtest.Leaf{Names: []string{"a.test"}})
	newCert, newKey := certtest.Write(t, fresh)
	for _, p := range [][2]string{{newCert, aCert}, {newKey, aKey}} {
		data, err := os.ReadFile(p[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p[1], data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := config.Parse([]byte(yaml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.proxy.Update(cfg.Listeners[0], l.pools); err != nil {
		t.Fatal(err)
	}
	if _, serial := serverCert(t, l.addr, "a.test", roots); serial != fresh.Leaf.SerialNumber.String() || serial == oldSerial {
		t.Errorf("after the reload a.test got serial %s, want the new %s (old %s)", serial, fresh.Leaf.SerialNumber, oldSerial)
	}
}

// TestCertificatesListAlone: a certificates list without cert/key serves,
// its first entry the default.
func TestCertificatesListAlone(t *testing.T) {
	ca := certtest.NewCA(t)
	aCert, aKey := certtest.Write(t, ca.Issue(t, certtest.Leaf{Names: []string{"a.test", "127.0.0.1"}}))
	bCert, bKey := certtest.Write(t, ca.Issue(t, certtest.Leaf{Names: []string{"b.test"}}))
	be := newBackend(t, echo.WSHandler(echo.WSOptions{}))
	l := startLB(t, simpleYAML(fmt.Sprintf("    tls:\n      certificates:\n        - {cert: %s, key: %s}\n        - {cert: %s, key: %s}\n",
		aCert, aKey, bCert, bKey), be.addr()))
	roots := &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
	for sni, want := range map[string]string{"b.test": "b.test", "": "a.test", "a.test": "a.test"} {
		if got, _ := serverCert(t, l.addr, sni, roots); got != want {
			t.Errorf("SNI %q got %q, want %q", sni, got, want)
		}
	}
}
