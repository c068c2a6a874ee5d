package l7

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/wslb/wslb/access"
	"github.com/wslb/wslb/handoff"
	"github.com/wslb/wslb/header"
	"github.com/wslb/wslb/route"
	"github.com/wslb/wslb/tunnel"
)

// WebSockets over HTTP/2 (RFC 8441). The client asks with an extended
// CONNECT (`:protocol websocket`) on a stream of its h2 conn; the backend
// gets an HTTP/1.1 Upgrade on a conn of its own, with a Sec-WebSocket-Key
// wslb makes and whose Sec-WebSocket-Accept it checks, as it checks a
// client's on HTTP/1.1. Only a valid switch answers the stream 200 and opens
// a tunnel between the stream (streamConn) and the backend conn, which then
// lives as an HTTP/1.1 tunnel on TLS does: the goroutine relay, with the
// same idle timeout, counts, registry and graceful close.

// h2Connect serves an extended CONNECT (RFC 8441) that came over HTTP/2. It
// returns when the stream is answered, or, for a tunnel, when it ended.
func (w *worker) h2Connect(h *h2Handler, rw http.ResponseWriter, r *http.Request) {
	s := h.stream(rw)
	s.e.Method, s.e.Path, s.e.Proto = r.Method, r.URL.Path, r.Proto
	sc := w.h2Switch(h, s, rw, r)
	s.endStream() // a tunnel holds no buffer of the stream's
	if sc != nil {
		sc.pull() // the stream lives as long as this handler
		return
	}
	w.logRequest(s, s.begin)
	if s.stream.broken {
		panic(http.ErrAbortHandler) // Go's server resets the stream, quietly
	}
}

// h2Switch checks an extended CONNECT, asks the backend to switch, and
// answers the stream: 200 and a tunnel, whose streamConn it returns, or an
// error or the backend's refusal, and nil.
func (w *worker) h2Switch(h *h2Handler, s *clientConn, rw http.ResponseWriter, r *http.Request) *streamConn {
	st := s.st
	if status, reason := checkConnect(r, st.l.HTTP.UpgradeProtocols); status != 0 {
		hdr := http.Header{}
		switch status {
		case http.StatusBadRequest:
			st.errs.BadRequest.Inc()
		case http.StatusUpgradeRequired:
			hdr.Set("Sec-WebSocket-Version", "13")
			fallthrough
		default:
			st.errs.BadHandshake.Inc()
		}
		s.respond(r, "", status, hdr, errorBody(status, reason), true)
		return nil
	}
	res := st.routes.Match(r.URL)
	s.e.Route = res.Prefix
	switch res.Kind {
	case route.BadPath:
		st.errs.BadRequest.Inc()
		s.respondPool(r, "", http.StatusBadRequest, "invalid path")
		return nil
	case route.NotFound, route.Static:
		s.respondPool(r, "", http.StatusNotFound, "no WebSocket route for this path")
		return nil
	case route.Redirect:
		s.redirect(r, http.StatusPermanentRedirect, res.Location)
		return nil
	}
	out, key := s.connectOutgoing(r, res)
	p := st.pools[res.Pool]
	bc, err := w.connect(r.Context(), s, p, out.client, false)
	if err != nil {
		reason, status, text := connectFailure(err)
		s.e.Reason = reason
		s.respondPool(r, res.Pool, status, text)
		return nil
	}
	if !st.l.HTTP.PreserveHost {
		out.req.Host = bc.b.String()
	}
	sc := w.h2Answer(h, s, rw, r, res.Pool, bc, out.req, key)
	if sc == nil {
		bc.b.Release()
	}
	return sc
}

