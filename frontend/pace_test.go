package frontend

import (
	"context"
	"io"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wslb/wslb/clock"
	"github.com/wslb/wslb/internal/clocktest"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
)

func testClock() *clocktest.Clock { return clocktest.New(time.Unix(1_000_000, 0)) }

// takeAll takes every token the bucket has now, at most limit, and says how
// many it got.
func takeAll(b *bucket, limit int) int {
	for n := range limit {
		if ok, _, _ := b.take(); !ok {
			return n
		}
	}
	return limit
}

func TestBucket(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rate  float64
		steps []time.Duration // advance by each, then take all
		want  []int           // tokens got at start, then after each step
	}{
		{"burst is one second's worth", 10, nil, []int{10}},
		{"rate", 10, []time.Duration{100 * time.Millisecond, 250 * time.Millisecond, time.Second}, []int{10, 1, 2, 10}},
		{"a long idle saves one burst, no more", 5, []time.Duration{time.Hour, time.Hour}, []int{5, 5, 5}},
		{"a fraction of a conn a second", 0.5, []time.Duration{time.Second, time.Second, 10 * time.Second}, []int{1, 0, 1, 1}},
		{"a rate under 1 still lets one through", 0.01, []time.Duration{99 * time.Second, time.Second}, []int{1, 0, 1}},
		{"unlimited", 0, []time.Duration{0}, []int{1000, 1000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := testClock()
			b := newBucket(tc.rate, clk)
			got := []int{takeAll(b, 1000)}
			for _, d := range tc.steps {
				clk.Advance(d)
				got = append(got, takeAll(b, 1000))
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("tokens taken %v, want %v", got, tc.want)
			}
		})
	}
}

func TestBucketRateChange(t *testing.T) {
	clk := testClock()
	b := newBucket(10, clk)
	takeAll(b, 4) // 6 left
	b.setRate(3)  // a lower rate keeps at most its own burst
	if n := takeAll(b, 100); n != 3 {
		t.Fatalf("after lowering the rate to 3: %d tokens, want 3", n)
	}
	b.setRate(20) // a higher one keeps what there was: no second burst
	if n := takeAll(b, 100); n != 0 {
		t.Fatalf("after raising the rate: %d tokens, want 0", n)
	}
	clk.Advance(500 * time.Millisecond)
	if n := takeAll(b, 100); n != 10 {
		t.Fatalf("half a second at 20/s: %d tokens, want 10", n)
	}
	b.setRate(0)
	if n := takeAll(b, 100); n != 100 {
		t.Fatalf("unlimited: %d tokens, want all 100 asked", n)
	}
	b.setRate(4) // from unlimited: full, as a new bucket
	if n := takeAll(b, 100); n != 4 {
		t.Fatalf("limited again at 4/s: %d tokens, want 4", n)
	}
}

// TestBucketWait: a waiting taker is woken by the clock reaching the next
// token, by a rate change, and by its context, never earlier.
func TestBucketWait(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	clk := testClock()
	b := newBucket(2, clk)
	takeAll(b, 10)
	waitAsync := func(ctx context.Context) <-chan error {
		done := make(chan error, 1)
		go func() { done <- b.wait(ctx) }()
		return done
	}
	waiting := func(done <-chan error) bool {
		select {
		case <-done:
			return false
		default:
			return true
		}
	}

	done := waitAsync(ctx)
	clk.Advance(499 * time.Millisecond)
	if !waiting(done) {
		t.Fatal("wait returned before a token was due")
	}
	clk.Advance(time.Millisecond)
	if err := <-done; err != nil {
		t.Fatalf("wait at the token's time: %v", err)
	}

	done = waitAsync(ctx)
	b.setRate(0)
	if err := <-done; err != nil {
		t.Fatalf("wait after the rate went unlimited: %v", err)
	}

	b.setRate(1)
	takeAll(b, 10)
	wctx, wcancel := context.WithCancel(ctx)
	done = waitAsync(wctx)
	wcancel()
	if err := <-done; err == nil {
		t.Fatal("a cancelled wait took a token that was not there")
	}
}

