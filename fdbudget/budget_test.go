package fdbudget

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/wslb/wslb/internal/syncbuf"
)

func TestReserve(t *testing.T) {
	for _, c := range []struct{ limit, want int64 }{
		{1 << 20, 32}, {1024, 32}, {256, 32}, {255, 31}, {128, 16}, {64, 8}, {8, 1}, {3, 1},
	} {
		if got := ReserveFor(c.limit); got != c.want {
			t.Errorf("ReserveFor(%d) = %d, want %d", c.limit, got, c.want)
		}
	}
}

// TestDecisions walks a budget of 100 (reserve 12, share 88) to its edge:
// accepts go into the reserve and say so, Take and Spare do not.
func TestDecisions(t *testing.T) {
	b := WithLimit(100, 86, nil)
	if !b.Take() || b.Used() != 87 {
		t.Fatalf("Take at 86 of a share of 88: used %d", b.Used())
	}
	if !b.Accept() || b.Used() != 88 {
		t.Fatalf("Accept to 88 of 88 refused (used %d)", b.Used())
	}
	if !b.Spare() {
		t.Fatal("Spare at exactly the share: a reservation counted in it may dial")
	}
	if b.Take() || b.Used() != 88 {
		t.Fatalf("Take past the share: used %d, want it refused and uncounted", b.Used())
	}
	if b.Accept() || b.Used() != 89 {
		t.Fatalf("Accept past the share: used %d, want it refused and still counted", b.Used())
	}
	if b.Spare() {
		t.Fatal("Spare in the reserve")
	}
	if b.Scarce() {
		t.Fatal("Scarce with 11 of a reserve of 12 left")
	}
	b.Add(6) // 95: 5 left, under half the reserve
	if !b.Scarce() {
		t.Fatal("not Scarce with 5 of a reserve of 12 left")
	}
	b.Add(-95)
	if b.Used() != 0 || !b.Take() {
		t.Fatalf("after closing everything: used %d", b.Used())
	}
}

func TestNilBudget(t *testing.T) {
	var b *Budget
	b.Add(5)
	if !b.Accept() || !b.Take() || !b.Spare() || b.Scarce() || b.Used() != 0 || b.Limit() != 0 {
		t.Fatal("a nil Budget must count nothing and refuse nothing")
	}
}

// TestLogsShortage: one warning when the reserve is reached, however many
// refusals follow, and one line when descriptors are free again.
func TestLogsShortage(t *testing.T) {
	var logs syncbuf.Buffer
	b := WithLimit(100, 88, slog.New(slog.NewTextHandler(&logs, nil)))
	for range 5 {
		if b.Take() {
			t.Fatal("Take in the reserve")
		}
	}
	b.Add(-1)
	b.Take()
	out := logs.String()
	if n := strings.Count(out, "out of file descriptors"); n != 1 {
		t.Errorf("%d warnings, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "limit=100 reserve=12 used=88") || !strings.Contains(out, "ulimit -n") {
		t.Errorf("the warning does not say the numbers and the fix:\n%s", out)
	}
	if n := strings.Count(out, "free again"); n != 1 {
		t.Errorf("%d recovery lines, want 1:\n%s", n, out)
	}
}

func TestExhausted(t *testing.T) {
	for _, err := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		&net.OpError{Op: "dial", Err: os.NewSyscallError("socket", syscall.EMFILE)},
		fmt.Errorf("dial 10.0.0.1:80: %w", &net.OpError{Op: "dial", Err: os.NewSyscallError("socket", syscall.ENFILE)})} {
		if !Exhausted(err) {
			t.Errorf("Exhausted(%v) = false", err)
		}
	}
	for _, err := range []error{nil, syscall.ECONNREFUSED, syscall.ETIMEDOUT, os.ErrDeadlineExceeded} {
		if Exhausted(err) {
			t.Errorf("Exhausted(%v) = true", err)
		}
	}
}

// TestNew counts what it was given: the baseline is what is open, and a
// pipe opened after it is two more in CountOpen.
func TestNew(t *testing.T) {
	b, err := New(nil)
	if err != nil {
		t.Skip("no descriptor count here:", err)
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if b.Limit() != int64(rl.Cur) || b.Used() < 3 {
		t.Fatalf("limit %d used %d, want %d and at least stdin, stdout, stderr", b.Limit(), b.Used(), rl.Cur)
	}
	before, _ := CountOpen()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	after, _ := CountOpen()
	r.Close()
	w.Close()
	if after-before != 2 {
		t.Fatalf("CountOpen went from %d to %d over a pipe, want +2", before, after)
	}
}

// BenchmarkConnAccounting is what a proxied conn costs the count: its
// accept and its backend reservation counted, then both given back, from
// every core at once. BenchmarkCountOpen is the /proc read it replaces.
func BenchmarkConnAccounting(b *testing.B) {
	fds := WithLimit(1<<20, 0, nil)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if fds.Accept() && fds.Take() {
				fds.Add(-2)
			}
		}
	})
}

func BenchmarkCountOpen(b *testing.B) {
	for b.Loop() {
		if _, err := CountOpen(); err != nil {
			b.Fatal(err)
		}
	}
}
