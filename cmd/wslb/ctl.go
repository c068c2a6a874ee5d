package main

// wslb ctl: the admin listener's write API from the command line.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/status"
)

// ctlTimeout bounds one ctl request: the admin listener answers at once.
const ctlTimeout = 10 * time.Second

const ctlUsage = `usage: wslb ctl [-admin ADDR|unix:PATH] [-token-file FILE] COMMAND
commands:
  pools                   every pool's backends: health, admin state, weight, active conns
  drain POOL BACKEND      no new conns to BACKEND (ip:port); its conns run on
  maint POOL BACKEND      no new conns; its tunnels are closed gracefully, spread over close_spread
  ready POOL BACKEND      BACKEND takes conns again
  rebalance POOL          move tunnels off the backends holding more than their share, now
flags:
`

// ctl is one ctl invocation's client.
type ctl struct {
	client *http.Client
	base   string // http://host:port, or http://localhost over a unix socket
	token  string
	stdout io.Writer
}

// runCtl is `wslb ctl`: it returns 0, 1 when the request failed (the
// server's error printed) or 2 on a usage error.
func runCtl(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wslb ctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	admin := fs.String("admin", "127.0.0.1:9090", "the admin listener: `ADDR` (host:port) or unix:PATH, as admin.listen")
	tokenFile := fs.String("token-file", "", "a `file` holding the bearer token (admin.token_file)")
	fs.Usage = func() {
		fmt.Fprint(stderr, ctlUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "wslb ctl: "+format+"\n", a...)
		fs.Usage()
		return 2
	}
	c := &ctl{stdout: stdout}
	if *tokenFile != "" {
		data, err := os.ReadFile(*tokenFile)
		if err != nil {
			return usage("-token-file: %v", err)
		}
		if c.token = strings.TrimSpace(string(data)); c.token == "" {
			return usage("-token-file: %s is empty", *tokenFile)
		}
	}
	c.client, c.base = ctlClient(*admin)
	cmd, rest := fs.Arg(0), fs.Args()[min(1, fs.NArg()):]
	want := map[string]int{"pools": 0, "drain": 2, "maint": 2, "ready": 2, "rebalance": 1}
	n, ok := want[cmd]
	switch {
	case cmd == "":
		return usage("no command")
	case !ok:
		return usage("unknown command %q", cmd)
	case len(rest) != n:
		return usage("%s takes %d argument(s), got %d", cmd, n, len(rest))
	}
	var err error
	switch cmd {
	case "pools":
		err = c.pools(ctx)
	case "rebalance":
		err = c.rebalance(ctx, rest[0])
	default:
		err = c.setState(ctx, rest[0], rest[1], cmd)
	}
	if err != nil {
		fmt.Fprintln(stderr, "wslb ctl:", err)
		return 1
	}
	return 0
}

// ctlClient returns a client for admin (host:port or unix:PATH) and the
// base URL to give it.
func ctlClient(admin string) (*http.Client, string) {
	tr := &http.Transport{DisableKeepAlives: true}
	base := "http://" + admin
	if path, ok := config.UnixPath(admin); ok {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
		base = "http://localhost"
	}
	return &http.Client{Transport: tr, Timeout: ctlTimeout}, base
}

// do sends one request and decodes a 2xx answer's JSON into out; any other
// answer is an error carrying the server's message.
func (c *ctl) do(ctx context.Context, method, path string, body any, out any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = strings.NewReader(string(b))
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s (HTTP %d)", e.Error, resp.StatusCode)
		}
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(raw)))
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s %s: bad answer: %w", method, path, err)
	}
	return nil
}

// pools prints one line per backend.
func (c *ctl) pools(ctx context.Context) error {
	var ans struct {
		Pools []status.Pool `json:"pools"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/pools", nil, &ans); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POOL\tBACKEND\tHEALTH\tADMIN\tWEIGHT\tACTIVE")
	for _, p := range ans.Pools {
		for _, b := range p.Backends {
			addr := b.Address
			if b.Name != "" {
				addr += " (" + b.Name + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", p.Name, addr, healthWord(b), b.AdminState, weight(b), b.Active)
		}
	}
	return tw.Flush()
}

// healthWord is the check's verdict, with what else keeps a backend out.
func healthWord(b status.Backend) string {
	switch {
	case b.Held:
		return b.State + " (held)"
	case b.Ejected:
		return b.State + " (ejected)"
	}
	return b.State
}

// weight is the configured weight, and the effective one when it differs.
func weight(b status.Backend) string {
	w := strconv.Itoa(b.Weight)
	if d := b.EffectiveWeight - float64(b.Weight); d > 0.005 || d < -0.005 {
		w += " (" + strconv.FormatFloat(b.EffectiveWeight, 'f', 2, 64) + ")"
	}
	return w
}

func (c *ctl) setState(ctx context.Context, poolName, backend, state string) error {
	var b status.Backend
	path := "/api/v1/pools/" + pathEscape(poolName) + "/backends/" + pathEscape(backend) + "/state"
	if err := c.do(ctx, http.MethodPut, path, map[string]string{"state": state}, &b); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "%s %s: %s (health %s, %d active)\n", poolName, b.Address, b.AdminState, healthWord(b), b.Active)
	return nil
}

func (c *ctl) rebalance(ctx context.Context, poolName string) error {
	var ans struct {
		Moving int `json:"moving"`
	}
	if err := c.do(ctx, http.MethodPost, "/api/v1/pools/"+pathEscape(poolName)+"/rebalance", nil, &ans); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "%s: rebalancing, %d tunnel(s) will move\n", poolName, ans.Moving)
	return nil
}

// pathEscape escapes s as one path segment.
func pathEscape(s string) string { return (&url.URL{Path: s}).EscapedPath() }