// pacedListener serves a listener paced at rate on clk that greets each conn
// and holds it until the drain, counting accepts.
func pacedListener(t *testing.T, rate float64, clk clock.Clock) (*Listener, *atomic.Int64, func()) {
	t.Helper()
	var accepted atomic.Int64
	h := &holdUntilCanceled{}
	// One worker: with several, a token held by a worker whose socket is
	// empty would make the counts depend on how the kernel spread the
	// conns over the sockets.
	l := &Listener{Name: "paced", Workers: 1, MaxAcceptRate: rate, Clock: clk,
		OnAccept: func() { accepted.Add(1) }, NewHandler: func() Handler { return h }}
	stop := start(t, l)
	t.Cleanup(func() {
		stop()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		l.Drain(ctx, 0, 0)
	})
	return l, &accepted, stop
}

// queued is how many conns wait in the kernel's accept queues of l's
// sockets, as sock_diag reports them.
func queued(t *testing.T, l *Listener) int {
	t.Helper()
	socks, err := listeningSockets()
	if err != nil {
		t.Skipf("sock_diag: %v", err)
	}
	n := 0
	for _, s := range socks {
		if slices.Contains(l.inodes, s.inode) {
			n += int(s.queued)
		}
	}
	return n
}

// TestAcceptPacing: 23 clients connect at once to a listener paced at 5/s
// on a clock the test moves. The listener takes the burst (5), then 5 per
// second of the clock; every conn above that waits in the kernel's accept
// queue (sock_diag says so), none is refused, and all are served in the end.
func TestAcceptPacing(t *testing.T) {
	const clients, rate = 23, 5
	clk := testClock()
	l, accepted, _ := pacedListener(t, rate, clk)
	conns := make([]net.Conn, clients)
	for i := range conns {
		conns[i] = tcptest.Dial(t, l.BoundAddr().String()) // the kernel completes the handshake
	}
	for sec := 0; ; sec++ {
		want := min(clients, rate+rate*sec)
		if !wait.Until(wait.Timeout, func() bool { return accepted.Load() == int64(want) && queued(t, l) == clients-want }) {
			t.Fatalf("after %d s of the clock: %d accepted and %d queued, want %d and %d",
				sec, accepted.Load(), queued(t, l), want, clients-want)
		}
		if want == clients {
			break
		}
		clk.Advance(time.Second)
	}
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
			t.Fatalf("client %d: no greeting: %v", i, err)
		}
	}
}

// TestAcceptRateSet: a running listener's rate change applies to the conns
// already waiting in its queue.
func TestAcceptRateSet(t *testing.T) {
	clk := testClock()
	l, accepted, _ := pacedListener(t, 2, clk)
	for range 10 {
		tcptest.Dial(t, l.BoundAddr().String())
	}
	wait.For(t, "the burst of 2 accepted, 8 queued", func() bool { return accepted.Load() == 2 && queued(t, l) == 8 })
	l.SetMaxAcceptRate(0)
	wait.For(t, "every conn accepted once unlimited", func() bool { return accepted.Load() == 10 })
}

// TestPacedListenerStopsAtOnce: accept loops waiting for a token (the clock
// never moves) return as soon as the listener stops, whether by its context
// or by Close, and Serve with them.
func TestPacedListenerStopsAtOnce(t *testing.T) {
	for _, how := range []string{"cancel", "close"} {
		t.Run(how, func(t *testing.T) {
			var accepted atomic.Int64
			l := &Listener{Name: "paced", Addrs: []string{"127.0.0.1:0"}, Workers: 1, MaxAcceptRate: 1,
				Clock: testClock(), OnAccept: func() { accepted.Add(1) }, Log: quietLog(),
				NewHandler: func() Handler { return &holdUntilCanceled{} }}
			if err := l.Listen(t.Context()); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			served := make(chan struct{})
			go func() { l.Serve(ctx); close(served) }()
			defer func() {
				cctx, ccancel := context.WithCancel(context.Background())
				ccancel()
				l.Drain(cctx, 0, 0)
			}()
			for range 5 {
				tcptest.Dial(t, l.BoundAddr().String())
			}
			wait.For(t, "the burst accepted", func() bool { return accepted.Load() == 1 })
			if how == "close" {
				l.Close()
			} else {
				cancel()
			}
			select {
			case <-served:
			case <-time.After(5 * time.Second):
				t.Fatal("Serve still waiting for a token 5 s after the listener stopped")
			}
		})
	}
}
