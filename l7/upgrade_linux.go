//go:build linux

package l7

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wslb/wslb/access"
	"github.com/wslb/wslb/handoff"
	"github.com/wslb/wslb/header"
	"github.com/wslb/wslb/tunnel"
	"github.com/wslb/wslb/upstream"
)

// maxAnswer is how much of a backend's answer the engine's loop reads while
// its head is not whole; a longer head goes back to a goroutine, whose
// reader takes any size, as it always did.
const maxAnswer = 16 << 10

// upgradeOnLoop serves u with its backend side on the tunnel engine's loop
// when it can: a plain-TCP client conn, an engine, and a backend that
// upstream.Dialer.StartDial dials (a literal address, no TLS, no PROXY
// header). It reserves the backend, starts the connect and readies the head
// here; the conn goes to the loop once ServeConn's last deferred call
// (toEngine) has run, so that nothing here touches cc meanwhile. It
// reports whether it served the request, and if so whether the conn may go
// on (here: only when nothing could be dialed, or the dial is Dial's).
func (w *worker) upgradeOnLoop(ctx context.Context, cc *clientConn, u *upgradeReq) (served, more bool) {
	if w.px.Engine == nil || !tunnel.Plain(cc.conn) {
		return false, false
	}
	st := cc.st
	d := &st.dial
	r := cc.upstreamRequest(u.p)
	r.ClientIP = u.client
	b, err := d.Reserve(r, nil)
	if err == nil {
		err = d.Spare(b)
	}
	if err != nil {
		return true, cc.respondConnectError(u.req, u.res.Pool, err)
	}
	cc.e.Backend = b.String()
	lu := &loopUpgrade{w: w, cc: cc, u: u, r: r, start: time.Now()}
	fd, ok, err := d.StartDial(b)
	switch {
	case !ok: // TLS, a PROXY header or a name: Dial's own path
		if cc.inline {
			return true, cc.later(func() bool { return lu.dial(ctx, b) })
		}
		return true, lu.dial(ctx, b)
	case err != nil:
		lu.observe(b)
		if cc.inline { // the other backend is dialled by Connect, which waits
			return true, cc.later(func() bool { return lu.failed(ctx, b, err) })
		}
		return true, lu.failed(ctx, b, err)
	}
	if !st.l.HTTP.PreserveHost {
		u.out.Host = b.String()
	}
	var head bytes.Buffer
	if err := sendHead(&head, u.out); err != nil { // what sending it would have failed with
		unix.Close(fd)
		b.Release()
		return true, cc.respondBackendError(ctx, u.req, u.res.Pool, err, nil)
	}
	lu.b = b
	h := tunnel.Handshake{
		Backend: fd, Head: head.Bytes(), AnswerWithin: st.l.Timeouts.Handshake, MaxAnswer: maxAnswer,
		Dialed: lu.dialed, Answer: lu.answer,
	}
	if d.Timeout > 0 {
		h.ConnectBy = lu.start.Add(d.Timeout)
	}
	relay := tunnel.Relay{Idle: st.l.Timeouts.Idle, ToBackend: buffered(cc.br), WebSocket: u.token == "websocket"}
	pair := handoff.Pair{Client: cc.conn, Hold: cc.hold, Lease: cc.handover.lease, B: b,
		Listener: st.l.Name, Pool: u.p.Name(), Relay: relay}
	if w.px.Access != nil {
		// Filled in when the backend switches: the line as it is then.
		cell := new(func(tunnel.Stats, time.Duration))
		lu.ended = cell
		pair.Ended = func(s tunnel.Stats, lived time.Duration) { (*cell)(s, lived) }
	}
	// From here the conn is the engine's: ServeConn (or resume) returns
	// without closing it, and its buffers wait for the outcome.
	cc.unwatch()
	cc.detached = true
	lu.early = relay.ToBackend
	cc.releaseBuffers(nil)
	cc.handover.start = func() { w.px.StartHandshake(pair, h, lu.back) }
	return true, false
}

// dialed is Handshake.Dialed, on the loop.
func (lu *loopUpgrade) dialed(fd int, errored bool) error {
	lu.connected = true
	lu.observe(lu.b)
	return upstream.DialDone(lu.b, fd, errored)
}

// answer is Handshake.Answer, on the loop: the same parse and the same
// checks as handshake and switchOn. A valid switch is counted, as tunnel
// counts it, and its 101 written for the client; anything else (1xx,
// another status, an invalid 101, an unreadable head) goes back to a
// goroutine, which reads it again and answers as it always did.
func (lu *loopUpgrade) answer(p []byte) tunnel.Verdict {
	cc, u := lu.cc, lu.u
	lu.rd.Reset(p)
	br := getReader(&lu.rd, minBuffer)
	defer putReader(br)
	resp, err := http.ReadResponse(br, u.out)
	if err != nil {
		return tunnel.Verdict{More: errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)}
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || header.CheckSwitch(resp.Header, u.token, u.key) != nil {
		return tunnel.Verdict{}
	}
	head := len(p) - br.Buffered() - lu.rd.Len()
	st, m := cc.st, lu.w.px.Metrics
	header.SetResponseHeaders(resp.Header, st.l.HTTP.ResponseHeaders)
	cc.count(u.req, u.res.Pool, resp.StatusCode)
	cc.firstByte()
	cc.e.Kind, cc.e.Upgrade = access.KindTunnel, true
	var out bytes.Buffer
	_ = resp.Write(&out)
	m.Upgrades.WithLabelValues(st.l.Name, u.p.Name()).Inc()
	if lu.ended != nil {
		*lu.ended = lu.w.tunnelEnded(cc)
	}
	return tunnel.Verdict{Switch: true, ToClient: out.Bytes(), Head: head}
}
