package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/wslb/wslb/internal/wsraw"
	"golang.org/x/net/http2"
)

// Idle WebSockets over TLS, to compare what a proxy holds per WebSocket
// carried over HTTP/2 (RFC 8441, many on one conn) with one over HTTP/1.1
// (a conn each). The proxy's certificate is not checked: it is the
// bench's own, on loopback.

// insecureTLS trusts any certificate: the bench's proxy on loopback.
func insecureTLS(protos ...string) *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, NextProtos: protos}
}

// wssDial opens a WebSocket over HTTP/1.1 and TLS, a conn of its own.
func wssDial(ctx context.Context, addr, path string) (idleConn, error) {
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: insecureTLS("http/1.1"), DisableKeepAlives: true},
		Timeout: 10 * time.Second}
	c, err := wsDialURL(ctx, hc, "wss://"+addr+path)
	if err != nil {
		return nil, err
	}
	return wsIdle{c}, nil
}

// h2Dialer opens WebSockets over HTTP/2 as streams of shared conns: its
// Transport opens a new conn when one has as many streams as the server
// allows (SETTINGS_MAX_CONCURRENT_STREAMS).
type h2Dialer struct{ tr *http2.Transport }

func newH2Dialer() *h2Dialer {
	return &h2Dialer{tr: &http2.Transport{TLSClientConfig: insecureTLS("h2")}}
}

// dial sends an extended CONNECT (:protocol websocket) for path and waits
// for its 200.
func (d *h2Dialer) dial(ctx context.Context, addr, path string) (idleConn, error) {
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodConnect, "https://"+addr+path, pr)
	if err != nil {
		return nil, err
	}
	req.Header.Set(":protocol", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	type result struct {
		resp *http.Response
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		resp, err := d.tr.RoundTrip(req)
		ch <- result{resp, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-ctx.Done():
		pw.CloseWithError(ctx.Err())
		return nil, ctx.Err()
	}
	if r.err != nil {
		pw.Close()
		return nil, r.err
	}
	if r.resp.StatusCode != http.StatusOK {
		pw.Close()
		r.resp.Body.Close()
		return nil, fmt.Errorf("extended CONNECT: %s", r.resp.Status)
	}
	return &h2Idle{w: pw, body: r.resp.Body}, nil
}

// h2Idle is a WebSocket on an HTTP/2 stream: frames written to w (the
// request body) and read from body.
type h2Idle struct {
	w    *io.PipeWriter
	body io.ReadCloser
}

func (h *h2Idle) echo(ctx context.Context, p []byte) error {
	done := make(chan error, 1)
	go func() {
		f := wsraw.Frame{Fin: true, Op: wsraw.OpBinary, Masked: true, Key: [4]byte{7, 1, 8, 2}, Payload: p}
		if _, err := h.w.Write(wsraw.Append(nil, f)); err != nil {
			done <- err
			return
		}
		back, err := wsraw.Read(h.body, 1<<16)
		switch {
		case err != nil:
			done <- err
		case !bytes.Equal(back.Payload, p):
			done <- fmt.Errorf("echo mismatch")
		default:
			done <- nil
		}
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		h.close()
		return ctx.Err()
	}
}

func (h *h2Idle) close() {
	h.w.Close()
	h.body.Close()
}
