package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/loopback"
	"github.com/wslb/wslb/internal/syncbuf"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
)

func TestAccessLogUnwritable(t *testing.T) {
	var errOut bytes.Buffer
	path := filepath.Join(t.TempDir(), "no-such-dir", "access.log")
	if code := run(t.Context(), []string{"-config", "../../config.yaml", "-access-log", path}, io.Discard, &errOut); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(errOut.String(), "access log") {
		t.Fatalf("stderr does not say what failed: %s", errOut.String())
	}
}

// TestAccessLogFileAndSIGUSR1 runs the whole binary path with -access-log
// FILE: a finished conn is logged to the file, and after the file is moved
// away (as logrotate does) SIGUSR1 makes wslb write to a new one.
func TestAccessLogFileAndSIGUSR1(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "access.log")
	listen := loopback.FreeAddr(t)
	cfgPath := filepath.Join(dir, "c.yaml")
	os.WriteFile(cfgPath, fmt.Appendf(nil, `
admin: {listen: ""}
listeners:
  - {name: t, listen: %s, mode: l4, pool: p}
pools:
  - {name: p, backends: [{address: %s}]}
`, listen, echo.TCP(t).Addr()), 0o644)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var stderr syncbuf.Buffer
	go func() {
		done <- run(ctx, []string{"-config", cfgPath, "-access-log", logPath, "-log-format", "json"}, io.Discard, &stderr)
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("wslb did not stop")
		}
	}()

	running := func() {
		t.Helper()
		select {
		case code := <-done:
			done <- code // for the deferred wait
			t.Fatalf("wslb exited with %d: %s", code, stderr.String())
		default:
		}
	}
	oneConn := func() {
		t.Helper()
		c, err := tcptest.Redial(t, listen, running) // the listener binds in the background
		if err != nil {
			t.Fatalf("%v; stderr: %s", err, stderr.String())
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("ping"))
		io.ReadFull(c, make([]byte, 4))
		c.Close()
	}
	waitLines := func(path string, n int) {
		t.Helper()
		if wait.Until(wait.Timeout, func() bool {
			b, _ := os.ReadFile(path)
			return strings.Count(string(b), `"msg":"conn"`) == n
		}) {
			return
		}
		b, _ := os.ReadFile(path)
		t.Fatalf("%s: want %d conn lines, have:\n%s", path, n, b)
	}

	oneConn()
	waitLines(logPath, 1)
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	// The reopen happens on the signal loop; poll for the new file.
	wait.For(t, "the reopened access log", func() bool {
		_, err := os.Stat(logPath)
		return err == nil
	})
	oneConn()
	waitLines(logPath, 1)
	waitLines(logPath+".1", 1)
}
