package acme

import (
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/wslb/wslb/config"
)

// ChallengePrefix starts the path of every HTTP-01 challenge request
// (RFC 8555 section 8.3).
const ChallengePrefix = "/.well-known/acme-challenge/"

// Set holds the process's managers, one per distinct acme block: listeners
// with the same block share one (one order per domain, one renewal), and a
// block left unchanged by a reload keeps its manager, with its
// certificates in memory and its renewal timers. The zero Set is ready to
// use; cmd/wslb makes one for the process and wires it into every l7 proxy.
type Set struct {
	// Log gets the managers' warnings; nil discards them.
	Log *slog.Logger

	mu       sync.Mutex
	http01   bool
	managers map[config.ACMEKey]*Manager
}

// Manager returns the manager of acme block c: the one the set holds for
// the same block, else a new one, which the set keeps until Keep drops it.
func (s *Set) Manager(c config.ACME) (*Manager, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := c.Key()
	if m := s.managers[k]; m != nil {
		return m, nil
	}
	m, err := New(c, s.Log)
	if err != nil {
		return nil, err
	}
	if s.http01 {
		m.EnableHTTP01()
	}
	if s.managers == nil {
		s.managers = map[config.ACMEKey]*Manager{}
	}
	s.managers[k] = m
	return m, nil
}

// Keep makes the set hold the managers of cfg's acme blocks alone,
// retiring the others (a reload changed or removed their block, or failed
// after making them), and turns HTTP-01 on for every manager when cfg has
// a plain l7 listener to answer it. cmd/wslb calls it once the listeners
// of cfg are built, and after every reload, applied or not, with the
// config that then runs.
func (s *Set) Keep(cfg *config.Config) {
	used := map[config.ACMEKey]bool{}
	plain := false
	for _, l := range cfg.Listeners {
		switch {
		case l.Mode != config.ModeL7:
		case l.TLS == nil:
			plain = true
		case l.TLS.ACME != nil:
			used[l.TLS.ACME.Key()] = true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.http01 = s.http01 || plain // autocert cannot turn HTTP-01 off again
	for k, m := range s.managers {
		if !used[k] {
			m.retire()
			delete(s.managers, k)
		} else if s.http01 {
			m.EnableHTTP01()
		}
	}
}

// Challenge returns the handler of req when it asks for an HTTP-01
// challenge's answer for a domain of one of the set's managers with
// HTTP-01 on; nil otherwise, and the request is routed as any other (a
// backend may answer challenges of its own). A nil Set has no challenges.
func (s *Set) Challenge(req *http.Request) http.Handler {
	if s == nil || !strings.HasPrefix(req.URL.Path, ChallengePrefix) {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.managers {
		if m.Manages(req.Host) {
			return m.HTTP01Handler()
		}
	}
	return nil
}

// Close retires every manager: the process is ending.
func (s *Set) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, m := range s.managers {
		m.retire()
		delete(s.managers, k)
	}
}
