package l7

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/wslb/wslb/access"
	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/loopback"
	"github.com/wslb/wslb/internal/syncbuf"
	"github.com/wslb/wslb/internal/wait"
)

// accessLines collects JSON access lines written by proxies under test.
type accessLines struct{ buf syncbuf.Buffer }

// setup installs a JSON access logger writing to a on a Proxy.
func (a *accessLines) setup(px *Proxy) {
	px.Access = access.New(slog.New(slog.NewJSONHandler(&a.buf, nil)))
}

func (a *accessLines) all(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range a.buf.Lines() {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("access line is not JSON: %v: %s", err, line)
		}
		out = append(out, m)
	}
	return out
}

// waitLines waits until n lines were written and returns them.
func (a *accessLines) waitLines(t *testing.T, n int) []map[string]any {
	t.Helper()
	wait.For(t, fmt.Sprintf("%d access lines", n), func() bool { return len(a.all(t)) >= n })
	got := a.all(t)
	if len(got) != n {
		t.Fatalf("%d access lines, want %d: %v", len(got), n, got)
	}
	return got
}

func checkFields(t *testing.T, line map[string]any, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if line[k] != v {
			t.Errorf("%s = %v (%T), want %v; line %v", k, line[k], line[k], v, line)
		}
	}
}

func TestAccessLogPlainRequests(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "hello, world") // 12 bytes
	}))
	var lines accessLines
	l := startLB(t, fmt.Sprintf(`
listeners:
  - name: web
    listen: 127.0.0.1:0
    mode: l7
    http: {trusted_proxies: [127.0.0.1/32]}
    routes:
      - {path: /api/, pool: p}
pools:
  - {name: p, backends: [{address: %s}]}
`, be.addr()), lines.setup)

	// The query is left out: WebSocket and API clients put tokens there.
	resp, _ := exchange(t, l.addr, "POST /api/items?token=secret HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-For: 203.0.113.7\r\nContent-Length: 5\r\n\r\nabcde")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// A line is written once its answer has gone out, so the client may
	// see the answer first: wait for each line before the next request.
	lines.waitLines(t, 1)
	exchange(t, l.addr, "GET /nowhere HTTP/1.1\r\nHost: a.test\r\n\r\n")
	lines.waitLines(t, 2)
	exchange(t, l.addr, "GET /bad\x01path HTTP/1.1\r\nHost: a.test\r\n\r\n")

	got := lines.waitLines(t, 3)
	checkFields(t, got[0], map[string]any{
		"msg": "request", "listener": "web", "pool": "p", "backend": be.addr(), "route": "/api/",
		"method": "POST", "path": "/api/items", "status": 200.0, "upgrade": false,
		"rx": 5.0, "tx": 12.0, "reason": "done", "real_ip": "203.0.113.7",
	})
	if c, _ := got[0]["client"].(string); !strings.HasPrefix(c, "127.0.0.1:") {
		t.Errorf("client = %v, want the peer's 127.0.0.1:port", got[0]["client"])
	}
	if d, _ := got[0]["duration"].(float64); d <= 0 || d > 10 {
		t.Errorf("duration = %v s", got[0]["duration"])
	}
	checkFields(t, got[1], map[string]any{"path": "/nowhere", "status": 404.0, "reason": "done"})
	if _, ok := got[1]["backend"]; ok {
		t.Errorf("a 404 names a backend: %v", got[1])
	}
	checkFields(t, got[2], map[string]any{"status": 400.0})
	if strings.Contains(lines.buf.String(), "secret") {
		t.Errorf("a query string reached the access log:\n%s", lines.buf.String())
	}
}

// TestAccessLogAnswerBytes: tx counts the body of every answer, a static
// file's and wslb's own too, not only a relayed one's (nginx's
// body_bytes_sent); a HEAD's is 0.
func TestAccessLogAnswerBytes(t *testing.T) {
	dir := t.TempDir()
	big := strings.Repeat("0123456789", 10_000) // streamed, not buffered
	for name, body := range map[string]string{"small.txt": "0123456789", "big.txt": big} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var lines accessLines
	l := startLB(t, fmt.Sprintf(`
listeners:
  - name: web
    listen: 127.0.0.1:0
    mode: l7
    routes:
      - {path: /, static: %s}
`, dir), lines.setup)
	var bodies []int
	for i, raw := range []string{
		"GET /small.txt HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /big.txt HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		_, body := exchange(t, l.addr, raw)
		bodies = append(bodies, len(body))
		lines.waitLines(t, i+1)
	}
	resp, _ := exchangeMethod(t, l.addr, "HEAD /small.txt HTTP/1.1\r\nHost: a\r\n\r\n", "HEAD")
	if resp.StatusCode != 200 {
		t.Fatalf("HEAD: %d", resp.StatusCode)
	}
	got := lines.waitLines(t, 4)
	if bodies[0] != 10 || bodies[1] != len(big) || bodies[2] == 0 {
		t.Fatalf("bodies of %v bytes", bodies)
	}
	for i, want := range []map[string]any{
		{"path": "/small.txt", "status": 200.0, "tx": 10.0},
		{"path": "/big.txt", "status": 200.0, "tx": float64(len(big))},
		{"path": "/nowhere", "status": 404.0, "tx": float64(bodies[2])},
		{"method": "HEAD", "status": 200.0, "tx": 0.0},
	} {
		checkFields(t, got[i], want)
	}
}

func TestAccessLogTunnel(t *testing.T) {
	be := newBackend(t, echo.WSHandler(echo.WSOptions{}))
	var lines accessLines
	l := startLB(t, fmt.Sprintf(`
listeners:
  - {name: web, listen: 127.0.0.1:0, mode: l7, pool: p}
pools:
  - {name: p, backends: [{address: %s}]}
`, be.addr()), lines.setup)
	c := dialWS(t, "ws://"+l.addr+"/chat?room=1", nil)
	msg := bytes.Repeat([]byte("x"), 1000)
	echoOnce(t, c, websocket.MessageBinary, msg)
	if len(lines.all(t)) != 0 {
		t.Fatal("a tunnel was logged before it closed")
	}
	c.Close(websocket.StatusNormalClosure, "")

	got := lines.waitLines(t, 1)[0]
	checkFields(t, got, map[string]any{
		"msg": "tunnel", "listener": "web", "pool": "p", "backend": be.addr(), "method": "GET",
		"path": "/chat", "status": 101.0, "upgrade": true,
	})
	// The client's frames are masked and a few bytes longer; the close
	// handshake adds a few more each way.
	for _, dir := range []string{"rx", "tx"} {
		if n, _ := got[dir].(float64); n < 1000 || n > 1100 {
			t.Errorf("%s = %v, want 1000 bytes of payload plus framing", dir, got[dir])
		}
	}
	if r := got["reason"]; r != "client" && r != "backend" {
		// coder/websocket's close handshake lets either side close the TCP
		// conn first.
		t.Errorf("reason = %v, want client or backend", r)
	}
}

func TestAccessLogNoBackend(t *testing.T) {
	var lines accessLines
	l := startLB(t, fmt.Sprintf(`
listeners:
  - {name: web, listen: 127.0.0.1:0, mode: l7, pool: p}
pools:
  - {name: p, backends: [{address: %s}]}
`, loopback.DeadAddr(t)), lines.setup)
	resp, _ := exchange(t, l.addr, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
	if resp.StatusCode != 502 {
		t.Fatalf("status %d, want 502", resp.StatusCode)
	}
	checkFields(t, lines.waitLines(t, 1)[0], map[string]any{"status": 502.0, "reason": "dial", "pool": "p"})
}
