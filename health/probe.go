package health

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/coder/websocket"

	"github.com/wslb/wslb/config"
)

// maxBody bounds how much of an http check's response body is read: enough
// for any status page, never a download.
const maxBody = 64 << 10

// probe runs one check of kind cfg.Check against addr ("ip:port"), bounded by
// ctx, and returns why it failed, or nil. tc, when set, is the backend's TLS
// client (its pool speaks TLS): the tcp check is then a TLS handshake, and
// http and websocket checks go over https and wss, so a certificate that
// does not verify fails every kind of check, as it fails every dial.
func probe(ctx context.Context, addr string, tc *tls.Config, cfg config.Health) error {
	switch cfg.Check {
	case config.CheckTCP:
		conn, err := dialCheck(ctx, addr, tc)
		if err != nil {
			return err
		}
		return conn.Close()
	case config.CheckHTTP:
		return probeHTTP(ctx, addr, tc, cfg.Path, cfg.ExpectStatus)
	case config.CheckWebSocket:
		return probeWebSocket(ctx, addr, tc, cfg.Path)
	}
	return fmt.Errorf("unknown check %q", cfg.Check)
}

// dial connects to addr within ctx; the conn's deadline is ctx's, so every
// later read and write of the check is bounded too.
func dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	return conn, nil
}

// dialCheck is dial, then the TLS handshake when tc is set.
func dialCheck(ctx context.Context, addr string, tc *tls.Config) (net.Conn, error) {
	conn, err := dial(ctx, addr)
	if err != nil || tc == nil {
		return conn, err
	}
	return handshake(ctx, conn, tc)
}

// handshake runs the client side of TLS on conn, whose deadline bounds it;
// on failure it closes conn.
func handshake(ctx context.Context, conn net.Conn, tc *tls.Config) (net.Conn, error) {
	t := tls.Client(conn, tc)
	if err := t.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return t, nil
}

// probeHTTP sends "GET path" with Host set to addr over a fresh conn and
// passes when the status is expect. It speaks HTTP/1.1 on the conn itself, not
// through an http.Transport: one conn per check, Connection: close, nothing
// pooled and no goroutine left behind.
func probeHTTP(ctx context.Context, addr string, tc *tls.Config, path string, expect int) error {
	scheme := "http://"
	if tc != nil {
		scheme = "https://"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+addr+path, nil)
	if err != nil {
		return err
	}
	req.Close = true
	req.Header.Set("User-Agent", "wslb-health-check")
	conn, err := dialCheck(ctx, addr, tc)
	if err != nil {
		return err
	}
	defer conn.Close()
	// The deadline covers the timeout; this covers a stop before it.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if err := req.Write(conn); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return err
	}
	// Reading the body lets the server finish its response before the close;
	// its content and any error reading it do not matter.
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	if resp.StatusCode != expect {
		return fmt.Errorf("GET %s: status %d, want %d", path, resp.StatusCode, expect)
	}
	return nil
}

// probeWebSocket performs a real WebSocket handshake on path and passes on a
// 101 whose Sec-WebSocket-Accept matches (coder/websocket's Dial verifies it,
// with the Upgrade and Connection headers), then closes with a close frame and
// waits for the server's. A server that answers /healthz while its WebSocket
// handler is broken fails here.
func probeWebSocket(ctx context.Context, addr string, tc *tls.Config, path string) error {
	// net/http dials with a context detached from the request's, so the
	// check's own ctx bounds the conn: its deadline, and an early stop.
	// Without this, coder/websocket's reads after a bad 101 and its close
	// handshake would be bounded only by its own 3s and 5s timers. Over wss
	// the TLS handshake is done here too, with the backend's TLS client
	// rather than the Transport's.
	dialer := func(dctx context.Context, _, a string) (net.Conn, error) {
		conn, err := dial(dctx, a)
		if err != nil {
			return nil, err
		}
		if dl, ok := ctx.Deadline(); ok {
			conn.SetDeadline(dl)
		}
		context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
		if tc != nil {
			return handshake(ctx, conn, tc)
		}
		return conn, nil
	}
	tr := &http.Transport{
		DialContext:       dialer,
		DialTLSContext:    dialer,
		DisableKeepAlives: true,
		Proxy:             nil, // the check is about this backend, never an HTTP_PROXY
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		// A redirect is not a 101; following it could leave the backend.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	scheme := "ws://"
	if tc != nil {
		scheme = "wss://"
	}
	c, _, err := websocket.Dial(ctx, scheme+addr+path, &websocket.DialOptions{
		HTTPClient:      client,
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return err
	}
	// The handshake is what the check tests; a server slow to answer the close
	// frame is still serving WebSocket, so the close's error is not a failure.
	c.Close(websocket.StatusNormalClosure, "health check")
	return nil
}
