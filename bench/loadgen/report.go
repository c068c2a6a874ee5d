package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
)

// runReport reads Result lines (-in, "-" for stdin) and writes the markdown
// table: a row per figure, a column per target, each proxy's cell with its
// ratio to direct and to haproxy.
func runReport(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	in := fs.String("in", "-", "JSON lines file")
	targets := fs.String("targets", "", "column order, comma-separated (default: as they appear)")
	meta := fs.String("meta", "", "a file of lines printed as a list above the table")
	fs.Parse(args)
	var rd io.Reader = os.Stdin
	if *in != "-" {
		f, err := os.Open(*in)
		if err != nil {
			return err
		}
		defer f.Close()
		rd = f
	}
	rs, err := readResults(rd)
	if err != nil {
		return err
	}
	var metaLines []string
	if *meta != "" {
		b, err := os.ReadFile(*meta)
		if err != nil {
			return err
		}
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				metaLines = append(metaLines, l)
			}
		}
	}
	_, err = io.WriteString(os.Stdout, report(rs, split(*targets), metaLines))
	return err
}

// readResults parses one Result per line, skipping lines that are not JSON
// objects (a workload that crashed leaves none).
func readResults(rd io.Reader) ([]*Result, error) {
	var out []*Result
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var r Result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			continue
		}
		out = append(out, &r)
	}
	return out, sc.Err()
}

// figure is one row of the table.
type figure struct {
	name   string // Result.Name it reads
	label  func(*Result) string
	better string // "↑" higher is better, "↓" lower is better, "" no ratio
	proxy  bool   // a proxy figure: "–" for direct
	value  func(*Result) (float64, bool)
	text   func(*Result) string // instead of value: a text cell
	format func(float64) string // instead of num
}

func fv(p *float64) (float64, bool) {
	if p == nil {
		return 0, false
	}
	return *p, true
}

func rate(r *Result) (float64, bool) { return r.Rate, r.Ops > 0 }
func cpu(r *Result) (float64, bool)  { return fv(r.CPUPerOp) }

func fixed(s string) func(*Result) string { return func(*Result) string { return s } }

var figures = []figure{
	{name: "http", better: "↑", value: rate, label: func(r *Result) string {
		return fmt.Sprintf("HTTP keep-alive GET /, req/s (%d conns, %s)", r.Conns, r.Engine)
	}},
	{name: "http", better: "↓", proxy: true, value: cpu, label: fixed("HTTP: proxy CPU µs/request")},
	{name: "handshake", better: "↑", value: rate, label: func(r *Result) string {
		return fmt.Sprintf("WebSocket handshakes/s (%d workers: connect, upgrade, 1 echo, close)", r.Conns)
	}},
	{name: "handshake", better: "↓", proxy: true, value: cpu, label: fixed("handshake: proxy CPU µs/handshake")},
	{name: "wsecho", better: "↑", value: rate, label: func(r *Result) string {
		return fmt.Sprintf("WebSocket echo msgs/s (%d conns, 128 B, unpaced)", r.Conns)
	}},
	{name: "wsecho", better: "↓", proxy: true, value: cpu, label: fixed("echo: proxy CPU µs/msg")},
	{name: "wsecho-paced", better: "↓", value: func(r *Result) (float64, bool) { return r.P50us, r.Ops > 0 }, label: func(r *Result) string {
		return fmt.Sprintf("paced echo %s msgs/s (%d conns): round trip p50 µs", thousands(r.TargetRate), r.Conns)
	}},
	{name: "wsecho-paced", better: "↓", value: func(r *Result) (float64, bool) { return r.P99us, r.Ops > 0 }, label: fixed("paced echo: p99 µs")},
	{name: "wsecho-paced", better: "↓", value: func(r *Result) (float64, bool) { return r.MaxUs, r.Ops > 0 }, label: fixed("paced echo: max µs")},
	{name: "wsecho-paced", better: "↓", proxy: true, value: cpu, label: fixed("paced echo: proxy CPU µs/msg")},
	{name: "wsecho-paced", value: func(r *Result) (float64, bool) { return r.SendLagP99us, r.Ops > 0 }, label: fixed("paced echo: loadgen's own send lag p99 µs (in the round trips)")},
	{name: "wsecho-paced", format: plain, value: func(r *Result) (float64, bool) { return float64(r.SlowConns), r.Ops > 0 }, label: func(r *Result) string {
		return fmt.Sprintf("paced echo: conns (of %d) with a round trip over 10 ms", r.Conns)
	}},
	{name: "bulk-1", better: "↑", value: rate, label: fixed("l4 bulk, 1 stream: MiB/s")},
	{name: "bulk-1", better: "↓", proxy: true, value: cpu, label: fixed("l4 bulk, 1 stream: proxy CPU ms/GiB")},
	{name: "bulk-8", better: "↑", value: rate, label: fixed("l4 bulk, 8 streams: MiB/s")},
	{name: "bulk-8", better: "↓", proxy: true, value: cpu, label: fixed("l4 bulk, 8 streams: proxy CPU ms/GiB")},
	{name: "idle-l7", text: idleText, label: func(r *Result) string {
		return fmt.Sprintf("idle WebSockets via l7: open of %d, sample echoed", r.Requested)
	}},
	{name: "idle-l7", better: "↓", proxy: true, value: func(r *Result) (float64, bool) { return fv(r.RSSPerConn) }, label: fixed("idle l7: proxy RSS KB/conn")},
	{name: "idle-l7", better: "↓", proxy: true, value: func(r *Result) (float64, bool) { return fv(r.FDsPerConn) }, label: fixed("idle l7: proxy fds/conn")},
	{name: "idle-l7", proxy: true, text: rssText, label: fixed("idle l7: proxy RSS MiB, fresh → all open")},
	{name: "idle-l4", text: idleText, label: func(r *Result) string {
		return fmt.Sprintf("idle raw TCP via l4: open of %d, sample echoed", r.Requested)
	}},
	{name: "idle-l4", better: "↓", proxy: true, value: func(r *Result) (float64, bool) { return fv(r.RSSPerConn) }, label: fixed("idle l4: proxy RSS KB/conn")},
	{name: "idle-l4", better: "↓", proxy: true, value: func(r *Result) (float64, bool) { return fv(r.FDsPerConn) }, label: fixed("idle l4: proxy fds/conn")},
	{name: "idle-l4", proxy: true, text: rssText, label: fixed("idle l4: proxy RSS MiB, fresh → all open")},
}

