package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wslb/wslb/access"
	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/internal/syncbuf"
)

// running is serve running a test config in the background.
type running struct {
	in     *instance
	cancel context.CancelFunc // as SIGTERM does: starts the drain
	done   <-chan struct{}    // closed when serve has returned
	code   int                // serve's exit code, once done is closed
}

// exitCode waits up to within for serve to return and returns its exit code.
func (r *running) exitCode(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-r.done:
		return r.code
	case <-time.After(within):
		t.Fatalf("serve did not return within %v", within)
		return -1
	}
}

// startServe runs serve on the config text until the test ends, and returns
// once every socket is bound.
func startServe(t *testing.T, yaml string) *running {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return startServeConfig(t, cfg, serveOptions{})
}

// startServeFile is startServe on a config file, which reloads read again.
func startServeFile(t *testing.T, path string) *running {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return startServeConfig(t, cfg, serveOptions{path: path})
}

// startServeLogFile is startServeFile with a JSON access log, kept in the
// returned buffer, and a WebSocket tunnel's graceful close waiting
// closeWait for the Close replies (0: the default 5 s).
func startServeLogFile(t *testing.T, path string, closeWait time.Duration) (*running, *syncbuf.Buffer) {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	acc := access.New(slog.New(slog.NewJSONHandler(logs, nil)))
	return startServeConfig(t, cfg, serveOptions{path: path, access: acc, closeWait: closeWait}), logs
}

func startServeConfig(t testing.TB, cfg *config.Config, so serveOptions) *running {
	t.Helper()
	return startServeLogged(t, cfg, so, io.Discard)
}

// startServeLogged is startServeConfig with its log written to logs.
func startServeLogged(t testing.TB, cfg *config.Config, so serveOptions, logs io.Writer) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan *instance, 1)
	done := make(chan struct{})
	log := slog.New(slog.NewTextHandler(logs, nil))
	r := &running{cancel: cancel, done: done}
	go func() {
		defer close(done)
		r.code = serve(ctx, cfg, log, so, func(in *instance) { started <- in })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("serve did not return")
		}
	})
	select {
	case r.in = <-started:
	case <-done:
		log := "(not kept)"
		if s, ok := logs.(fmt.Stringer); ok {
			log = s.String()
		}
		t.Fatalf("serve exited with %d before starting; its log:\n%s", r.code, log)
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not start")
	}
	return r
}

// dialWS opens a WebSocket to url, allowing 10 s, and closes it when the
// test ends.
func dialWS(ctx context.Context, t *testing.T, url string, opts *websocket.DialOptions) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, opts)
	if err != nil {
		t.Fatalf("WebSocket %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("WebSocket %s: status %d", url, resp.StatusCode)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// greeting reads the first message of a ?hello=1 conn to an echo.WS
// backend, "connected to NAME", and returns NAME.
func greeting(ctx context.Context, t testing.TB, c *websocket.Conn) string {
	t.Helper()
	name, err := readGreeting(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// readGreeting is greeting for a goroutine other than the test's: it
// returns what went wrong.
func readGreeting(ctx context.Context, c *websocket.Conn) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, hello, err := c.Read(ctx)
	if err != nil {
		return "", err
	}
	name, ok := strings.CutPrefix(string(hello), "connected to ")
	if !ok {
		return "", fmt.Errorf("greeting %q", hello)
	}
	return name, nil
}

// wsEcho sends msg and fails unless the same message comes back.
func wsEcho(ctx context.Context, t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	_, got, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read the echo: %v", err)
	}
	if string(got) != msg {
		t.Fatalf("echo %q, want %q", got, msg)
	}
}
