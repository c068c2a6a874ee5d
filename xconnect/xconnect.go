// Package xconnect turns on extended CONNECT (RFC 8441, WebSockets over
// HTTP/2) in Go's HTTP/2 server. That server reads GODEBUG once, while the
// program initialises, and offers SETTINGS_ENABLE_CONNECT_PROTOCOL only when
// it held http2xconnect=1 then: by the time main runs it is too late to set
// it, so a process without it runs itself again with it, once.
package xconnect

import (
	"fmt"
	"os"
	"strings"
	"syscall"
)

// setting is what GODEBUG must hold.
const setting = "http2xconnect=1"

// Enabled reports whether this process started with extended CONNECT on.
func Enabled() bool { return Has(os.Getenv("GODEBUG")) }

// Has reports whether the GODEBUG value godebug turns extended CONNECT on:
// the last http2xconnect setting wins, as in Go's own parsing.
func Has(godebug string) bool {
	on := false
	for kv := range strings.SplitSeq(godebug, ",") {
		if k, v, ok := strings.Cut(strings.TrimSpace(kv), "="); ok && k == "http2xconnect" {
			on = v == "1"
		}
	}
	return on
}

// Ensure makes sure the process runs with extended CONNECT on: when it is
// off, it replaces the process with the same program, arguments and
// environment plus http2xconnect=1, keeping the PID (so a supervisor, a
// pid file and inherited listening sockets see no difference), and does not
// return. It returns an error only when that exec fails; the caller may then
// go on without RFC 8441. A GODEBUG that turns it off explicitly
// (http2xconnect=0) is the user's choice and is kept.
func Ensure() error {
	godebug, set := os.LookupEnv("GODEBUG")
	if Has(godebug) || strings.Contains(godebug, "http2xconnect=0") {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable to enable extended CONNECT: %w", err)
	}
	if set && godebug != "" {
		godebug += ","
	}
	env := append(withoutGODEBUG(os.Environ()), "GODEBUG="+godebug+setting)
	if err := syscall.Exec(exe, os.Args, env); err != nil {
		return fmt.Errorf("run %s again with GODEBUG=%s: %w", exe, setting, err)
	}
	return nil // unreachable: Exec does not return on success
}

func withoutGODEBUG(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "GODEBUG=") {
			out = append(out, kv)
		}
	}
	return out
}
