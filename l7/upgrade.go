package l7

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/netip"
	"time"

	"github.com/wslb/wslb/access"
	"github.com/wslb/wslb/handoff"
	"github.com/wslb/wslb/header"
	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/route"
	"github.com/wslb/wslb/tunnel"
)

// upgrade serves a request asking to switch to token (an allowed protocol).
// A tunnel opens only on a real switch: a well-formed request, and a 101 that
// answers exactly what was asked (for WebSocket, the right
// Sec-WebSocket-Accept). A proxy that tunnels on any 101 lets a client
// smuggle raw requests past it. It reports whether the conn may go on.
func (w *worker) upgrade(ctx context.Context, cc *clientConn, req *http.Request, res route.Result, token string) bool {
	st := cc.st
	key, bad := checkUpgrade(req, token)
	if bad != nil {
		st.errs.BadHandshake.Inc()
		return cc.respond(req, "", bad.status, bad.hdr, errorBody(bad.status, bad.reason), true)
	}
	u := &upgradeReq{req: req, res: res, p: st.pools[res.Pool], token: token, key: key}
	u.out, u.client = outgoing(cc, req, res)
	// Upgrade and Connection are hop-by-hop and were removed with the rest;
	// adding them back is the whole point of nginx's `map $http_upgrade`.
	u.out.Header.Set("Upgrade", token) // only the protocol that may be tunnelled
	u.out.Header.Set("Connection", "Upgrade")
	if served, more := w.upgradeOnLoop(ctx, cc, u); served {
		return more
	}
	if cc.inline {
		return cc.later(func() bool { return w.upgradeDial(ctx, cc, u) })
	}
	return w.upgradeDial(ctx, cc, u)
}

// upgradeDial serves u on a backend conn dialled here, on the conn's
// goroutine.
func (w *worker) upgradeDial(ctx context.Context, cc *clientConn, u *upgradeReq) bool {
	req, res := u.req, u.res
	// A fresh conn: a cached one that died unnoticed would cost this
	// handshake a 502, and unlike a plain GET it is not replayed.
	bc, err := w.connect(ctx, cc, u.p, u.client, false)
	if err != nil {
		return cc.respondConnectError(req, res.Pool, err)
	}
	return w.switchOn(ctx, cc, u, bc)
}

// upgradeReq is an upgrade request on its way to a backend.
type upgradeReq struct {
	req    *http.Request
	res    route.Result
	p      *pool.Pool
	out    *http.Request // what the backend is sent
	client netip.Addr    // the address to hash
	token  string
	key    string // Sec-WebSocket-Key
	// sent: out went to the backend already, on the engine's loop, which
	// gave the handshake back (upgrade_linux.go): answerBy is then the
	// answer's deadline, and failed why the loop gave up, if it did.
	sent     bool
	answerBy time.Time
	failed   error
}

// switchOn sends u's head on bc and serves the backend's answer: a valid
// switch becomes a tunnel, anything else is relayed or answered. It
// reports whether the conn may go on.
func (w *worker) switchOn(ctx context.Context, cc *clientConn, u *upgradeReq, bc *backendConn) bool {
	st := cc.st
	req, res, p := u.req, u.res, u.p
	// Released here on every path that opens no tunnel; a tunnel's end
	// releases it otherwise (handoff).
	tunneled := false
	defer func() {
		if !tunneled {
			bc.b.Release()
		}
	}()
	if !st.l.HTTP.PreserveHost {
		u.out.Host = bc.b.String()
	}
	resp, err := cc.handshake(req, bc, u, st.l.Timeouts.Handshake)
	if err != nil {
		bc.conn.Close()
		return cc.respondBackendError(ctx, req, res.Pool, err, nil)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		// 403, 426, a redirect: relayed as the backend sent it.
		keep, reusable, err := cc.relayResponse(req, resp, res.Pool, bc, st.l.Timeouts.Idle)
		w.putBack(cc, bc, err == nil && reusable)
		return keep && err == nil
	}
	if err := header.CheckSwitch(resp.Header, u.token, u.key); err != nil {
		bc.conn.Close()
		st.errs.BadUpgradeResponse.Inc()
		cc.e.Reason = "bad_upgrade_response"
		w.px.Log.Warn("backend sent an invalid 101; no tunnel opened", "listener", st.l.Name,
			"pool", p.Name(), "backend", bc.b.String(), "err", err)
		return cc.respondPool(req, res.Pool, http.StatusBadGateway, "invalid upgrade response from backend")
	}
	tunneled = w.tunnel(ctx, cc, req, resp, res.Pool, p, bc, u.token)
	return false
}

// badUpgrade is why an upgrade request gets neither a backend nor a tunnel:
// the status, reason and header it is answered with.
type badUpgrade struct {
	status int
	reason string
	hdr    http.Header
}

// checkUpgrade checks a request to switch to token before any backend sees
// it, and returns its Sec-WebSocket-Key when token is websocket.
func checkUpgrade(req *http.Request, token string) (key string, bad *badUpgrade) {
	if req.Method != http.MethodGet || !req.ProtoAtLeast(1, 1) {
		return "", &badUpgrade{status: http.StatusBadRequest, reason: "an upgrade must be a GET over HTTP/1.1"}
	}
	if req.ContentLength != 0 {
		// Bytes after the head belong to the new protocol; a body would be
		// read as that protocol's first bytes by one side and not the other.
		return "", &badUpgrade{status: http.StatusBadRequest, reason: "an upgrade request cannot have a body"}
	}
	if token != "websocket" {
		return "", nil
	}
	key, err := header.CheckWebSocketRequest(req.Header)
	switch {
	case errors.Is(err, header.ErrBadVersion):
		return "", &badUpgrade{status: http.StatusUpgradeRequired, reason: "only WebSocket version 13 is supported",
			hdr: http.Header{"Sec-Websocket-Version": {"13"}}}
	case err != nil:
		return "", &badUpgrade{status: http.StatusBadRequest, reason: "invalid WebSocket handshake"}
	}
	return key, nil
}

