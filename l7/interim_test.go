package l7

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wslb/wslb/header"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
)

// interimBackend answers one upgrade with the 1xx heads of interim, then
// final (a 101 gets the right Sec-WebSocket-Accept appended as its last
// header), then echoes what the tunnel brings.
func interimBackend(t *testing.T, interim []string, final string) string {
	t.Helper()
	return tcptest.Serve(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		var b strings.Builder
		for _, h := range interim {
			b.WriteString(h + "\r\n")
		}
		b.WriteString(final)
		if strings.Contains(final, " 101 ") {
			b.WriteString("Sec-WebSocket-Accept: " + header.AcceptKey(req.Header.Get("Sec-WebSocket-Key")) + "\r\n")
		}
		b.WriteString("\r\n")
		if _, err := io.WriteString(c, b.String()); err != nil {
			return
		}
		io.Copy(c, br)
	}).Addr()
}

// TestUpgradeInterimAnswersRelayed: a backend that answers an upgrade with
// 103 Early Hints and 100 Continue before its 101 gets each 1xx relayed to
// the client (hop-by-hop headers removed), then the 101 is checked and the
// tunnel opens as usual; before a non-101 final answer, the 1xx go first too.
func TestUpgradeInterimAnswersRelayed(t *testing.T) {
	early := []string{
		"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\nConnection: X-Hop\r\nX-Hop: secret\r\n",
		"HTTP/1.1 100 Continue\r\n",
	}
	const switched = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"

	t.Run("then 101", func(t *testing.T) {
		l := simpleLB(t, "", interimBackend(t, early, switched))
		c := tcptest.Dial(t, l.addr)
		io.WriteString(c, upgradeHead("/"))
		br := bufio.NewReader(c)
		expectInterim(t, br, 103)
		expectInterim(t, br, 100)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("after the 1xx: %v %v, want the 101", resp, err)
		}
		io.WriteString(c, "through the tunnel")
		buf := make([]byte, len("through the tunnel"))
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "through the tunnel" {
			t.Fatalf("tunnel echo %q %v", buf, err)
		}
		if got := l.requests("p", "101"); got != 1 {
			t.Errorf("http_requests_total{code=101} = %v", got)
		}
		mExpectErrs(t, l, nil, nil)
	})

	t.Run("then 403", func(t *testing.T) {
		l := simpleLB(t, "", interimBackend(t, early[:1], "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n"))
		c := tcptest.Dial(t, l.addr)
		io.WriteString(c, upgradeHead("/"))
		br := bufio.NewReader(c)
		expectInterim(t, br, 103)
		if resp, body := readResp(t, br, "GET"); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("final answer %d %q, want the backend's 403", resp.StatusCode, body)
		}
	})
}

// expectInterim reads one interim answer with status code from br and
// checks that its hop-by-hop headers were removed and the rest kept.
func expectInterim(t *testing.T, br *bufio.Reader, code int) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("waiting for %d: %v", code, err)
	}
	if resp.StatusCode != code {
		t.Fatalf("got %d, want the backend's %d first", resp.StatusCode, code)
	}
	if code != http.StatusEarlyHints {
		return
	}
	if got := resp.Header.Get("Link"); got != "</app.css>; rel=preload" {
		t.Errorf("103 lost its Link header (got %q)", got)
	}
	if resp.Header.Get("X-Hop") != "" || resp.Header.Get("Connection") != "" {
		t.Errorf("103 kept hop-by-hop headers: %v", resp.Header)
	}
}

// TestUpgradeEndlessInterim: a backend that sends 1xx answers and never a
// final one cannot hold the conn: past a few of them the client gets a 502,
// and a trickle of them does not renew timeouts.handshake, which ends the
// wait with a 504. Either way the backend is released and no tunnel opens.
func TestUpgradeEndlessInterim(t *testing.T) {
	const endless = 100000 // 1xx heads a backend sends at most
	for _, tc := range []struct {
		name   string
		pace   time.Duration
		status int
		errs   map[string]float64
	}{
		// More than the socket buffers hold, so the backend notices the close.
		{"a flood", 0, http.StatusBadGateway, nil},
		// At most 5 pass: at 150 ms each, the handshake's 400 ms end first.
		{"a trickle", 150 * time.Millisecond, http.StatusGatewayTimeout, map[string]float64{"timeout": 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sent := make(chan int, 1)
			addr := tcptest.Serve(t, func(c net.Conn) {
				c.SetDeadline(time.Now().Add(20 * time.Second))
				n := 0
				defer func() { sent <- n }()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				for ; n < endless; n++ {
					if _, err := io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"); err != nil {
						return
					}
					if tc.pace > 0 {
						time.Sleep(tc.pace) // pacing: a backend that trickles its 1xx
					}
				}
			})
			l := simpleLB(t, "    timeouts:\n      handshake: 400ms\n", addr.Addr())
			c := tcptest.Dial(t, l.addr)
			io.WriteString(c, upgradeHead("/"))
			br := bufio.NewReader(c)
			relayed := 0
			var resp *http.Response
			for range 1000 {
				r, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("after %d interim answers: %v", relayed, err)
				}
				if r.StatusCode != http.StatusEarlyHints {
					resp = r
					break
				}
				relayed++
			}
			if resp == nil || resp.StatusCode != tc.status {
				t.Fatalf("final answer %v after %d interim ones, want %d", resp, relayed, tc.status)
			}
			body, _ := io.ReadAll(resp.Body)
			checkOwnAnswer(t, resp, string(body), tc.status)
			if relayed == 0 || relayed > maxInterim {
				t.Errorf("%d interim answers relayed, want 1 to %d", relayed, maxInterim)
			}
			expectClosed(t, br, c)
			mExpectErrs(t, l, nil, tc.errs)
			b := l.pools["p"].Backends()[0]
			wait.For(t, "backend released", func() bool { return b.Active() == 0 })
			select {
			case n := <-sent:
				if n >= endless {
					t.Errorf("the backend's conn was held through all %d of its 1xx", n)
				}
			case <-time.After(10 * time.Second):
				t.Error("the backend's conn was never closed")
			}
		})
	}
}