func idleText(r *Result) string {
	return fmt.Sprintf("%d, %d/%d", r.Opened, r.SampleOK, r.SampleTry)
}

func rssText(r *Result) string {
	if r.Before == nil || r.After == nil {
		return ""
	}
	return fmt.Sprintf("%.1f → %.1f", float64(r.Before.RSSKB)/1024, float64(r.After.RSSKB)/1024)
}

// report renders the table. A workload run in several rounds gives each
// numeric cell the median of its rounds. The reference columns for ratios
// are "direct" and "haproxy" when present.
func report(rs []*Result, order []string, meta []string) string {
	byT := map[string]map[string][]*Result{}
	var seen []string
	rounds := 0
	for _, r := range rs {
		if byT[r.Target] == nil {
			byT[r.Target] = map[string][]*Result{}
			seen = append(seen, r.Target)
		}
		byT[r.Target][r.Name] = append(byT[r.Target][r.Name], r)
		rounds = max(rounds, len(byT[r.Target][r.Name]))
	}
	targets := order
	if len(targets) == 0 {
		targets = seen
	}
	var b strings.Builder
	for _, m := range meta {
		fmt.Fprintf(&b, "- %s\n", m)
	}
	if len(meta) > 0 {
		b.WriteString("\n")
	}
	b.WriteString("| figure | better |")
	for _, t := range targets {
		fmt.Fprintf(&b, " %s |", t)
	}
	b.WriteString("\n| --- | :-: |")
	for range targets {
		b.WriteString(" --: |")
	}
	b.WriteString("\n")
	var notes []string
	noted := map[*Result]bool{}
	for _, f := range figures {
		var label string
		for _, t := range targets {
			if g := byT[t][f.name]; len(g) > 0 {
				label = f.label(g[0])
				break
			}
		}
		if label == "" {
			label = f.name + ": no result from any target"
		}
		fmt.Fprintf(&b, "| %s | %s |", label, f.better)
		for _, t := range targets {
			g := byT[t][f.name]
			cell := "n/a"
			switch {
			case f.proxy && t == "direct":
				cell = "–"
			case len(g) == 0:
				cell = "n/a (no result)"
			case f.text != nil:
				cell = f.text(g[len(g)-1])
			default:
				if v, ok := median(f, g); ok {
					if f.format != nil {
						cell = f.format(v)
					} else {
						cell = num(v)
					}
					cell += ratios(f, t, v, byT)
				}
			}
			errs := false
			for _, r := range g {
				if (r.Errors > 0 || r.Note != "") && !noted[r] {
					noted[r] = true
					where := t + " " + r.Name
					if r.Round > 0 {
						where += fmt.Sprintf(" (round %d)", r.Round)
					}
					notes = append(notes, where+": "+describe(r))
				}
				errs = errs || r.Errors > 0
			}
			if errs && cell != "–" {
				cell += " ⚠"
			}
			fmt.Fprintf(&b, " %s |", cell)
		}
		b.WriteString("\n")
	}
	b.WriteString("\nA cell is the value, then (×d) its ratio to direct and (×h) to haproxy in the same run; " +
		"\"better\" says which way is better. – : no proxy, so no proxy figure. ⚠ : the workload had errors (below).")
	if rounds > 1 {
		fmt.Fprintf(&b, " Workloads run in %d rounds (targets taken in turn each round) show the median of their rounds.", rounds)
	}
	b.WriteString("\n")
	if len(notes) > 0 {
		b.WriteString("\n")
		for _, n := range notes {
			fmt.Fprintf(&b, "- ⚠ %s\n", n)
		}
	}
	return b.String()
}

