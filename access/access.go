// Package access writes the access log: one structured line per l7 request,
// per WebSocket (or other upgrade) tunnel and per l4 conn, written when it
// ends, through log/slog in the same format as the process log.
package access

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"time"
)

// The kinds of line, used as the slog message.
const (
	KindRequest = "request" // an l7 request answered over HTTP (no tunnel)
	KindTunnel  = "tunnel"  // an l7 upgrade that became a tunnel, logged when it closes
	KindConn    = "conn"    // an l4 conn, logged when it closes
)

// Entry is one access line. Zero fields are left out of the line, except
// the byte counts, status and duration, which are always there.
type Entry struct {
	Kind     string
	Listener string
	// Client is the TCP peer, or the source an accepted PROXY header gave.
	Client netip.AddrPort
	// RealIP is the client address X-Forwarded-For (from a trusted proxy)
	// named, when it differs from Client's address.
	RealIP  netip.Addr
	Pool    string
	Backend string // ip:port, "" when none was reached
	Route   string // the matched route's path prefix (l7)
	Method  string // l7
	// Proto is the request's protocol as the client spoke it (l7):
	// HTTP/1.0, HTTP/1.1 or HTTP/2.0.
	Proto string
	Path  string // l7: the path only; the query may carry tokens
	// Status is the status sent to the client (l7), 101 for a tunnel (200
	// for one over HTTP/2, which has no 101), 0
	// when none was sent (l4, or a conn cut before an answer), 499 when the
	// client went away before its answer was complete (as nginx logs it).
	Status  int
	Upgrade bool
	Rx, Tx  int64 // bytes from the client, and to it
	// Duration runs from the request head (l7) or the accept (l4) to the end.
	Duration time.Duration
	// Reason says how it ended: done (an l7 answer sent in full), client,
	// backend, idle, drain, removed or error; for an l7 request also
	// timeout (timeouts.send, timeouts.client_body, http.min_body_rate) or
	// bad_request (its body), or the error reason when no backend was
	// reached.
	Reason string
	// Close is the close code of the Close frames wslb sent when it ended a
	// WebSocket tunnel itself (1001, Going Away: a drain, a removed
	// backend, the idle timeout), so the client saw a clean close; 0, and
	// left out, when it sent none.
	Close int
}

// Logger writes access lines. A nil *Logger is off and writes nothing, so
// the proxies call it without checking.
type Logger struct {
	log  *slog.Logger
	file *reopenFile // nil unless writing to a file
}

// Open returns the logger for -access-log dest: "off" (nil), "stdout", or a
// file path, opened for appending and created if missing. format is "text"
// or "json", as -log-format.
func Open(dest, format string, stdout io.Writer) (*Logger, error) {
	var w io.Writer
	l := &Logger{}
	switch dest {
	case "off", "":
		return nil, nil
	case "stdout", "-":
		w = stdout
	default:
		f, err := openFile(dest)
		if err != nil {
			return nil, err
		}
		l.file = f
		w = f
	}
	switch format {
	case "text":
		l.log = slog.New(slog.NewTextHandler(w, nil))
	case "json":
		l.log = slog.New(slog.NewJSONHandler(w, nil))
	default:
		if l.file != nil {
			l.file.Close()
		}
		return nil, fmt.Errorf("access log format %q: want text or json", format)
	}
	return l, nil
}

// New returns a Logger that writes to log, for tests and embedding.
func New(log *slog.Logger) *Logger { return &Logger{log: log} }

// Log writes e.
func (l *Logger) Log(e *Entry) {
	if l == nil {
		return
	}
	attrs := make([]slog.Attr, 0, 16)
	attrs = append(attrs, slog.String("listener", e.Listener), slog.String("client", e.Client.String()))
	if e.RealIP.IsValid() {
		attrs = append(attrs, slog.String("real_ip", e.RealIP.String()))
	}
	attrs = appendNonEmpty(attrs, "pool", e.Pool)
	attrs = appendNonEmpty(attrs, "backend", e.Backend)
	attrs = appendNonEmpty(attrs, "route", e.Route)
	attrs = appendNonEmpty(attrs, "method", e.Method)
	attrs = appendNonEmpty(attrs, "proto", e.Proto)
	attrs = appendNonEmpty(attrs, "path", e.Path)
	attrs = append(attrs,
		slog.Int("status", e.Status),
		slog.Bool("upgrade", e.Upgrade),
		slog.Int64("rx", e.Rx),
		slog.Int64("tx", e.Tx),
		// Seconds, as a number, in both formats: slog's own Duration is a
		// string in text and nanoseconds in JSON.
		slog.Float64("duration", e.Duration.Seconds()),
		slog.String("reason", e.Reason),
	)
	if e.Close != 0 {
		attrs = append(attrs, slog.Int("close", e.Close))
	}
	l.log.LogAttrs(context.Background(), slog.LevelInfo, e.Kind, attrs...)
}

func appendNonEmpty(attrs []slog.Attr, key, v string) []slog.Attr {
	if v == "" {
		return attrs
	}
	return append(attrs, slog.String(key, v))
}

// Reopen reopens the log file under its name, so that logrotate can move it
// away and signal (SIGUSR1, as nginx does). A Logger not writing to a file
// has nothing to do.
func (l *Logger) Reopen() error {
	if l == nil || l.file == nil {
		return nil
	}
	return l.file.reopen()
}

// Close closes the log file, if any.
func (l *Logger) Close() error {
	if l == nil || l.file == nil {
		return nil
	}
	return l.file.Close()
}

// reopenFile is an append-only file that can be swapped for a new one under
// the same name while lines are being written.
type reopenFile struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

func openFile(path string) (*reopenFile, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("access log: %w", err)
	}
	return &reopenFile{path: path, f: f}, nil
}

func (r *reopenFile) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.f.Write(p)
}

func (r *reopenFile) reopen() error {
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		// Keep writing to the old file rather than lose lines.
		return fmt.Errorf("access log: reopen: %w", err)
	}
	r.mu.Lock()
	old := r.f
	r.f = f
	r.mu.Unlock()
	return old.Close()
}

func (r *reopenFile) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.f.Close()
}
