// Command wslb is a layer-4/layer-7 load balancer for WebSocket fleets.
//
// This file parses the command line; serve.go builds the listeners and
// proxies and runs them, reload.go applies a changed file in named steps,
// drain.go ends the process gracefully, observe.go feeds metrics, health
// and /status, demo.go adds the demo backends. No proxy logic lives here.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/wslb/wslb/access"
	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/discovery"
	"github.com/wslb/wslb/xconnect"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3";
// otherwise the module version from the build info is used.
var version = ""

func main() {
	// Go's HTTP/2 server offers WebSockets over h2 (RFC 8441) only when
	// GODEBUG said so at start-up: this runs wslb again with it, once.
	if err := xconnect.Ensure(); err != nil {
		fmt.Fprintln(os.Stderr, "wslb: WebSockets over HTTP/2 stay off:", err)
	}
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// options are the parsed command line.
type options struct {
	configPath string
	check      bool
	logFormat  string
	logLevel   string
	accessLog  string
	watch      bool
	command    string // "", "demo" or "version"
}

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "ctl" {
		return runCtl(ctx, args[1:], stdout, stderr)
	}
	o, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "wslb:", err)
		return 2
	}
	switch {
	case o.command == "version":
		fmt.Fprintf(stdout, "wslb %s (%s)\n", buildVersion(), runtime.Version())
		return 0
	case o.check:
		return check(ctx, o.configPath, stdout, stderr)
	}
	log, err := newLogger(stderr, o.logFormat, o.logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "wslb:", err)
		return 2
	}
	cfg, err := config.Load(o.configPath)
	if err != nil {
		printProblems(stderr, err)
		return 1
	}
	acc, err := access.Open(o.accessLog, o.logFormat, stdout)
	if err != nil {
		log.Error("cannot open the access log", "err", err)
		return 1
	}
	defer acc.Close()
	so := serveOptions{path: o.configPath, watch: o.watch, access: acc}
	if o.command == "demo" {
		return runDemo(ctx, cfg, log, so, stdout)
	}
	return serve(ctx, cfg, log, so, nil)
}

// parseArgs accepts flags before or after the subcommand: both
// `wslb -config x.yaml demo` and `wslb demo -config x.yaml` work.
func parseArgs(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("wslb", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.configPath, "config", "config.yaml", "configuration `file`")
	fs.BoolVar(&o.check, "check", false, "validate the configuration, print every problem with its line, exit 1 if any")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.BoolVar(&o.watch, "watch", false, "reload the configuration when its file changes (checked every second), as SIGHUP does")
	fs.StringVar(&o.accessLog, "access-log", "stdout", "access log: off, stdout or a `file` path (appended to; SIGUSR1 reopens it)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage:
  wslb [-config config.yaml]      run the load balancer
  wslb -check -config FILE        validate FILE, print problems with line numbers
  wslb demo [-config config.yaml] start three local ws echo backends and the load balancer
  wslb version
  wslb ctl [-admin ADDR|unix:PATH] [-token-file F] pools|drain|maint|ready POOL BACKEND|rebalance POOL

flags:
`)
		fs.PrintDefaults()
	}
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		o.command, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.command == "" && fs.NArg() > 0 {
		o.command = fs.Arg(0)
		if fs.NArg() > 1 {
			return o, fmt.Errorf("unexpected argument %q", fs.Arg(1))
		}
	} else if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch o.command {
	case "", "demo", "version":
	default:
		return o, fmt.Errorf("unknown command %q (want demo, version or ctl)", o.command)
	}
	return o, nil
}

// check is `wslb -check`: problems one a line, or a one-line summary. A
// valid file's names are looked up, and each that fails is a warning, one a
// line on stderr, which does not fail the check: at start such a name is
// not fatal either.
func check(ctx context.Context, path string, stdout, stderr io.Writer) int {
	cfg, err := config.Load(path)
	if err != nil {
		printProblems(stderr, err)
		return 1
	}
	for _, w := range discovery.Check(ctx, cfg) {
		fmt.Fprintln(stderr, w.String())
	}
	fmt.Fprintln(stdout, cfg.Summary())
	return 0
}

func printProblems(w io.Writer, err error) {
	var ps config.Problems
	if errors.As(err, &ps) {
		for _, p := range ps {
			fmt.Fprintln(w, p.String())
		}
		return
	}
	fmt.Fprintln(w, "wslb:", err)
	if errors.Is(err, fs.ErrNotExist) {
		// Most often wslb was started outside the folder of its config.
		fmt.Fprintln(w, "wslb: wslb reads ./config.yaml unless -config names another file, e.g. wslb -config /etc/wslb/config.yaml")
	}
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("-log-format %q: want text or json", format)
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}