// median is f's value over the rounds g that have one: the middle one, or
// the mean of the middle two.
func median(f figure, g []*Result) (float64, bool) {
	var vs []float64
	for _, r := range g {
		if v, ok := f.value(r); ok {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		return 0, false
	}
	slices.Sort(vs)
	m := len(vs) / 2
	if len(vs)%2 == 1 {
		return vs[m], true
	}
	return (vs[m-1] + vs[m]) / 2, true
}

func describe(r *Result) string {
	var parts []string
	if r.Errors > 0 {
		parts = append(parts, fmt.Sprintf("%d errors", r.Errors))
	}
	if r.Name == "idle-l7" || r.Name == "idle-l4" {
		if r.Failed > 0 {
			parts = append(parts, fmt.Sprintf("%d of %d conns failed to open", r.Failed, r.Requested))
		}
		if r.SampleOK < r.SampleTry {
			parts = append(parts, fmt.Sprintf("%d of %d sampled conns did not echo", r.SampleTry-r.SampleOK, r.SampleTry))
		}
	}
	if r.Note != "" {
		parts = append(parts, r.Note)
	}
	return strings.Join(parts, "; ")
}

// ratios returns " (0.62×d, 1.10×h)" for target t's value v, each ratio only
// when its reference has a positive value and is not t itself.
func ratios(f figure, t string, v float64, byT map[string]map[string][]*Result) string {
	if f.better == "" || t == "direct" {
		return ""
	}
	var parts []string
	for _, ref := range []struct{ target, tag string }{{"direct", "d"}, {"haproxy", "h"}} {
		if ref.target == t || (f.proxy && ref.target == "direct") {
			continue
		}
		rv, ok := median(f, byT[ref.target][f.name])
		if !ok || rv <= 0 {
			continue
		}
		parts = append(parts, ratio(v/rv)+"×"+ref.tag)
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// plain formats a count (or a median of counts, which may end in .5).
func plain(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// ratio formats x with three significant digits (two decimals below 10).
func ratio(x float64) string {
	switch {
	case x >= 99.5:
		return strconv.FormatFloat(x, 'f', 0, 64)
	case x >= 9.95:
		return strconv.FormatFloat(x, 'f', 1, 64)
	default:
		return strconv.FormatFloat(x, 'f', 2, 64)
	}
}

// num formats v with three significant digits or more, and thousands
// separators from 1,000 up.
func num(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 999.5:
		return thousands(v)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func thousands(v float64) string {
	s := strconv.FormatFloat(math.Round(math.Abs(v)), 'f', 0, 64)
	var parts []string
	for len(s) > 3 {
		parts = append(parts, s[len(s)-3:])
		s = s[:len(s)-3]
	}
	parts = append(parts, s)
	slices.Reverse(parts)
	out := strings.Join(parts, ",")
	if v < 0 {
		out = "-" + out
	}
	return out
}