// checkConnect checks an extended CONNECT before any backend sees it, and
// returns the status and reason it is refused with, or 0. A CONNECT without
// :protocol is refused as on HTTP/1.1 (400); a :protocol other than
// websocket, or websocket where upgrade_protocols leaves it out, gets 501:
// the request is well formed, and wslb does not carry that protocol.
func checkConnect(r *http.Request, allowed []string) (status int, reason string) {
	proto := r.Header.Get(":protocol")
	switch {
	case proto == "":
		return http.StatusBadRequest, "CONNECT is not supported"
	case !strings.EqualFold(proto, "websocket"):
		return http.StatusNotImplemented, "only the websocket protocol can be tunnelled over HTTP/2"
	}
	ok := false
	for _, a := range allowed {
		ok = ok || strings.EqualFold(a, "websocket")
	}
	if !ok {
		return http.StatusNotImplemented, "WebSocket is not enabled on this listener (http.upgrade_protocols)"
	}
	// RFC 8441 §5: the rest of the RFC 6455 handshake, less the key.
	switch v := r.Header["Sec-Websocket-Version"]; {
	case len(v) == 0:
		return http.StatusBadRequest, "invalid WebSocket handshake"
	case len(v) > 1 || strings.TrimSpace(v[0]) != "13":
		return http.StatusUpgradeRequired, "only WebSocket version 13 is supported"
	}
	return 0, ""
}

// upgradeOut is what the backend of an extended CONNECT is sent.
type upgradeOut struct {
	req    *http.Request
	client netip.Addr
}

// connectOutgoing builds the backend's upgrade request from r: a GET of the
// same path with the client's end-to-end headers (Sec-WebSocket-Protocol and
// -Extensions among them), forwarding headers, and a Sec-WebSocket-Key of
// wslb's own, which it returns.
func (s *clientConn) connectOutgoing(r *http.Request, res route.Result) (upgradeOut, string) {
	h := r.Header
	delete(h, ":protocol")
	delete(h, "Sec-Websocket-Key") // a client's own would be a lie about ours
	get := &http.Request{Method: http.MethodGet, URL: r.URL, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Host: r.Host}
	out, client := outgoing(s, get, res)
	key := newWebSocketKey()
	out.Header.Set("Upgrade", "websocket")
	out.Header.Set("Connection", "Upgrade")
	out.Header.Set("Sec-WebSocket-Version", "13")
	out.Header.Set("Sec-WebSocket-Key", key)
	return upgradeOut{req: out, client: client}, key
}

// newWebSocketKey returns a fresh Sec-WebSocket-Key: 16 random bytes in
// base64 (RFC 6455 §4.1).
func newWebSocketKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return base64.StdEncoding.EncodeToString(b[:])
}

// h2Answer sends the upgrade out to bc and answers the stream from what the
// backend says. On a valid switch it answers 200 and starts the tunnel,
// which then owns bc and its reservation, and returns the stream's conn;
// otherwise it returns nil, and the caller releases the reservation.
func (w *worker) h2Answer(h *h2Handler, s *clientConn, rw http.ResponseWriter, r *http.Request, poolName string, bc *backendConn, out *http.Request, key string) *streamConn {
	st := s.st
	resp, err := backendHandshake(bc, out, st.l.Timeouts.Handshake)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		bc.close()
		st.errs.Timeout.Inc()
		s.e.Reason = "idle"
		s.respondPool(r, poolName, http.StatusGatewayTimeout, "backend did not answer in time")
		return nil
	case err != nil:
		bc.close()
		s.e.Reason = "backend"
		s.respondPool(r, poolName, http.StatusBadGateway, "invalid or no answer from backend")
		return nil
	case resp.StatusCode != http.StatusSwitchingProtocols:
		w.relayRefusal(s, r, poolName, bc, resp)
		return nil
	}
	if err := header.CheckSwitch(resp.Header, "websocket", key); err != nil {
		bc.close()
		st.errs.BadUpgradeResponse.Inc()
		s.e.Reason = "bad_upgrade_response"
		w.px.Log.Warn("backend sent an invalid 101; no tunnel opened", "listener", st.l.Name,
			"pool", poolName, "backend", bc.b.String(), "err", err)
		s.respondPool(r, poolName, http.StatusBadGateway, "invalid upgrade response from backend")
		return nil
	}
	return w.h2Tunnel(h, s, rw, r, poolName, bc, resp)
}

