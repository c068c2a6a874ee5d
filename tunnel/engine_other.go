//go:build !linux

package tunnel

import (
	"context"
	"errors"
	"net"

	"github.com/wslb/wslb/fdbudget"
)

// Engine is Linux only (epoll and splice); elsewhere NewEngine fails and a
// nil *Engine makes Engine.Start use goroutines.
type Engine struct{}

// NewEngine reports that the event-loop engine needs Linux.
func NewEngine(n int) (*Engine, error) { return NewCountedEngine(n, nil) }

// NewCountedEngine reports that the event-loop engine needs Linux.
func NewCountedEngine(n int, fds *fdbudget.Budget) (*Engine, error) {
	return nil, errors.New("tunnel engine: needs linux (epoll, splice)")
}

// errHandshakeEngine is a Handshake given to an Engine that cannot run it.
var errHandshakeEngine = errors.New("tunnel engine: handshake needs the linux event loop")

// Close does nothing.
func (e *Engine) Close() {}

// Tunnels returns 0.
func (e *Engine) Tunnels() int { return 0 }

func (e *Engine) take(ctx context.Context, r *Relay, c, b net.Conn, done func(Stats)) (func(error), bool) {
	return nil, false
}

// Handshake cannot run without the event loop: it closes both conns and
// gives the handshake back with an error.
func (e *Engine) Handshake(ctx context.Context, client net.Conn, h *Handshake) {
	client.Close()
	go h.Back(HandBack{Client: -1, Backend: h.Backend, Err: errHandshakeEngine})
}
