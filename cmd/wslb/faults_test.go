package main

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wslb/wslb/internal/proctest"
	"github.com/wslb/wslb/internal/wait"
)

// The moments a fault strikes at.
const (
	// atAnswer: before any byte of an answer. The request's query asks the
	// backend for the fault, or the signal comes before the request.
	atAnswer = "answer"
	// inTunnel: in an established tunnel, after one echo. A message asks
	// the backend for the fault, or the signal comes.
	inTunnel = "tunnel"
	// inBody: after the head and the first 10 bytes of a 200's body (100
	// promised by Content-Length, or a first chunk of a stream).
	inBody = "body"
)

// faultCase is one fault at one moment of one kind of conn.
type faultCase struct {
	// via is the conn: ws-l7 or ws-l4, a WebSocket through the l7 or the
	// l4 listener; get, a plain request answered with a Content-Length;
	// stream, one answered in chunks.
	via    string
	moment string
	// fault is kill or stop, a signal to the backend's process (which
	// otherwise holds the conn and says nothing), or what the backend does
	// itself, as proctest's act takes it: then=wait is silent, then=rst
	// resets, send=head is a status line and some headers, send=half a
	// part of a frame. In the body, the part of the body is implied.
	fault string
	// want is what the client sees: closed, going away (a Close 1001:
	// wslb ended a WebSocket tunnel at a frame boundary; inside a frame
	// that never ends it can only close), truncated (a body that ends
	// early), or a status code.
	want string
	// reason is the access line's reason, and a tunnel's tunnels_closed
	// reason.
	reason string
}

// TestFaults puts wslb in front of a backend process that dies (SIGKILL),
// resets its conn, falls silent, answers half, or stops (SIGSTOP, then
// SIGCONT), before its answer, in the middle of a tunnel and in the middle
// of a body, and reloads the configuration while the fault is under way.
// Whatever happens, the client gets a close or an error status within its
// deadline (timeouts.idle and timeouts.handshake are 500 ms), the access
// line says who ended it, the gauges and the backend's reservation are back
// to 0, and a stopped backend serves again once continued.
func TestFaults(t *testing.T) {
	cases := []faultCase{
		{"ws-l7", inTunnel, "kill", "closed", "backend"},
		{"ws-l7", inTunnel, "then=rst", "closed", "backend"},
		{"ws-l7", inTunnel, "then=wait", "going away", "idle"},
		{"ws-l7", inTunnel, "send=half&then=wait", "closed", "idle"},
		{"ws-l7", inTunnel, "send=half&then=close", "closed", "backend"},
		{"ws-l7", inTunnel, "stop", "going away", "idle"},
		{"ws-l4", inTunnel, "kill", "closed", "backend"},
		{"ws-l4", inTunnel, "then=rst", "closed", "backend"},
		{"ws-l4", inTunnel, "then=wait", "closed", "idle"},
		{"ws-l4", inTunnel, "send=half&then=wait", "closed", "idle"},
		{"ws-l4", inTunnel, "send=half&then=close", "closed", "backend"},
		{"ws-l4", inTunnel, "stop", "closed", "idle"},

		{"get", inBody, "kill", "truncated", "backend"},
		{"get", inBody, "then=rst", "truncated", "backend"},
		{"get", inBody, "then=wait", "truncated", "idle"},
		{"get", inBody, "then=close", "truncated", "backend"},
		{"get", inBody, "stop", "truncated", "idle"},
		{"stream", inBody, "kill", "truncated", "backend"},
		{"stream", inBody, "then=rst", "truncated", "backend"},
		{"stream", inBody, "then=wait", "truncated", "idle"},
		{"stream", inBody, "then=close", "truncated", "backend"},
		{"stream", inBody, "stop", "truncated", "idle"},

		{"get", atAnswer, "kill", "502", "dial"},
		{"get", atAnswer, "then=rst", "502", "backend"},
		{"get", atAnswer, "then=wait", "504", "idle"},
		{"get", atAnswer, "send=head&then=wait", "504", "idle"},
		{"get", atAnswer, "send=head&then=close", "502", "backend"},
		{"get", atAnswer, "stop", "504", "idle"},
		{"ws-l7", atAnswer, "kill", "502", "dial"},
		{"ws-l7", atAnswer, "then=rst", "502", "backend"},
		{"ws-l7", atAnswer, "then=wait", "504", "idle"},
		{"ws-l7", atAnswer, "send=head&then=wait", "504", "idle"},
		{"ws-l7", atAnswer, "stop", "504", "idle"},
		{"ws-l4", atAnswer, "kill", "closed", "dial"},
		{"ws-l4", atAnswer, "then=rst", "closed", "backend"},
		{"ws-l4", atAnswer, "then=wait", "closed", "idle"},
		{"ws-l4", atAnswer, "stop", "closed", "idle"},
	}
	prog := proctest.Build(t)
	for _, tc := range cases {
		t.Run(tc.via+"/"+tc.moment+"/"+tc.fault, func(t *testing.T) {
			t.Parallel() // each case has its own wslb and backend process
			runFault(t, prog, tc)
		})
	}
}

