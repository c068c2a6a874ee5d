package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wslb/wslb/internal/proctest"
	"github.com/wslb/wslb/internal/syncbuf"
	"github.com/wslb/wslb/internal/wait"
	"github.com/wslb/wslb/pool"
)

var soakLength = flag.Duration("soak", 20*time.Second,
	"how long TestSoak's load runs: 20s fits CI under -race; go test -run Soak -v ./cmd/wslb -soak=5m for a long run (after the package: go test passes it on)")

const (
	soakConns   = 1000
	soakL4Every = 5   // one conn in five goes through the l4 listener, the rest through l7
	soakLate    = 100 // conns opened once the killed backend is back and one was added
	// soakPace is how often each conn sends a message: 1,000 messages a
	// second in all, which a loaded 2-core CI machine carries under -race.
	soakPace        = time.Second
	soakReloadEvery = 3 * time.Second
	// soakCloseWithin bounds how long after the kill each conn of the
	// killed backend may stay open.
	soakCloseWithin = time.Second
)

// TestSoak runs 1,000 WebSocket conns through wslb (one in five through
// l4) to three backend processes, each conn exchanging sequence-numbered
// messages at a steady pace, while the configuration is reloaded every few
// seconds (the backends' weights change), one backend is killed (SIGKILL)
// at a quarter of the run and restarted at half, and a fourth backend is
// added at 0.6. The conns of the killed backend reconnect (each after 1 to
// 2 s, at random), and 100 late conns join once it is back. Then it
// checks: no message lost or out of order on any conn whose backend stayed
// up; every conn of the killed backend closed within a second of the kill;
// wslb back to no conn and no tunnel; memory, goroutines and descriptors
// back near where they started. It logs a table of what it saw (-v shows
// it).
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("the soak runs for -soak (20s); -short skips it")
	}
	length := *soakLength
	ctx, cancel := context.WithTimeout(t.Context(), length+3*time.Minute)
	defer cancel()
	s := &soak{ctx: ctx, t: t, stop: make(chan struct{}), weights: map[string]int{}}
	s.backends = map[string]*proctest.Backend{}
	prog := proctest.Build(t)
	for _, name := range []string{"a", "b", "c", "d"} { // d boots now, joins the pool later
		s.backends[name] = prog.Start(t, name, "")
	}
	s.f = &reloadFixture{t: t, path: filepath.Join(t.TempDir(), "config.yaml")}
	s.f.write(s.config())
	s.f.r, s.logs = startServeLogFile(t, s.f.path, 0)
	s.in = s.f.r.in
	before := soakMeasure(true)
	peak := soakSample(ctx, before)

	s.openMany(soakConns, "")
	t.Logf("%d conns open", soakConns)
	begin := time.Now()
	for _, ev := range s.timeline(length) {
		// Pacing, not synchronisation: each event happens at its time
		// of the run.
		time.Sleep(time.Until(begin.Add(ev.at)))
		ev.do()
	}
	close(s.stop)
	wait.Group(t, "a soak conn's writer", &s.writers)
	s.finish()
	after := s.settle(before)
	top := peak()
	t.Log("\n" + s.table(length, before, top, after))
	s.check(before, after)
}

// soak is TestSoak's load: its conns, its backends and its config.
type soak struct {
	ctx  context.Context
	t    *testing.T
	in   *instance
	f    *reloadFixture
	logs *syncbuf.Buffer // the JSON access log

	backends map[string]*proctest.Backend
	weights  map[string]int // of b and c, changed by each reload
	added    bool           // d is in the pool
	reloads  int

	stop    chan struct{}  // closed when the load ends: the writers return
	writers sync.WaitGroup // every conn's writeLoop
	readers sync.WaitGroup // every conn's readLoop

	mu       sync.Mutex
	conns    []*soakConn // every conn opened
	over     bool        // the load is over: no conn is added to conns
	failures []string
	killed   string        // the killed backend's name, once killAt is set
	killAt   time.Time     // just before the SIGKILL
	reaped   time.Duration // from killAt until the process was gone
	nextID   int64
}

// soakConn is one WebSocket conn of the soak. Its readLoop and writeLoop
// own it; the test reads its counts once both have returned.
type soakConn struct {
	id      int64
	via     string // web (l7) or tcp (l4)
	group   string // kept, killed, reconnected or late
	backend string // the name its greeting gave
	c       *websocket.Conn

	sent, received, reordered atomic.Int64

	dead    chan struct{} // closed by readLoop when the conn ended
	endedAt time.Time     // set by readLoop before dead is closed
	closing atomic.Bool   // the test is closing it: its end is no failure
}

