package tunnel

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/wslb/wslb/internal/certtest"
	"github.com/wslb/wslb/internal/tcptest"
)

// tlsPair returns a TLS client conn and the relay's TLS server end of it,
// handshaken, over real loopback TCP. The client writes through wrap, if
// given.
func tlsPair(t *testing.T, wrap ...func(net.Conn) net.Conn) (client, server *tls.Conn) {
	t.Helper()
	ca := certtest.NewCA(t)
	cert := ca.Issue(t, certtest.Leaf{Names: []string{"localhost"}})
	tcpA, b := tcptest.Pair(t)
	var a net.Conn = tcpA
	for _, w := range wrap {
		a = w(a)
	}
	server = tls.Server(b, &tls.Config{Certificates: []tls.Certificate{cert}})
	client = tls.Client(a, &tls.Config{ServerName: "localhost", RootCAs: ca.Pool()})
	errs := make(chan error, 1)
	go func() { errs <- server.Handshake() }()
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	return client, server
}

// TestTLSRelay: a TLS client side (as l7 terminates wss) relays on pooled
// buffers: bulk both ways arrives whole, small messages still echo after
// the relay went quiet, and a client close ends it.
func TestTLSRelay(t *testing.T) {
	engines(t, func(t *testing.T, e *Engine) {
		c, front := tlsPair(t)
		lbBack, b := tcptest.Pair(t)
		done := make(chan Stats, 1)
		e.Start(t.Context(), Relay{Idle: time.Hour}, front, lbBack, func(s Stats) { done <- s })
		c.SetDeadline(time.Now().Add(20 * time.Second))
		b.SetDeadline(time.Now().Add(20 * time.Second))

		up := make([]byte, 3<<20)
		rand.Read(up)
		go c.Write(up)
		got := make([]byte, len(up))
		if _, err := io.ReadFull(b, got); err != nil || !bytes.Equal(got, up) {
			t.Fatalf("backend got %d bytes intact=%v: %v", len(got), bytes.Equal(got, up), err)
		}
		go b.Write(up)
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, up) {
			t.Fatalf("client got %d bytes intact=%v: %v", len(got), bytes.Equal(got, up), err)
		}
		for i := range 3 {
			// A gap on purpose: each message comes after the buffers went back.
			time.Sleep(2 * pause)
			c.Write([]byte{byte(i)})
			one := make([]byte, 1)
			if _, err := io.ReadFull(b, one); err != nil || one[0] != byte(i) {
				t.Fatalf("message %d: %v %v", i, one, err)
			}
			b.Write([]byte{byte(i + 10)})
			if _, err := io.ReadFull(c, one); err != nil || one[0] != byte(i+10) {
				t.Fatalf("answer %d: %v %v", i, one, err)
			}
		}
		c.Close()
		if rest, err := io.ReadAll(b); err != nil || len(rest) != 0 {
			t.Fatalf("backend read %d bytes, %v; want EOF after the client closed", len(rest), err)
		}
		b.Close()
		select {
		case s := <-done:
			if s.End != EndClient || s.Rx != int64(len(up))+3 || s.Tx != int64(len(up))+3 {
				t.Fatalf("got %+v", s)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("relay did not end")
		}
	})
}

// TestTLSRelayReadAhead: records that crypto/tls read from the socket
// before the tunnel started (a backend's first frame right behind its 101,
// in one segment) are relayed at once, though the socket shows nothing to
// read.
func TestTLSRelayReadAhead(t *testing.T) {
	engines(t, func(t *testing.T, e *Engine) {
		var bc *tcptest.Batch
		c, front := tlsPair(t, func(a net.Conn) net.Conn { bc = &tcptest.Batch{Conn: a}; return bc })
		bc.Hold = true
		c.Write([]byte("HEAD"))
		c.Write([]byte("FRAME"))
		if err := bc.Flush(); err != nil {
			t.Fatal(err)
		}
		front.SetReadDeadline(time.Now().Add(5 * time.Second))
		head := make([]byte, 4)
		if _, err := io.ReadFull(front, head); err != nil || string(head) != "HEAD" {
			t.Fatalf("read %q: %v", head, err)
		}
		front.SetReadDeadline(time.Time{})

		lbBack, b := tcptest.Pair(t)
		done := make(chan Stats, 1)
		e.Start(t.Context(), Relay{Idle: time.Hour}, front, lbBack, func(s Stats) { done <- s })
		b.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, len("FRAME"))
		if _, err := io.ReadFull(b, got); err != nil || string(got) != "FRAME" {
			t.Fatalf("backend got %q: %v; want the record read ahead", got, err)
		}
		c.Close()
		b.Close()
		select {
		case s := <-done:
			if s.Rx != int64(len("FRAME")) {
				t.Fatalf("rx %d, want %d", s.Rx, len("FRAME"))
			}
		case <-time.After(10 * time.Second):
			t.Fatal("relay did not end")
		}
	})
}
