package health

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/fdbudget"
	"github.com/wslb/wslb/internal/wait"
	"github.com/wslb/wslb/pool"
)

// TestChecksWaitForDescriptors: with only the reserve left, a check is not
// run and is no result, so an up backend stays up whatever fall says; once
// a descriptor is free, checks run again.
func TestChecksWaitForDescriptors(t *testing.T) {
	be := newTestBackend(t, nil)
	cfg := healthConfig(config.CheckTCP)
	cfg.Fall = 1
	fds := fdbudget.WithLimit(100, 0, nil)
	p := pool.NewCounted(poolConfig(cfg, be), fds)
	b := p.Backends()[0]
	var rec recorder
	var logs logBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	startChecks(t, p, cfg, log, rec.hooks())
	wait.Within(t, "up", margin, b.Up)

	fds.Add(88) // the share: only the reserve is left
	skipped := logs.count("health check skipped")
	wait.For(t, "three checks skipped", func() bool { return logs.count("health check skipped") >= skipped+3 })
	results := rec.ok.Load() + rec.bad.Load()
	wait.For(t, "three more checks skipped", func() bool { return logs.count("health check skipped") >= skipped+6 })
	if n := rec.ok.Load() + rec.bad.Load(); n != results || rec.bad.Load() != 0 {
		t.Fatalf("%d results (%d failed) while no descriptor was free, want none", n-results, rec.bad.Load())
	}
	if !b.Up() || len(rec.changes(b.String())) != 1 {
		t.Fatalf("backend up %v, changes %v: a check without a descriptor changed its state", b.Up(), rec.changes(b.String()))
	}

	fds.Add(-1)
	wait.For(t, "checks to run again", func() bool { return rec.ok.Load() > results })
	if got := fds.Used(); got != 87 && got != 88 { // 88 while a check holds its conn
		t.Fatalf("%d descriptors counted, want 87 (88 during a check)", got)
	}
}

// TestPassiveIgnoresLocalShortage: a dial that failed for lack of local
// descriptors or memory is not the backend's failure.
func TestPassiveIgnoresLocalShortage(t *testing.T) {
	be := newTestBackend(t, nil)
	c := poolConfig(healthConfig(config.CheckNone), be)
	c.Passive.MaxFails = 1
	p := pool.New(c)
	b := p.Backends()[0]
	pa := &Passive{}
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM} {
		pa.DialFailed(b, fmt.Errorf("dial %s: %w", b, &net.OpError{Op: "dial", Err: os.NewSyscallError("socket", errno)}))
	}
	if !b.Healthy() {
		t.Fatal("a local shortage ejected the backend")
	}
	pa.DialFailed(b, &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)})
	if b.Healthy() {
		t.Fatal("a refused dial did not eject the backend at max_fails 1")
	}
}