// config is the soak's config file: l7 and l4 listeners on pool ws, tcp
// checks every second, lenient enough that a loaded machine does not fail
// live backends (the killed one's reconnects are the passive checks' and
// the dial retry's to handle), a short passive ejection, which the
// restarted backend must outlive, and a, b, c (and d once added) with this
// reload's weights.
func (s *soak) config() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, `# reload %d
admin: {listen: ""}
shutdown: {drain_timeout: 0s, close_spread: 0s}
listeners:
  - {name: web, listen: 127.0.0.1:0, mode: l7, pool: ws}
  - {name: tcp, listen: 127.0.0.1:0, mode: l4, pool: ws}
pools:
  - name: ws
    health: {check: tcp, interval: 1s, timeout: 900ms, rise: 1, fall: 2}
    passive: {max_fails: 3, fail_timeout: 2s}
    backends:
`, s.reloads)
	names := []string{"a", "b", "c"}
	if s.added {
		names = append(names, "d")
	}
	for _, n := range names {
		fmt.Fprintf(&sb, "      - {address: %s, weight: %d}\n", s.backends[n].Addr, max(1, s.weights[n]))
	}
	return sb.String()
}

// soakEvent is something that happens at a time of the run.
type soakEvent struct {
	at time.Duration
	do func()
}

// timeline is the run's events in order: a reload every few seconds, the
// kill, the restart, the added backend and the end.
func (s *soak) timeline(length time.Duration) []soakEvent {
	evs := []soakEvent{
		{length / 4, func() { s.kill("a") }},
		{length / 2, func() { s.restart("a") }},
		{length * 6 / 10, s.addAndJoin},
		{length, func() {}},
	}
	for at := soakReloadEvery; at < length; at += soakReloadEvery {
		evs = append(evs, soakEvent{at, s.reload})
	}
	slices.SortStableFunc(evs, func(x, y soakEvent) int { return cmp.Compare(x.at, y.at) })
	return evs
}

// reload changes the weights of b and c and reloads, as SIGHUP does.
func (s *soak) reload() {
	s.reloads++
	s.weights["b"], s.weights["c"] = 1+s.reloads%2, 2-s.reloads%2
	s.f.reload(s.config(), "ok")
}

// kill kills backend name: its conns must end within soakCloseWithin, and
// their clients reconnect.
func (s *soak) kill(name string) {
	s.mu.Lock()
	s.killed, s.killAt = name, time.Now()
	s.mu.Unlock()
	s.backends[name].Kill()
	s.reaped = time.Since(s.killAt)
}

// restart starts backend name again on its address and waits until its
// checks bring it back up.
func (s *soak) restart(name string) {
	s.backends[name] = s.backends[name].Restart()
	b := s.backend(name)
	wait.For(s.t, "backend "+name+" up again", b.Available)
}

// addAndJoin adds d to the pool, then opens the late conns: least_conn
// gives them to the backends with the fewest, the restarted a and d.
func (s *soak) addAndJoin() {
	s.added = true
	s.reload()
	wait.For(s.t, "backend d in the pool and up", func() bool {
		b := s.backend("d")
		return b != nil && b.Available()
	})
	s.openMany(soakLate, "late")
}

// backend returns wslb's backend of the process called name, or nil.
func (s *soak) backend(name string) *pool.Backend {
	for _, b := range s.in.gen.Load().pools["ws"].Backends() {
		if b.String() == s.backends[name].Addr {
			return b
		}
	}
	return nil
}

// openMany opens n conns of group ("" for the first ones), one in
// soakL4Every through l4, 8 dials at a time (more would only take CPU the
// suite's other packages are using); it fails the test if one
// fails.
func (s *soak) openMany(n int, group string) {
	s.t.Helper()
	var dials sync.WaitGroup
	slots := make(chan struct{}, 8)
	errs := make(chan error, n)
	for i := range n {
		via := "web"
		if i%soakL4Every == 0 {
			via = "tcp"
		}
		slots <- struct{}{}
		dials.Go(func() {
			defer func() { <-slots }()
			if err := s.open(via, group); err != nil {
				errs <- err
			}
		})
	}
	dials.Wait()
	close(errs)
	for err := range errs {
		s.t.Fatal(err)
	}
}