// TestFaultsStoppedBriefly: a backend stopped (SIGSTOP) for less than the
// idle timeout loses nothing: messages sent meanwhile through both
// listeners, and a request, are answered once it continues (SIGCONT).
func TestFaultsStoppedBriefly(t *testing.T) {
	fx := startFaultFixture(t, proctest.Build(t), time.Minute)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var tunnels []*websocket.Conn
	for _, via := range []string{"ws-l7", "ws-l4"} {
		c := dialWS(ctx, t, fx.url(via, "/"), nil)
		wsEcho(ctx, t, c, "before the stop")
		tunnels = append(tunnels, c)
	}
	fx.be.Stop()
	for _, c := range tunnels {
		if err := c.Write(ctx, websocket.MessageText, []byte("while stopped")); err != nil {
			t.Fatal(err)
		}
	}
	answer := make(chan string, 1)
	go func() { answer <- fx.request(ctx, "get", "/") }()
	b := fx.f.r.in.gen.Load().pools["p"].Backends()[0]
	wait.For(t, "the request at the stopped backend", func() bool { return b.Active() == 3 })
	fx.be.Cont()
	for _, c := range tunnels {
		if _, msg, err := c.Read(ctx); err != nil || string(msg) != "while stopped" {
			t.Fatalf("after SIGCONT: read %q, %v", msg, err)
		}
	}
	if got := <-answer; got != "200" {
		t.Fatalf("a request sent while stopped: %s, want 200", got)
	}
}

// runFault runs one case; see TestFaults.
func runFault(t *testing.T, prog *proctest.Program, tc faultCase) {
	fx := startFaultFixture(t, prog, faultIdle)
	act, signal := tc.fault, ""
	if tc.fault == "kill" || tc.fault == "stop" {
		act, signal = "then=wait", tc.fault
	}
	switch {
	case tc.moment == inBody && tc.via == "get":
		act = "send=partial&" + act
	case tc.moment == inBody:
		act = "send=chunk&" + act
	}
	// The client's deadline runs from the fault: every end it waits for
	// is due within faultIdle, or at once. Until the fault, the test's
	// minute bounds it.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	ctx, expire := context.WithCancel(ctx)
	defer expire()

	var end func() string // waits for the client's end and says what it was
	switch tc.moment {
	case atAnswer:
		fx.signal(signal)
		end = func() string { return fx.request(ctx, tc.via, "/?"+act) }
	case inTunnel:
		c := dialWS(ctx, t, fx.url(tc.via, "/"), nil)
		wsEcho(ctx, t, c, "before the fault")
		if signal == "" {
			if err := c.Write(ctx, websocket.MessageText, []byte(proctest.FaultPrefix+act)); err != nil {
				t.Fatal(err)
			}
		}
		fx.signal(signal)
		end = func() string { return tunnelEnd(ctx, c) }
	case inBody:
		body := fx.startBody(ctx, tc.via, "/?"+act)
		fx.signal(signal)
		end = func() string { return bodyEnd(ctx, body) }
	}
	begin := time.Now()
	deadline := time.AfterFunc(wait.Timeout, expire)
	defer deadline.Stop()
	var got string
	ended := make(chan struct{})
	go func() { // owns the client conn from here on
		got = end()
		close(ended)
	}()

	// A reload while the fault is under way, once the conn holds the
	// backend (or is over already, as a reset's is at once), changes the
	// backend's weight and nothing else: it must not change how the conn
	// ends.
	b := fx.f.r.in.gen.Load().pools["p"].Backends()[0]
	wait.For(t, "the conn at the backend", func() bool {
		select {
		case <-ended:
			return true
		default:
			return b.Active() > 0
		}
	})
	fx.f.reload(faultConfig(fx.be.Addr, 2, faultIdle), "ok")
	select {
	case <-ended:
	case <-time.After(2 * wait.Timeout):
		t.Fatal("the client's end never came, though its reads have a deadline")
	}
	t.Logf("the client saw %s %v after the fault began", got, time.Since(begin).Round(time.Millisecond))
	if got != tc.want {
		t.Errorf("the client saw %s, want %s", got, tc.want)
	}
	fx.checkEnded(tc)
	if signal == "stop" {
		fx.be.Cont()
		if code, _ := fetch(t, fx.url("get", "/")); code != http.StatusOK {
			t.Errorf("after SIGCONT: status %d, want 200", code)
		}
	}
}