// backendHandshake sends out, an upgrade without a body, on bc and reads the
// backend's final answer within timeout. Interim (1xx) answers are dropped,
// as many as HTTP/1.1 relays: an extended CONNECT is answered by its final
// status.
func backendHandshake(bc *backendConn, out *http.Request, timeout time.Duration) (*http.Response, error) {
	_ = bc.conn.SetDeadline(time.Now().Add(timeout))
	if err := sendHead(bc.conn, out); err != nil {
		return nil, err
	}
	return finalAnswer(bc, out, func(_ *http.Response, n int) error {
		if n > maxInterim {
			return errTooManyInterim
		}
		return nil
	})
}

// relayRefusal relays a backend's answer other than 101 (403, 426, a
// redirect) to the stream, body and all, as HTTP/1.1 relays it. A 2xx is
// the one exception: on h2 it would tell the client its WebSocket is open,
// so it becomes a 502.
func (w *worker) relayRefusal(s *clientConn, r *http.Request, poolName string, bc *backendConn, resp *http.Response) {
	if resp.StatusCode < 300 {
		bc.close()
		s.e.Reason = "bad_upgrade_response"
		s.st.errs.BadUpgradeResponse.Inc()
		s.respondPool(r, poolName, http.StatusBadGateway, "backend did not switch protocols")
		return
	}
	_, reusable, err := s.relayResponse(r, resp, poolName, bc, s.st.l.Timeouts.Idle)
	w.putBack(s, bc, err == nil && reusable)
}

// h2Tunnel answers the stream 200 with the backend's 101's end-to-end
// headers (its Sec-WebSocket-Protocol and -Extensions among them) and starts
// the tunnel, which owns bc and its reservation from then on.
func (w *worker) h2Tunnel(h *h2Handler, s *clientConn, rw http.ResponseWriter, r *http.Request, poolName string, bc *backendConn, resp *http.Response) *streamConn {
	st := s.st
	header.RemoveHopByHop(resp.Header)
	delete(resp.Header, "Sec-Websocket-Accept") // the client sent no key
	header.SetResponseHeaders(resp.Header, st.l.HTTP.ResponseHeaders)
	for k, v := range resp.Header {
		rw.Header()[k] = v
	}
	// The access line says 200, what the client was answered and what its
	// browser shows; kind tunnel and upgrade say it switched.
	s.count(r, poolName, http.StatusOK)
	s.firstByte()
	s.e.Kind, s.e.Upgrade = access.KindTunnel, true
	rw.WriteHeader(http.StatusOK)
	sc := newStreamConn(rw, r, h.cc.conn)
	if err := sc.rc.Flush(); err != nil {
		bc.close()
		s.e.Status, s.e.Reason = statusClientClosed, "client"
		return nil
	}
	p := st.pools[poolName]
	w.px.Metrics.Upgrades.WithLabelValues(st.l.Name, p.Name()).Inc()
	relay := tunnel.Relay{Idle: st.l.Timeouts.Idle, ToClient: buffered(bc.br), WebSocket: true}
	putReader(bc.br)
	bc.br = nil
	ctx, release := tunnelContext(h.drain)
	w.px.StartTunnel(handoff.Pair{
		Client: sc, Lease: handoff.Lease{Ctx: ctx, Release: release}, Backend: bc.conn, B: bc.b,
		Listener: st.l.Name, Pool: p.Name(), Relay: relay, Ended: w.tunnelEnded(s),
	})
	return sc
}

// tunnelContext returns the context of a stream's tunnel, and what lets go
// of it: it ends when a drain reaches the conn (drain, ended with
// frontend.ErrDrain), at once rather than when the drain's grace closes the
// conn, so that the tunnel's Close 1001 and the client's reply fit in the
// grace; but not when the conn simply ends (cause context.Canceled): the
// stream's reads tell the tunnel that.
func tunnelContext(drain context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(drain))
	stop := context.AfterFunc(drain, func() {
		if cause := context.Cause(drain); !errors.Is(cause, context.Canceled) {
			cancel(cause)
		}
	})
	return ctx, func() {
		stop()
		cancel(nil)
	}
}
