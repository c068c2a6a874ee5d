package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wslb/wslb/internal/wait"
)

// What TestSoak allows the process to keep once the load is over, against
// what it held before: a few goroutines and descriptors (the added
// backend's checker, a check's conn), live heap well under 3 KiB per conn
// the load opened (wslb's series and status history grow a little), and
// what the runtime keeps: spans in which a few objects still live, and
// resident pages.
const (
	soakSlackGoroutines = 10
	soakSlackFDs        = 10
	soakSlackLive       = 4 << 20
	soakSlackInUse      = 16 << 20
	soakSlackRSS        = 32 << 20
)

// soakUsage is what the test process (the clients, wslb and the test
// itself; the backends run apart) holds at one moment.
type soakUsage struct {
	// live is the heap's live objects (after a collection), inUse the
	// spans that hold them, rss the resident set.
	live, inUse, rss uint64
	goroutines, fds  int
}

// soakMeasure reads the process's usage; with gc, after a collection that
// returns what it freed to the OS, as the usage before and after the load
// is read.
func soakMeasure(gc bool) soakUsage {
	if gc {
		// Twice: what sync.Pools hold survives one collection.
		runtime.GC()
		debug.FreeOSMemory() // collects, then returns what is free
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	u := soakUsage{live: ms.HeapAlloc, inUse: ms.HeapInuse, goroutines: runtime.NumGoroutine()}
	if statm, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(statm)); len(f) > 1 {
			pages, _ := strconv.ParseUint(f[1], 10, 64)
			u.rss = pages * uint64(os.Getpagesize())
		}
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		u.fds = len(fds) - 1 // less ReadDir's own
	}
	return u
}

// soakSample reads the usage every 250 ms until the returned func is
// called, which returns the highest of each.
func soakSample(ctx context.Context, start soakUsage) (peak func() soakUsage) {
	top := start
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		// Pacing, not synchronisation: a sample four times a second.
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			u := soakMeasure(false)
			top = soakUsage{max(top.live, u.live), max(top.inUse, u.inUse), max(top.rss, u.rss),
				max(top.goroutines, u.goroutines), max(top.fds, u.fds)}
		}
	}()
	return func() soakUsage {
		close(stop)
		<-done
		return top
	}
}

// settle waits until wslb holds no conn, no reservation and no tunnel, and
// until goroutines and descriptors are back within their slack (at most
// 10 s: the clients' conns close asynchronously), then reads the usage.
func (s *soak) settle(before soakUsage) soakUsage {
	in := s.in
	wait.For(s.t, "wslb holding no conn", func() bool {
		g := in.gen.Load()
		for _, l := range g.listeners {
			if l.fl.Active() != 0 {
				return false
			}
		}
		for _, b := range g.pools["ws"].Backends() {
			if b.Active() != 0 {
				return false
			}
		}
		return in.engine.Tunnels() == 0
	})
	wait.Until(10*time.Second, func() bool {
		u := soakMeasure(false)
		return u.goroutines <= before.goroutines+soakSlackGoroutines && u.fds <= before.fds+soakSlackFDs
	})
	return soakMeasure(true)
}

// soakGroup sums the conns of one group through one listener.
type soakGroup struct {
	group, via                      string
	conns                           int
	sent, received, lost, reordered int64
}

// groups sums the conns by group and listener, in the table's order.
func (s *soak) groups() []soakGroup {
	var out []soakGroup
	for _, g := range []string{"kept", "killed", "reconnected", "late"} {
		for _, via := range []string{"web", "tcp"} {
			sg := soakGroup{group: g, via: via}
			for _, sc := range s.conns {
				if sc.group == g && sc.via == via {
					sg.conns++
					sg.sent += sc.sent.Load()
					sg.received += sc.received.Load()
					sg.reordered += sc.reordered.Load()
				}
			}
			sg.lost = sg.sent - sg.received
			out = append(out, sg)
		}
	}
	return out
}

// closeLatencies returns how long after the kill each conn of the killed
// backend ended, sorted.
func (s *soak) closeLatencies() []time.Duration {
	var out []time.Duration
	for _, sc := range s.conns {
		if sc.group == "killed" {
			out = append(out, sc.endedAt.Sub(s.killAt))
		}
	}
	slices.Sort(out)
	return out
}

// wslbCloseLatencies returns how long after the kill wslb wrote the access
// line of each conn that the backend ended, sorted: a little after wslb
// closed it, which tells wslb's part from the client's when the clients
// see their closes late.
func (s *soak) wslbCloseLatencies() []time.Duration {
	var out []time.Duration
	for _, line := range s.logs.Lines() {
		var e struct {
			Time   time.Time
			Reason string
		}
		if json.Unmarshal([]byte(line), &e) == nil && e.Reason == "backend" {
			out = append(out, e.Time.Sub(s.killAt))
		}
	}
	slices.Sort(out)
	return out
}

// spread says "p50 X, max Y" of sorted durations.
func spread(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	r := func(d time.Duration) time.Duration { return d.Round(100 * time.Microsecond) }
	return fmt.Sprintf("p50 %v, max %v", r(ds[len(ds)/2]), r(ds[len(ds)-1]))
}

