package main

import (
	"bufio"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/wslb/wslb/internal/loopback"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
)

func TestLine(t *testing.T) {
	for _, tt := range []struct {
		n, capacity int
		want        string
	}{
		{0, 1000, "ready 100%"},
		{400, 1000, "ready 60%"},
		{999, 1000, "ready 0%"},
		{1000, 1000, "ready 0%"},
		{5000, 1000, "ready 0%"},
	} {
		if got := line(tt.n, tt.capacity); got != tt.want {
			t.Errorf("line(%d, %d) = %q; want %q", tt.n, tt.capacity, got, tt.want)
		}
	}
}

func TestCountEstablished(t *testing.T) {
	const table = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2329 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:2329 0100007F:A2B4 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:A2B4 0100007F:2329 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:2329 0100007F:A2B6 06 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 20 4 30 10 -1
`
	n, err := countEstablished(strings.NewReader(table), 9001)
	if err != nil || n != 1 {
		t.Errorf("countEstablished = %d, %v; want 1 (the listener, the client end and TIME_WAIT are not)", n, err)
	}
}

// TestAgentAnswers counts real conns: three clients on a loopback server,
// and the agent's answer for that port at capacity 4.
func TestAgentAnswers(t *testing.T) {
	srv := tcptest.Serve(t, func(c net.Conn) { c.Read(make([]byte, 1)) })
	_, p, _ := net.SplitHostPort(srv.Addr())
	port, _ := strconv.Atoi(p)
	for range 3 {
		tcptest.Dial(t, srv.Addr())
	}
	wait.For(t, "three conns accepted", func() bool { return srv.Accepted() == 3 })
	addr := loopback.FreeAddr(t)
	ctx := t.Context()
	done := make(chan error, 1)
	go func() { done <- serve(ctx, addr, uint16(port), 4, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() { <-done }) // t.Context ends first, which closes its listener
	c, err := tcptest.Redial(t, addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != "ready 25%\n" {
		t.Errorf("answer %q, %v; want \"ready 25%%\\n\" (3 of 4 conns)", got, err)
	}
}
