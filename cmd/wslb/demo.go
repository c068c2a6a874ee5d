package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/demo"
)

// runDemo starts one demo echo backend on every backend address of cfg's
// pools, so the shipped config.yaml and the demo cannot drift apart, then
// serves cfg and prints what to open.
func runDemo(ctx context.Context, cfg *config.Config, log *slog.Logger, so serveOptions, stdout io.Writer) int {
	seen := map[string]bool{}
	var backends []*demo.Backend
	defer func() {
		for _, b := range backends {
			b.Close()
		}
	}()
	for _, p := range cfg.Pools {
		for _, bc := range p.Backends {
			addr := bc.Addr.String()
			if seen[addr] || !bc.Addr.IsValid() { // a name: its backends are not the demo's to start
				continue
			}
			seen[addr] = true
			b := &demo.Backend{Name: fmt.Sprintf("demo-%d", len(backends)+1), Addr: addr, Log: log}
			if err := b.Start(); err != nil {
				log.Error("cannot start demo backend", "err", err)
				return 1
			}
			backends = append(backends, b)
		}
	}
	return serve(ctx, cfg, log, so, func(in *instance) {
		fmt.Fprintf(stdout, "wslb demo: %d echo backends (%s) behind:\n", len(backends), addrs(backends))
		var page string
		for i, l := range in.gen.Load().listeners {
			a := l.fl.BoundAddr().String()
			switch cfg.Listeners[i].Mode {
			case config.ModeL7:
				fmt.Fprintf(stdout, "  %-8s l7  http://%s/  (page, routes as in the config)\n", l.cfg.Name, a)
				if page == "" {
					page = a
				}
			default:
				fmt.Fprintf(stdout, "  %-8s l4  ws://%s/  (raw TCP passthrough to the echo backends)\n", l.cfg.Name, a)
			}
		}
		if in.adminLn != nil {
			fmt.Fprintf(stdout, "  status       http://%s/status\n", in.adminLn.Addr())
			fmt.Fprintf(stdout, "  metrics      http://%s/metrics\n", in.adminLn.Addr())
		}
		if page != "" {
			fmt.Fprintf(stdout, "try: open http://%s/ in a browser, or: curl -si http://%s/websocket/\n", page, page)
		}
		fmt.Fprintln(stdout, "stop with Ctrl-C (drains open conns)")
	})
}

func addrs(bs []*demo.Backend) string {
	s := ""
	for i, b := range bs {
		if i > 0 {
			s += ", "
		}
		s += b.BoundAddr()
	}
	return s
}