// handshake sends u.out, the upgrade request req became, on bc and reads
// the backend's final answer, relaying the interim ones (103 Early Hints,
// 100 Continue) to the client as they come, as many as relayInterim allows.
// A handshake must be quick: the backend gets timeouts.handshake for all of
// it, not the idle timeout plain requests get, and 1xx answers do not renew
// it. A head the engine's loop sent already (u.sent) is not sent again.
func (cc *clientConn) handshake(req *http.Request, bc *backendConn, u *upgradeReq, timeout time.Duration) (*http.Response, error) {
	if u.sent {
		if u.failed != nil {
			return nil, u.failed
		}
		_ = bc.conn.SetDeadline(u.answerBy)
	} else {
		_ = bc.conn.SetDeadline(time.Now().Add(timeout))
		if err := sendHead(bc.conn, u.out); err != nil { // timeout covers the write
			return nil, err
		}
	}
	return finalAnswer(bc, u.out, func(resp *http.Response, n int) error { return cc.relayInterim(req, resp, n) })
}

// finalAnswer reads the backend's answers to the upgrade out on bc, within
// the deadline set on it, until its final one, which it returns with the
// deadline lifted. Each interim answer goes to relay (the n-th, from 1),
// which may end the exchange.
func finalAnswer(bc *backendConn, out *http.Request, relay func(resp *http.Response, n int) error) (*http.Response, error) {
	for n := 1; ; n++ {
		resp, err := http.ReadResponse(bc.br, out)
		if err != nil {
			return nil, err
		}
		if !interim(resp) {
			_ = bc.conn.SetDeadline(time.Time{})
			return resp, nil
		}
		if err := relay(resp, n); err != nil {
			return nil, err
		}
	}
}

// tunnel relays the 101, then hands both conns, with what each side sent
// early, to the tunnel (handoff.Deps.StartTunnel) and returns. The tunnel owns both
// conns and cc's hold from then on, and its end releases bc.b's reservation
// and the hold, and writes the access line. It reports whether the tunnel
// took the reservation; if not, the caller still holds it.
func (w *worker) tunnel(ctx context.Context, cc *clientConn, req *http.Request, resp *http.Response, poolName string, p *pool.Pool, bc *backendConn, token string) bool {
	st, m := cc.st, w.px.Metrics
	ln, pn := st.l.Name, p.Name()
	header.SetResponseHeaders(resp.Header, st.l.HTTP.ResponseHeaders)
	cc.count(req, poolName, resp.StatusCode)
	cc.firstByte()
	cc.e.Kind, cc.e.Upgrade = access.KindTunnel, true
	err := resp.Write(cc.bw)
	if err == nil {
		err = cc.bw.Flush()
	}
	if err != nil {
		bc.conn.Close()
		cc.clientWriteFailed(err)
		cc.e.Reason = endReason(ctx, cc.e.Reason)
		return false
	}
	m.Upgrades.WithLabelValues(ln, pn).Inc()
	// timeouts.send is for plain requests; a tunnel's limit is its idle
	// timeout, and the goroutine relay of a TLS tunnel writes with no
	// deadline of its own.
	_ = cc.conn.SetWriteDeadline(time.Time{})

	r := tunnel.Relay{
		Idle: st.l.Timeouts.Idle,
		// A client's first frame may share a packet with its head, and a
		// backend's may follow its 101 at once: both were read ahead.
		ToBackend: buffered(cc.br),
		ToClient:  buffered(bc.br),
		// WebSocket has no half-close (DESIGN: a backend that closes
		// mid-tunnel closes the client side too), and a tunnel wslb ends
		// itself closes at a frame boundary with Close 1001; other
		// protocols may half-close, and are cut.
		WebSocket: token == "websocket",
	}
	// The tunnel may live for days: drop the conn's buffers (36 KiB) once
	// what they held has been copied, and keep only the raw conns.
	conn := cc.conn
	cc.releaseBuffers(bc)
	cc.unwatch() // if it already fired, ctx is done and the tunnel ends at once
	cc.detached = true
	w.px.StartTunnel(handoff.Pair{
		Client: conn, Hold: cc.hold, Lease: cc.handover.lease, Backend: bc.conn, B: bc.b, Listener: ln, Pool: pn,
		Relay: r, Ended: w.tunnelEnded(cc),
	})
	return true
}

// tunnelEnded returns what writes the access line of cc's tunnel when it
// ends, or nil when there is no log to write it to: the line is then not
// kept for the tunnel's life.
func (w *worker) tunnelEnded(cc *clientConn) func(tunnel.Stats, time.Duration) {
	if w.px.Access == nil {
		return nil
	}
	e, begin := new(cc.e), cc.begin
	return func(s tunnel.Stats, _ time.Duration) {
		e.Rx, e.Tx, e.Reason, e.Duration, e.Close = s.Rx, s.Tx, s.Reason(), time.Since(begin), s.Closed
		w.px.Access.Log(e)
	}
}

// buffered returns a copy of what br has read ahead, or nil: a copy, so that
// br's buffer is not kept alive by the tunnel.
func buffered(br *bufio.Reader) []byte {
	if br.Buffered() == 0 {
		return nil
	}
	b, _ := br.Peek(br.Buffered())
	return bytes.Clone(b)
}
