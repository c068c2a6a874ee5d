// Package demo runs the WebSocket echo backends that `wslb demo` puts behind
// the load balancer, so a newcomer sees it work with nothing else installed.
package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/coder/websocket"
)

// Backend is one demo server: a WebSocket echo on every path, /healthz, and
// a line of text naming it for any other request. A client that connects
// with ?hello=1 first gets one text message naming the backend, so the demo
// page can show who answered.
type Backend struct {
	Name string
	Addr string
	Log  *slog.Logger

	srv *http.Server
	ln  net.Listener
}

// Start binds the backend's address and serves in a goroutine that Close stops.
func (b *Backend) Start() error {
	ln, err := net.Listen("tcp", b.Addr)
	if err != nil {
		return fmt.Errorf("demo backend %s: %w", b.Name, err)
	}
	b.ln = ln
	b.srv = &http.Server{Handler: b, ReadHeaderTimeout: 10 * time.Second}
	go b.srv.Serve(ln)
	return nil
}

// BoundAddr returns the bound address, valid after Start.
func (b *Backend) BoundAddr() string { return b.ln.Addr().String() }

// Close stops the backend and closes its conns, hijacked WebSockets included.
func (b *Backend) Close() error { return b.srv.Close() }

// ServeHTTP answers one request.
func (b *Backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Header.Get("Upgrade") != "":
		b.echo(w, r)
	case r.URL.Path == "/healthz":
		w.Write([]byte("ok\n"))
	default:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "%s: a WebSocket echo backend of wslb demo (path %s)\n", b.Name, r.URL.Path)
	}
}

func (b *Backend) echo(w http.ResponseWriter, r *http.Request) {
	// Any origin: the page may be served by another backend or listener.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	ctx := r.Context()
	if r.URL.Query().Get("hello") == "1" {
		if err := c.Write(ctx, websocket.MessageText, []byte("connected to "+b.Name)); err != nil {
			return
		}
	}
	for {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) == -1 && !errors.Is(err, context.Canceled) && b.Log != nil {
				b.Log.Debug("demo echo ended", "backend", b.Name, "err", err)
			}
			return
		}
		if err := c.Write(ctx, typ, msg); err != nil {
			return
		}
	}
}
