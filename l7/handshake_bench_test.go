package l7

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/wslb/wslb/header"
	"github.com/wslb/wslb/internal/tcptest"
)

// BenchmarkHandshake is one WebSocket client through an l7 listener: a new
// conn, the upgrade, the backend's 101 relayed, the tunnel opened, then
// closed by the client. The backend is a bare TCP server that answers the
// handshake and waits for the close, so that most of the CPU left is the
// client's and wslb's. proxy-only (benchProxy, the peer's ws job) counts
// wslb's costs alone, system calls included, for a new conn, the upgrade,
// one message echoed, the close handshake and the conn closed by the backend.
func BenchmarkHandshake(b *testing.B) {
	b.Run("together", benchHandshakes)
	b.Run("proxy-only", func(b *testing.B) { benchProxy(b, "ws") })
}

func benchHandshakes(b *testing.B) {
	var be *tcptest.Server
	asSide("backend", func() { be = tcptest.Serve(b, serveHandshake) })
	var l *lb
	asSide("proxy", func() {
		l = startLB(b, "listeners:\n  - {name: web, listen: 127.0.0.1:0, mode: l7, pool: p}\npools:\n  - {name: p, backends: [{address: "+be.Addr()+"}]}\n")
	})
	head := []byte(upgradeHead("/ws"))
	b.ReportAllocs()
	stop := meterCPU(b)
	for b.Loop() {
		c, err := net.Dial("tcp", l.addr)
		if err != nil {
			b.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(head); err != nil {
			b.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			b.Fatalf("status %d", resp.StatusCode)
		}
		c.Close()
	}
	stop()
}

// serveHandshake answers one upgrade on c with a valid 101 and waits for
// the client to close.
func serveHandshake(c net.Conn) {
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		return
	}
	accept := header.AcceptKey(req.Header.Get("Sec-WebSocket-Key"))
	_, err = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+accept+"\r\n\r\n")
	if err != nil {
		return
	}
	_, _ = io.Copy(io.Discard, c)
}
