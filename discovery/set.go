package discovery

import (
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wslb/wslb/config"
)

// Set is what the names of one pool give now: each name's last good answer,
// and the addresses that vanished from the answers and are held. cmd/wslb
// builds the pool from Pool; the pool's Watcher updates the set. It is safe
// for concurrent use.
type Set struct {
	pool config.Pool
	hold time.Duration
	log  *slog.Logger

	mu          sync.Mutex
	answers     map[string][]found // by nameKey; absent until the name's first answer
	notes       map[string]string  // by nameKey: what was last logged about it
	held        map[netip.AddrPort]held
	lastRefresh time.Time // zero before the first
}

// held is an address that vanished, kept as the backend it was.
type held struct {
	since time.Time
	b     config.Backend // Held set
	name  string         // the nameKey it came from
}

// nameKey identifies a name across reloads: the same name written again
// (any case, with or without the final dot) keeps its answer.
func nameKey(n config.Name) string {
	k := strings.ToLower(strings.TrimSuffix(n.Host, "."))
	if n.SRV {
		return "srv " + k
	}
	return k + ":" + strconv.Itoa(int(n.Port))
}

// NewSet returns the set of pool p (validated, Names filled in), whose held
// addresses go after hold. prev, when not nil, is the set of the running
// pool of that name, at a reload: the answers of the names that stay, and
// what they had held, carry over, so a reload neither flaps to no backends
// until the next lookup nor forgets a hold. log may be nil.
func NewSet(p config.Pool, hold time.Duration, log *slog.Logger, prev *Set) *Set {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Set{pool: p, hold: hold, log: log.With("pool", p.Name), answers: map[string][]found{},
		notes: map[string]string{}, held: map[netip.AddrPort]held{}}
	if prev == nil {
		return s
	}
	prev.mu.Lock()
	defer prev.mu.Unlock()
	s.lastRefresh = prev.lastRefresh
	for _, n := range p.Names {
		k := nameKey(n)
		if a, ok := prev.answers[k]; ok {
			s.answers[k] = a
		}
		if note, ok := prev.notes[k]; ok {
			s.notes[k] = note
		}
	}
	for a, h := range prev.held {
		if _, ok := s.answers[h.name]; ok {
			s.held[a] = h
		}
	}
	return s
}

// Pool is the pool's configuration with its backends as they are now: the
// addresses written as IPs, then every address the names gave (with the
// weight of the hostname backend, 1 for a name entry, the record's for
// SRV), then the held ones, each address once.
func (s *Set) Pool() config.Pool {
	p := s.pool
	p.Backends = s.Backends()
	return p
}

// Backends are Pool's backends.
func (s *Set) Backends() []config.Backend {
	s.mu.Lock()
	defer s.mu.Unlock()
	out, _ := s.backends()
	return out
}

// Name is the pool's name.
func (s *Set) Name() string { return s.pool.Name }

// Names are the DNS names of the pool.
func (s *Set) Names() []config.Name { return s.pool.Names }

// backends lists the backends and, by address, the live (not held) ones.
// The caller holds s.mu.
func (s *Set) backends() ([]config.Backend, map[netip.AddrPort]config.Backend) {
	out := []config.Backend{}
	live := map[netip.AddrPort]config.Backend{}
	add := func(b config.Backend) {
		if _, dup := live[b.Addr]; !dup {
			live[b.Addr] = b
			out = append(out, b)
		}
	}
	for _, b := range s.pool.Backends {
		if b.Addr.IsValid() {
			add(b)
		}
	}
	for _, n := range s.pool.Names {
		for _, f := range s.answers[nameKey(n)] {
			w := n.Weight
			if n.SRV {
				w = f.weight
			}
			// Address keeps the hostname the address was found under (an
			// SRV record's target, else the name): a pool's tls verifies the
			// backend against it (config.Backend.Hostname).
			host := n.Host
			if f.target != "" {
				host = strings.TrimSuffix(f.target, ".")
			}
			addr := net.JoinHostPort(host, strconv.Itoa(int(f.addr.Port())))
			add(config.Backend{Address: addr, Addr: f.addr, Weight: w, Source: n.Host})
		}
	}
	heldAddrs := make([]netip.AddrPort, 0, len(s.held))
	for a := range s.held {
		if _, ok := live[a]; !ok {
			heldAddrs = append(heldAddrs, a)
		}
	}
	slices.SortFunc(heldAddrs, netip.AddrPort.Compare)
	for _, a := range heldAddrs {
		out = append(out, s.held[a].b)
	}
	return out, live
}

