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
	na     func(*Result) string // the cell when there is no value (default "n/a")
}

func fv(p *float64) (float64, bool) {
	if p == nil {
		return 0, false
	}
	return *p, true
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
				if f.na != nil {
					cell = f.na(g[len(g)-1])
				}
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