// tunnelsClosed returns wslb_tunnels_closed_total for reason, both
// listeners together.
func (s *soak) tunnelsClosed(reason string) int {
	n := 0.0
	for _, l := range []string{"web", "tcp"} {
		n += testutil.ToFloat64(s.in.metrics.TunnelsClosed.WithLabelValues(l, "ws", reason))
	}
	return int(n)
}

// table is what the soak saw, for the log.
func (s *soak) table(length time.Duration, before, peak, after soakUsage) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "soak of %v: %d conns (1 in %d through l4) and %d late ones, a message per conn every %v, %d reloads\n",
		length, soakConns, soakL4Every, soakLate, soakPace, s.reloads)
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "group\tvia\tconns\tsent\treceived\tlost\treordered\t")
	for _, g := range s.groups() {
		via := map[string]string{"web": "l7", "tcp": "l4"}[g.via]
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t\n", g.group, via, g.conns, g.sent, g.received, g.lost, g.reordered)
	}
	tw.Flush()
	fmt.Fprintf(&sb, "killed backend %s, after the SIGKILL: its process gone in %v; its %d conns seen closed by their clients in %s, wslb's access lines for them in %s\n",
		s.killed, s.reaped.Round(100*time.Microsecond), len(s.closeLatencies()), spread(s.closeLatencies()), spread(s.wslbCloseLatencies()))
	fmt.Fprintf(&sb, "tunnels_closed: client %d, backend %d, idle %d, error %d; engine tunnels left %d\n",
		s.tunnelsClosed("client"), s.tunnelsClosed("backend"), s.tunnelsClosed("idle"), s.tunnelsClosed("error"), s.in.engine.Tunnels())
	tw = tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tbefore\tpeak\tafter\t")
	mib := func(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	fmt.Fprintf(tw, "heap live\t%s\t%s\t%s\t\n", mib(before.live), mib(peak.live), mib(after.live))
	fmt.Fprintf(tw, "heap in use\t%s\t%s\t%s\t\n", mib(before.inUse), mib(peak.inUse), mib(after.inUse))
	rss := "RSS"
	if raceEnabled {
		rss = "RSS (race detector's included, not checked)"
	}
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", rss, mib(before.rss), mib(peak.rss), mib(after.rss))
	fmt.Fprintf(tw, "goroutines\t%d\t%d\t%d\t\n", before.goroutines, peak.goroutines, after.goroutines)
	fmt.Fprintf(tw, "fds\t%d\t%d\t%d\t\n", before.fds, peak.fds, after.fds)
	tw.Flush()
	return sb.String()
}

// check fails the test for what the soak must not see.
func (s *soak) check(before, after soakUsage) {
	t := s.t
	for i, f := range s.failures {
		if i == 10 {
			t.Errorf("... and %d more failures", len(s.failures)-i)
			break
		}
		t.Error(f)
	}
	for _, g := range s.groups() {
		if g.group != "killed" && (g.lost != 0 || g.reordered != 0) {
			t.Errorf("%s %s conns: %d messages lost, %d out of order; want none", g.via, g.group, g.lost, g.reordered)
		}
	}
	lat := s.closeLatencies()
	if len(lat) == 0 {
		t.Errorf("no conn reached backend %s before it was killed", s.killed)
	} else if slow := lat[len(lat)-1]; slow > soakCloseWithin {
		n := len(lat) - slices.IndexFunc(lat, func(d time.Duration) bool { return d > soakCloseWithin })
		t.Errorf("%d of %d conns of the killed backend were still open %v after the kill (the last %v)", n, len(lat), soakCloseWithin, slow)
	}
	if got := s.tunnelsClosed("backend"); got != len(lat) {
		t.Errorf("tunnels_closed{reason=backend} = %d, want the %d conns of the killed backend", got, len(lat))
	}
	for _, reason := range []string{"idle", "error", "drain", "removed"} {
		if got := s.tunnelsClosed(reason); got != 0 {
			t.Errorf("tunnels_closed{reason=%s} = %d, want 0", reason, got)
		}
	}
	for _, sc := range s.conns {
		if sc.group == "late" && sc.backend != "a" && sc.backend != "d" {
			t.Errorf("a late conn went to %s; least_conn should give them to the restarted a and the added d", sc.backend)
			break
		}
	}
	if after.goroutines > before.goroutines+soakSlackGoroutines || after.fds > before.fds+soakSlackFDs ||
		after.live > before.live+soakSlackLive || after.inUse > before.inUse+soakSlackInUse ||
		after.rss > before.rss+soakSlackRSS && !raceEnabled {
		t.Errorf("usage after the load %+v, before %+v: beyond the slack of %d goroutines, %d fds, %d MiB of live heap, %d MiB of heap in use, %d MiB of RSS",
			after, before, soakSlackGoroutines, soakSlackFDs, soakSlackLive>>20, soakSlackInUse>>20, soakSlackRSS>>20)
	}
}
