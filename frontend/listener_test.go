package frontend

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wslb/wslb/internal/tcptest"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// holdUntilCanceled keeps each conn open until its ctx is cancelled and records
// when that happened.
type holdUntilCanceled struct {
	mu     sync.Mutex
	closed []time.Time
	causes []error
}

func (h *holdUntilCanceled) ServeConn(ctx context.Context, c net.Conn, _ *Hold) {
	defer c.Close()
	c.Write([]byte("hi"))
	<-ctx.Done()
	h.mu.Lock()
	h.closed = append(h.closed, time.Now())
	h.causes = append(h.causes, context.Cause(ctx))
	h.mu.Unlock()
}

func start(t *testing.T, l *Listener) (stop func()) {
	t.Helper()
	if len(l.Addrs) == 0 {
		l.Addrs = []string{"127.0.0.1:0"}
	}
	if l.Log == nil {
		l.Log = quietLog()
	}
	if err := l.Listen(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Serve(ctx); close(done) }()
	return func() { cancel(); <-done }
}

// dialRead dials addr and reads the handler's 2-byte greeting.
func dialRead(t *testing.T, addr string) net.Conn {
	t.Helper()
	c := tcptest.Dial(t, addr)
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	return c
}

func TestWorkersShareOnePort(t *testing.T) {
	h := &holdUntilCanceled{}
	var handlers atomic.Int32
	l := &Listener{Name: "t", Workers: 3, NewHandler: func() Handler { handlers.Add(1); return h }}
	stop := start(t, l)
	if len(l.lns) != 3 {
		t.Fatalf("%d sockets, want 3", len(l.lns))
	}
	for _, ln := range l.lns {
		if ln.Addr().String() != l.BoundAddr().String() {
			t.Fatalf("worker bound %s, first bound %s", ln.Addr(), l.BoundAddr())
		}
	}
	for range 12 {
		dialRead(t, l.BoundAddr().String())
	}
	if handlers.Load() != 3 {
		t.Fatalf("NewHandler called %d times, want once per worker", handlers.Load())
	}
	stop()
	l.Drain(t.Context(), 0, 0)
}

// TestDrainSpread: after drain_timeout the remaining conns are closed spread
// evenly over close_spread, not all at once, with cause ErrDrain.
func TestDrainSpread(t *testing.T) {
	h := &holdUntilCanceled{}
	l := &Listener{Name: "t", Workers: 2, NewHandler: func() Handler { return h }}
	stop := start(t, l)
	for range 20 {
		dialRead(t, l.BoundAddr().String())
	}
	stop()
	// Listening sockets are closed at once: a new conn is refused.
	if c, err := net.DialTimeout("tcp", l.BoundAddr().String(), time.Second); err == nil {
		c.Close()
		t.Fatal("dial succeeded after Serve returned")
	}
	const timeout, spread = 100 * time.Millisecond, 600 * time.Millisecond
	begin := time.Now()
	l.Drain(t.Context(), timeout, spread)
	took := time.Since(begin)
	if took < timeout+spread*8/10 || took > timeout+spread+time.Second {
		t.Fatalf("drain took %v, want about %v", took, timeout+spread)
	}
	if len(h.closed) != 20 {
		t.Fatalf("%d conns closed, want 20", len(h.closed))
	}
	sort.Slice(h.closed, func(i, j int) bool { return h.closed[i].Before(h.closed[j]) })
	first, last := h.closed[0].Sub(begin), h.closed[19].Sub(begin)
	if first < timeout-10*time.Millisecond {
		t.Fatalf("first close at %v, before drain_timeout %v", first, timeout)
	}
	if window := last - first; window < spread*7/10 {
		t.Fatalf("closes spread over %v, want about %v", window, spread)
	}
	// Evenly: the middle close lands near the middle of the window.
	if mid := h.closed[10].Sub(begin) - timeout; mid < spread/4 || mid > spread*3/4 {
		t.Fatalf("10th close at %v into the window, want near %v", mid, spread/2)
	}
	for _, c := range h.causes {
		if !errors.Is(c, ErrDrain) {
			t.Fatalf("cause %v, want ErrDrain", c)
		}
	}
}

// TestDrainReturnsEarly: with no conns left, Drain does not wait for the timeout.
func TestDrainReturnsEarly(t *testing.T) {
	served := make(chan struct{})
	l := &Listener{Name: "t", Workers: 1, NewHandler: func() Handler {
		return HandlerFunc(func(ctx context.Context, c net.Conn, _ *Hold) {
			defer c.Close()
			c.Write([]byte("hi"))
			<-served
		})
	}}
	stop := start(t, l)
	dialRead(t, l.BoundAddr().String())
	stop()
	// The last conn ends while Drain is waiting (pacing, not a wait for a
	// state): Drain must notice at once, not sit out its timeout.
	time.AfterFunc(50*time.Millisecond, func() { close(served) })
	begin := time.Now()
	l.Drain(t.Context(), 10*time.Second, 10*time.Second)
	if d := time.Since(begin); d > 3*time.Second {
		t.Fatalf("drain took %v with no conn left", d)
	}
}

