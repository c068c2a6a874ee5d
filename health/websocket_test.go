package health

import (
	"bufio"
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/wait"
	"github.com/wslb/wslb/pool"
)

// badAccept answers the upgrade with a 101 whose Sec-WebSocket-Accept is wrong.
func badAccept() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
		brw.Flush()
		bufio.NewReader(conn).ReadByte() // until the client gives up
	})
}

func TestWebSocketCheck(t *testing.T) {
	// A real coder/websocket server, which sends the close status it got
	// from each client to closes.
	closes := make(chan websocket.StatusCode, 16)
	real := echo.WSHandler(echo.WSOptions{OnClose: func(s websocket.StatusCode) {
		select {
		case closes <- s:
		default:
		}
	}})
	tests := []struct {
		name string
		h    http.Handler
		up   bool
	}{
		{name: "real websocket server", h: real, up: true},
		{name: "200 instead of 101", h: statusHandler(http.StatusOK, nil), up: false},
		{name: "101 with a wrong accept", h: badAccept(), up: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := newTestBackend(t, tt.h)
			cfg := healthConfig(config.CheckWebSocket)
			p := pool.New(poolConfig(cfg, be))
			b := p.Backends()[0]
			var rec recorder
			startChecks(t, p, cfg, nil, rec.hooks())
			wait.Within(t, "first verdict", margin, func() bool { return b.State() != pool.StateUnknown })
			if b.Up() != tt.up {
				t.Fatalf("Up() = %v; want %v (events %+v)", b.Up(), tt.up, rec.changes(b.String()))
			}
			if !tt.up {
				return
			}
			select {
			case got := <-closes:
				if got != websocket.StatusNormalClosure {
					t.Errorf("server saw close status %v; want a clean close frame (1000)", got)
				}
			case <-time.After(margin):
				t.Fatal("the server saw no close")
			}
		})
	}
}

// TestWebSocketProbeDirect checks the probe's error for a plain HTTP server,
// the case the issue names: a server that answers /healthz but not WebSocket.
func TestWebSocketProbeDirect(t *testing.T) {
	be := newTestBackend(t, statusHandler(http.StatusOK, nil))
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout*10)
	defer cancel()
	if err := probe(ctx, be.addr, nil, healthConfig(config.CheckWebSocket)); err == nil {
		t.Fatal("websocket probe passed against a 200")
	}
	if err := probe(ctx, be.addr, nil, healthConfig(config.CheckHTTP)); err != nil {
		t.Fatalf("http probe against the same server: %v", err)
	}
}
