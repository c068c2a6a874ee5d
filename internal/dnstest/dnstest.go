// Package dnstest runs an authoritative DNS server on loopback for the
// length of a test (UDP and TCP on one port, github.com/miekg/dns), whose
// records the test changes while wslb looks them up: A/AAAA and SRV records,
// names that do not exist (NXDOMAIN), names with no records, and names whose
// queries fail (SERVFAIL, REFUSED) or go unanswered (a timeout).
package dnstest

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// SRV is one SRV record of a name.
type SRV struct {
	Target   string
	Port     uint16
	Weight   uint16
	Priority uint16
}

// Server is a DNS server that Start started.
type Server struct {
	addr string

	mu      sync.Mutex
	names   map[string]*record // by lower-case FQDN
	queries map[string]int
}

// record is what the server answers for one name.
type record struct {
	addrs []netip.Addr
	srvs  []SRV
	rcode int  // when not success, every query gets it
	drop  bool // every query goes unanswered
}

// Start runs a server on a free loopback port until the test ends. Every
// name is unknown (NXDOMAIN) until the test sets it.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{names: map[string]*record{}, queries: map[string]int{}}
	var pc net.PacketConn
	var ln net.Listener
	// TCP on the UDP socket's port (the resolver retries over TCP on a
	// truncated answer); a port taken for TCP by someone else means another try.
	for range 20 {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		pc = nil
	}
	if pc == nil {
		t.Fatal("dnstest: no loopback port free for both UDP and TCP")
	}
	s.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(s.serve)
	servers := []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}}
	var wg sync.WaitGroup
	for _, srv := range servers {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		wg.Go(func() { _ = srv.ActivateAndServe() })
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			t.Fatal("dnstest: the server did not start")
		}
	}
	t.Cleanup(func() {
		for _, srv := range servers {
			_ = srv.Shutdown()
		}
		wg.Wait()
	})
	return s
}

// Addr is the server's ip:port, for resolver.servers.
func (s *Server) Addr() string { return s.addr }

func fqdn(name string) string { return strings.ToLower(dns.Fqdn(name)) }

// set replaces name's record with r.
func (s *Server) set(name string, r *record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.names[fqdn(name)] = r
}

// SetAddrs makes name answer with addrs (A for IPv4, AAAA for IPv6); no
// addrs leaves the name existing with no records: an empty answer.
func (s *Server) SetAddrs(name string, addrs ...string) {
	r := &record{}
	for _, a := range addrs {
		r.addrs = append(r.addrs, netip.MustParseAddr(a))
	}
	s.set(name, r)
}

// SetSRV makes name answer with srvs.
func (s *Server) SetSRV(name string, srvs ...SRV) { s.set(name, &record{srvs: srvs}) }

// Delete makes name unknown: NXDOMAIN.
func (s *Server) Delete(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.names, fqdn(name))
}

// Fail makes every query for name get rcode, such as dns.RcodeServerFailure
// or dns.RcodeRefused; its records come back with SetAddrs or SetSRV.
func (s *Server) Fail(name string, rcode int) { s.set(name, &record{rcode: rcode}) }

// Drop makes every query for name go unanswered, so the client times out.
func (s *Server) Drop(name string) { s.set(name, &record{drop: true}) }

// Queries is how many questions for name the server has received.
func (s *Server) Queries(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[fqdn(name)]
}

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeFormatError)
		_ = w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := fqdn(q.Name)
	s.mu.Lock()
	s.queries[name]++
	r := s.names[name]
	s.mu.Unlock()

	m := new(dns.Msg)
	m.SetReply(req)
	// Go's resolver takes a non-authoritative empty answer without
	// recursion for a lame referral, not for "no records".
	m.Authoritative, m.RecursionAvailable = true, true
	switch {
	case r == nil:
		m.Rcode = dns.RcodeNameError
	case r.drop:
		return
	case r.rcode != dns.RcodeSuccess:
		m.Rcode = r.rcode
	default:
		m.Answer = answers(name, q.Qtype, r)
	}
	_ = w.WriteMsg(m)
}

// answers are r's records of type qtype.
func answers(name string, qtype uint16, r *record) []dns.RR {
	var out []dns.RR
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: 5}
	}
	switch qtype {
	case dns.TypeA, dns.TypeAAAA:
		for _, a := range r.addrs {
			switch {
			case a.Is4() && qtype == dns.TypeA:
				out = append(out, &dns.A{Hdr: hdr(dns.TypeA), A: a.AsSlice()})
			case !a.Is4() && qtype == dns.TypeAAAA:
				out = append(out, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: a.AsSlice()})
			}
		}
	case dns.TypeSRV:
		for _, v := range r.srvs {
			out = append(out, &dns.SRV{Hdr: hdr(dns.TypeSRV), Priority: v.Priority, Weight: v.Weight,
				Port: v.Port, Target: dns.Fqdn(v.Target)})
		}
	}
	return out
}
