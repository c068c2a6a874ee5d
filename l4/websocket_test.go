package l4

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/wait"
)

// TestWebSocketPassesUntouched runs real WebSocket sessions (echo backends
// that greet a client with their names, as the demo's do) through the l4
// listener: the upgrade, frames both ways and the close handshake all pass
// byte for byte, and the sessions spread over the backends by least
// connections.
func TestWebSocketPassesUntouched(t *testing.T) {
	var addrs []string
	for i := range 3 {
		addrs = append(addrs, echo.WS(t, echo.WSOptions{Name: fmt.Sprintf("demo-%d", i+1)}))
	}
	lb := startLB(t, "", addrs...)

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	seen := map[string]int{}
	var conns []*websocket.Conn
	for i := range 9 {
		c, resp, err := websocket.Dial(ctx, "ws://"+lb.addr+"/ws?hello=1", &websocket.DialOptions{HTTPClient: &http.Client{}})
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("status %d", resp.StatusCode)
		}
		conns = append(conns, c)
		_, hello, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		seen[strings.TrimPrefix(string(hello), "connected to ")]++
		for j := range 5 {
			msg := fmt.Sprintf("conn %d msg %d %s", i, j, strings.Repeat("x", j*1000))
			if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
				t.Fatal(err)
			}
			_, got, err := c.Read(ctx)
			if err != nil || string(got) != msg {
				t.Fatalf("echo %d/%d: %q %v", i, j, got, err)
			}
		}
	}
	for name, n := range seen {
		if n != 3 {
			t.Errorf("%s holds %d sessions, want 3 (all: %v)", name, n, seen)
		}
	}
	for _, c := range conns {
		if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
			t.Fatalf("close handshake: %v", err)
		}
	}
	wait.For(t, "all released", func() bool {
		for _, b := range lb.pool.Backends() {
			if b.Active() != 0 {
				return false
			}
		}
		return true
	})
}