// open dials a conn through listener via, reads which backend it reached
// and starts its reader and writer, unless the load is over. Any goroutine
// may call it.
func (s *soak) open(via, group string) error {
	addr := s.in.addr(0)
	if via == "tcp" {
		addr = s.in.addr(1)
	}
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+addr+"/?hello=1", nil)
	if err != nil {
		return fmt.Errorf("%s conn: %w", via, err)
	}
	name, err := readGreeting(ctx, c)
	if err != nil {
		c.CloseNow()
		return fmt.Errorf("%s conn: %w", via, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.over {
		c.CloseNow() // a reconnect that came too late
		return nil
	}
	s.nextID++
	sc := &soakConn{id: s.nextID, via: via, group: group, backend: name, c: c, dead: make(chan struct{})}
	s.conns = append(s.conns, sc)
	s.readers.Go(func() { s.readLoop(sc) })
	// Offsets spread the conns' sends evenly over the pace.
	offset := rand.N(soakPace)
	s.writers.Go(func() { s.writeLoop(sc, offset) })
	return nil
}

// writeLoop sends sc's numbered messages, "ID:SEQ", one per soakPace,
// until the load ends or the conn does.
func (s *soak) writeLoop(sc *soakConn, offset time.Duration) {
	// Pacing, not synchronisation: a steady rate of messages per conn.
	next := time.NewTimer(offset)
	defer next.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-sc.dead:
			return
		case <-next.C:
		}
		seq := sc.sent.Load() + 1
		if err := sc.c.Write(s.ctx, websocket.MessageText, fmt.Appendf(nil, "%d:%d", sc.id, seq)); err != nil {
			return // readLoop sees the end too
		}
		sc.sent.Store(seq)
		next.Reset(soakPace)
	}
}

// readLoop reads sc's echoes until the conn ends, counting those that did
// not come in order; then it reports the end.
func (s *soak) readLoop(sc *soakConn) {
	var last int64
	for {
		_, msg, err := sc.c.Read(s.ctx)
		if err != nil {
			sc.endedAt = time.Now()
			sc.c.CloseNow() // as a client does; an l4 conn is only half-closed by the backend's FIN
			close(sc.dead)
			s.ended(sc, err)
			return
		}
		id, seqText, _ := strings.Cut(string(msg), ":")
		seq, _ := strconv.ParseInt(seqText, 10, 64)
		if id != strconv.FormatInt(sc.id, 10) {
			s.fail("conn %d got conn %s's message %q", sc.id, id, msg)
		}
		if seq != last+1 {
			sc.reordered.Add(1)
		}
		last = max(last, seq)
		sc.received.Add(1)
	}
}

// ended handles the end of a conn the test did not close: a conn of the
// killed backend reconnects, any other end is a failure.
func (s *soak) ended(sc *soakConn, err error) {
	if sc.closing.Load() {
		return
	}
	s.mu.Lock()
	killed := sc.backend == s.killed
	s.mu.Unlock()
	if !killed {
		s.fail("conn %d (%s, backend %s) ended: %v", sc.id, sc.via, sc.backend, err)
		return
	}
	// Pacing, not synchronisation: clients reconnect after a random pause
	// of 1 to 2 s, as WebSocket clients do, not all at once. Past the
	// second in which the other conns of the killed backend must be seen
	// closed, the dials (in this process, as wslb is) do not starve that
	// measure of CPU.
	time.Sleep(soakCloseWithin + rand.N(time.Second))
	if err := s.open(sc.via, "reconnected"); err != nil {
		s.fail("reconnect of conn %d: %v", sc.id, err)
	}
}

func (s *soak) fail(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, fmt.Sprintf(format, args...))
}

// finish waits (up to 10 s) for the echoes of the last messages, then
// closes every conn and waits for the readers.
func (s *soak) finish() {
	s.mu.Lock()
	s.over = true
	conns := slices.Clone(s.conns)
	s.mu.Unlock()
	wait.Until(10*time.Second, func() bool {
		for _, sc := range conns {
			select {
			case <-sc.dead:
			default:
				if sc.received.Load() < sc.sent.Load() {
					return false
				}
			}
		}
		return true
	})
	for _, sc := range conns {
		sc.closing.Store(true)
		sc.c.CloseNow()
	}
	wait.Group(s.t, "a soak conn's reader", &s.readers)
	for _, sc := range conns {
		sc.c = nil // what the process keeps after the load is wslb's, not the clients' buffers
		switch {
		case sc.group != "":
		case sc.backend == s.killed:
			sc.group = "killed"
		default:
			sc.group = "kept"
		}
	}
}