func TestMaxConnsRefuses(t *testing.T) {
	h := &holdUntilCanceled{}
	var limited atomic.Int32
	refused := make(chan struct{}, 1)
	l := &Listener{Name: "t", Workers: 1, MaxConns: 2, NewHandler: func() Handler { return h },
		OnLimit: func() { limited.Add(1) },
		Refuse:  func(c net.Conn) { c.Write([]byte("no")); c.Close(); refused <- struct{}{} }}
	stop := start(t, l)
	defer func() { stop(); l.Drain(t.Context(), 0, 0) }()
	dialRead(t, l.BoundAddr().String())
	dialRead(t, l.BoundAddr().String())
	c := dialRead(t, l.BoundAddr().String()) // reads "no" from Refuse
	<-refused
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("refused conn stayed open")
	}
	if limited.Load() != 1 {
		t.Fatalf("OnLimit called %d times, want 1", limited.Load())
	}
}

func TestPanicInHandlerIsContained(t *testing.T) {
	l := &Listener{Name: "t", Workers: 1, NewHandler: func() Handler {
		return HandlerFunc(func(ctx context.Context, c net.Conn, _ *Hold) { panic("boom") })
	}}
	stop := start(t, l)
	defer func() { stop(); l.Drain(t.Context(), time.Second, 0) }()
	for range 3 {
		c := tcptest.Dial(t, l.BoundAddr().String())
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("conn of a panicking handler not closed")
		}
	}
}

// TestAcceptBacksOffWhenOutOfFiles lowers this process's descriptor limit
// until accept fails with EMFILE, then checks the worker neither exits nor
// spins and serves again once descriptors are free.
func TestAcceptBacksOffWhenOutOfFiles(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skip("no rlimit:", err)
	}
	h := &holdUntilCanceled{}
	var limited atomic.Int32
	l := &Listener{Name: "t", Workers: 1, NewHandler: func() Handler { return h }, OnLimit: func() { limited.Add(1) }}
	stop := start(t, l)
	defer func() { stop(); l.Drain(t.Context(), 0, 0) }()
	addr := l.BoundAddr().String()
	dialRead(t, addr)

	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	low := lim
	low.Cur = uint64(len(fds) + 8)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Skip("cannot lower rlimit:", err)
	}
	restored := false
	restore := func() {
		if !restored {
			syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
			restored = true
		}
	}
	defer restore()

	// Dial until accept runs out: the kernel completes the handshakes from its
	// backlog, so the dials hold descriptors while accept gets EMFILE.
	var clients []net.Conn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for i := 0; i < 40 && limited.Load() == 0; i++ {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			clients = append(clients, c)
		}
		time.Sleep(10 * time.Millisecond) // pacing: one dial at a time until accept runs out
	}
	if limited.Load() == 0 {
		t.Fatal("accept never reported running out of descriptors")
	}
	time.Sleep(300 * time.Millisecond) // the window in which retries are counted
	if n := limited.Load(); n > 20 {
		t.Fatalf("%d EMFILE retries in ~300ms: the accept loop spins", n)
	}
	for _, c := range clients {
		c.Close()
	}
	clients = nil
	restore()
	dialRead(t, addr) // served once descriptors are free again
}

// TestDetach: a handler that detaches its conn returns at once, yet the conn
// still counts, Drain still cancels its ctx and waits for its release.
func TestDetach(t *testing.T) {
	returned := make(chan struct{}, 1)
	causes := make(chan error, 1)
	l := &Listener{Name: "t", Workers: 1, NewHandler: func() Handler {
		return HandlerFunc(func(_ context.Context, c net.Conn, hold *Hold) {
			ctx, release := hold.Detach()
			c.Write([]byte("hi"))
			go func() {
				// The conn's new owner: ends it when ctx is cancelled.
				<-ctx.Done()
				causes <- context.Cause(ctx)
				c.Close()
				release()
			}()
			returned <- struct{}{}
		})
	}}
	stop := start(t, l)
	c := dialRead(t, l.BoundAddr().String())
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("handler did not return")
	}
	if n := l.Active(); n != 1 {
		t.Fatalf("active %d after the handler returned, want 1", n)
	}
	stop()
	drained := make(chan struct{})
	go func() { l.Drain(context.Background(), 50*time.Millisecond, 0); close(drained) }()
	select {
	case cause := <-causes:
		if !errors.Is(cause, ErrDrain) {
			t.Fatalf("cause %v, want ErrDrain", cause)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("drain did not cancel the detached conn")
	}
	select {
	case <-drained:
	case <-time.After(5 * time.Second):
		t.Fatal("drain did not return after release")
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("client conn still open")
	}
	if n := l.Active(); n != 0 {
		t.Fatalf("active %d after release", n)
	}
}
