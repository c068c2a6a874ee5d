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

// Close does nothing.
func (e *Engine) Close() {}

// Tunnels returns 0.
func (e *Engine) Tunnels() int { return 0 }

func (e *Engine) take(ctx context.Context, r *Relay, c, b net.Conn, done func(Stats)) (func(error), bool) {
	return nil, false
}