// apply takes one lookup of every name (results in Names order) at now: a
// failed lookup keeps its name's last answer; an address no name gives any
// more is held from now; a held one that is back is no longer held; holds
// that are over end. It reports whether the backends changed.
func (s *Set) apply(results []result, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	before, liveBefore := s.backends()
	keys := s.keysByAddr()
	for i, n := range s.pool.Names {
		s.note(n, results[i])
		if results[i].err == nil {
			s.answers[nameKey(n)] = results[i].found
		}
	}
	s.lastRefresh = now
	_, liveAfter := s.backends()
	for a, b := range liveBefore {
		if _, ok := liveAfter[a]; !ok {
			b.Held = true
			s.held[a] = held{since: now, b: b, name: keys[a]}
			s.log.Info("backend held: its address vanished from the DNS answers; it takes no new conns and is removed after resolver.hold unless it comes back",
				"backend", a.String(), "name", b.Source, "hold", s.hold)
		}
	}
	for a := range liveAfter {
		if h, ok := s.held[a]; ok {
			delete(s.held, a)
			s.log.Info("held backend back in the DNS answers: it takes conns again", "backend", a.String(), "name", h.b.Source)
		}
	}
	s.expire(now)
	after, _ := s.backends()
	s.logAdded(before, after)
	return !slices.Equal(before, after)
}

// keysByAddr maps every address the names give to the first name giving
// it, as backends dedupes them. The caller holds s.mu.
func (s *Set) keysByAddr() map[netip.AddrPort]string {
	out := map[netip.AddrPort]string{}
	for _, n := range s.pool.Names {
		k := nameKey(n)
		for _, f := range s.answers[k] {
			if _, dup := out[f.addr]; !dup {
				out[f.addr] = k
			}
		}
	}
	return out
}

// logAdded logs each backend that after has and before had not.
func (s *Set) logAdded(before, after []config.Backend) {
	had := make(map[netip.AddrPort]bool, len(before))
	for _, b := range before {
		had[b.Addr] = true
	}
	for _, b := range after {
		if !had[b.Addr] {
			s.log.Info("backend discovered", "backend", b.Addr.String(), "name", b.Source, "weight", b.Weight)
		}
	}
}

// Expire ends the holds that are over at now and reports whether the
// backends changed.
func (s *Set) Expire(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.expire(now)
}

func (s *Set) expire(now time.Time) bool {
	changed := false
	for a, h := range s.held {
		if !now.Before(h.since.Add(s.hold)) {
			delete(s.held, a)
			changed = true
			s.log.Info("held backend removed: resolver.hold passed; its conns are closed after shutdown.drain_timeout",
				"backend", a.String(), "name", h.b.Source, "held_since", h.since)
		}
	}
	return changed
}

// nextExpiry is when the first hold ends; ok is false when nothing is held.
func (s *Set) nextExpiry() (at time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.held {
		if end := h.since.Add(s.hold); !ok || end.Before(at) {
			at, ok = end, true
		}
	}
	return at, ok
}

// nextRefresh is when the names are next due, interval after the last
// lookup; the zero time (at once) while some name was never answered.
func (s *Set) nextRefresh(interval time.Duration) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.pool.Names {
		if _, ok := s.answers[nameKey(n)]; !ok {
			return time.Time{}
		}
	}
	return s.lastRefresh.Add(interval)
}

// prevAnswers are the last good answers in Names order, for the SRV
// targets whose next lookup fails.
func (s *Set) prevAnswers() [][]found {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([][]found, len(s.pool.Names))
	for i, n := range s.pool.Names {
		out[i] = s.answers[nameKey(n)]
	}
	return out
}

// note logs what one lookup of n says when it differs from what was last
// logged about n, so a name failing every interval is one warning, not one
// a lookup. The caller holds s.mu.
func (s *Set) note(n config.Name, r result) {
	k := nameKey(n)
	attrs := []any{"name", n.Host, "at", n.Path}
	var note string
	switch {
	case r.err != nil:
		note = "failed"
		if s.notes[k] != note {
			s.log.Warn("DNS lookup failed; the name's last answer stays until a lookup succeeds", append(attrs, "err", r.err)...)
		}
	case len(r.found) == 0 && len(r.kept) == 0:
		note = "empty"
		if s.notes[k] != note {
			s.log.Warn("DNS name has no addresses (NXDOMAIN or no records): it gives no backends until it has", attrs...)
		}
	default:
		note = "ok " + strings.Join(r.skipped, ",") + " " + strings.Join(r.kept, ",")
		if s.notes[k] == note {
			break
		}
		if len(r.skipped) > 0 {
			s.log.Warn("SRV targets that do not resolve are skipped", append(attrs, "targets", r.skipped)...)
		}
		if len(r.kept) > 0 {
			s.log.Warn("SRV target lookups failed; their last addresses stay", append(attrs, "targets", r.kept)...)
		}
		if old := s.notes[k]; old == "failed" || old == "empty" {
			s.log.Info("DNS name answers again", append(attrs, "addresses", len(r.found))...)
		}
	}
	s.notes[k] = note
}
