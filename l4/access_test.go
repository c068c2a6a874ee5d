package l4

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/wslb/wslb/access"
	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/loopback"
	"github.com/wslb/wslb/internal/syncbuf"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
)

func TestAccessLogConns(t *testing.T) {
	var buf syncbuf.Buffer
	setup := func(px *Proxy) { px.Access = access.New(slog.New(slog.NewJSONHandler(&buf, nil))) }
	be := echo.TCP(t)
	l := startLBWith(t, setup, "", be.Addr())

	c := tcptest.Dial(t, l.addr)
	roundTrip(t, c, "hello")
	roundTrip(t, c, "world!")
	if n := len(buf.Lines()); n != 0 {
		t.Fatalf("%d lines while the conn is open; a conn is logged when it ends", n)
	}
	c.Close()
	wait.For(t, "one access line", func() bool { return len(buf.Lines()) == 1 })

	dead := startLBWith(t, setup, "", loopback.DeadAddr(t))
	dc := tcptest.Dial(t, dead.addr)
	dc.Read(make([]byte, 1)) // closed once both dials failed
	wait.For(t, "two access lines", func() bool { return len(buf.Lines()) == 2 })

	var lines []map[string]any
	for _, s := range buf.Lines() {
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, m)
	}
	want := []map[string]any{
		{"msg": "conn", "listener": "l4test", "pool": "p", "backend": be.Addr(), "rx": 11.0, "tx": 11.0, "reason": "client", "status": 0.0, "upgrade": false},
		{"msg": "conn", "listener": "l4test", "pool": "p", "rx": 0.0, "tx": 0.0, "reason": "dial"},
	}
	for i, w := range want {
		for k, v := range w {
			if lines[i][k] != v {
				t.Errorf("line %d: %s = %v, want %v; %v", i, k, lines[i][k], v, lines[i])
			}
		}
	}
	if _, ok := lines[1]["backend"]; ok {
		t.Errorf("a conn that reached no backend names one: %v", lines[1])
	}
	if c, _ := lines[0]["client"].(string); !strings.HasPrefix(c, "127.0.0.1:") {
		t.Errorf("client = %q, want the peer's 127.0.0.1:port", c)
	}
}
