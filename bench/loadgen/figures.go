package main

import (
	"fmt"
	"slices"
	"strings"
)

func rate(r *Result) (float64, bool) { return r.Rate, r.Ops > 0 }
func cpu(r *Result) (float64, bool)  { return fv(r.CPUPerOp) }

func fixed(s string) func(*Result) string { return func(*Result) string { return s } }

// figures are the table's rows, in order; slices.Concat puts each
// workload's syscall and context-switch rows right under its CPU row.
var figures = slices.Concat([]figure{
	{name: "http", better: "↑", value: rate, label: func(r *Result) string {
		return fmt.Sprintf("HTTP keep-alive GET /, req/s (%d conns, %s)", r.Conns, r.Engine)
	}},
	{name: "http", better: "↓", proxy: true, value: cpu, label: fixed("HTTP: proxy CPU µs/request")},
}, counts("http", "HTTP", "request"), []figure{
	{name: "handshake", better: "↑", value: rate, label: func(r *Result) string {
		return fmt.Sprintf("WebSocket handshakes/s (%d workers: connect, upgrade, 1 echo, close)", r.Conns)
	}},
	{name: "handshake", better: "↓", proxy: true, value: cpu, label: fixed("handshake: proxy CPU µs/handshake")},
}, counts("handshake", "handshake", "handshake"), []figure{
	{name: "wsecho", better: "↑", value: rate, label: func(r *Result) string {
		return fmt.Sprintf("WebSocket echo msgs/s (%d conns, 128 B, unpaced)", r.Conns)
	}},
	{name: "wsecho", better: "↓", proxy: true, value: cpu, label: fixed("echo: proxy CPU µs/msg")},
}, counts("wsecho", "echo", "msg"), []figure{
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
}, counts("bulk-1", "l4 bulk, 1 stream", "MiB"), []figure{
	{name: "bulk-8", better: "↑", value: rate, label: fixed("l4 bulk, 8 streams: MiB/s")},
	{name: "bulk-8", better: "↓", proxy: true, value: cpu, label: fixed("l4 bulk, 8 streams: proxy CPU ms/GiB")},
}, counts("bulk-8", "l4 bulk, 8 streams", "MiB"), []figure{
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
}, stormFigures, counts("storm", "storm", "client"))

func idleText(r *Result) string {
	return fmt.Sprintf("%d, %d/%d", r.Opened, r.SampleOK, r.SampleTry)
}

func rssText(r *Result) string {
	if r.Before == nil || r.After == nil {
		return ""
	}
	return fmt.Sprintf("%.1f → %.1f", float64(r.Before.RSSKB)/1024, float64(r.After.RSSKB)/1024)
}

// counts are the perf stat rows of workload name: the proxy's syscalls and
// context switches per op.
func counts(name, what, op string) []figure {
	return []figure{
		{name: name, better: "↓", proxy: true, na: perfNA, label: fixed(what + ": proxy syscalls/" + op),
			value: func(r *Result) (float64, bool) { return fv(r.SyscallsPerOp) }},
		{name: name, better: "↓", proxy: true, na: perfNA, label: fixed(what + ": proxy context switches/" + op),
			value: func(r *Result) (float64, bool) { return fv(r.CtxSwPerOp) }},
	}
}

// perfNA says why a result has no perf counts (a "|" would split the cell).
func perfNA(r *Result) string {
	if r.PerfNA == "" {
		return "n/a"
	}
	return "n/a (perf cannot count here: " + strings.ReplaceAll(r.PerfNA, "|", "/") + ")"
}

// stormFigures are the reconnect storm's rows (loadgen storm, run.sh's
// storm phase).
var stormFigures = []figure{
	{name: "storm", text: stormText, label: func(r *Result) string {
		return fmt.Sprintf("storm, %s clients at once (handshake + 1 echo, then stay): connected, failed refused/reset/timeout/other", thousands(float64(r.Requested)))
	}},
	{name: "storm", better: "↓", label: fixed("storm: s until all connected and echoed"),
		value: func(r *Result) (float64, bool) { return stormV(r, func(s *Storm) float64 { return s.AllConnectedS }) }},
	{name: "storm", better: "↓", label: fixed("storm: handshake p50 ms"), value: func(r *Result) (float64, bool) { return r.P50us / 1e3, r.Opened > 0 }},
	{name: "storm", better: "↓", label: fixed("storm: handshake p99 ms"), value: func(r *Result) (float64, bool) { return r.P99us / 1e3, r.Opened > 0 }},
	{name: "storm", better: "↓", label: fixed("storm: handshake max ms"), value: func(r *Result) (float64, bool) { return r.MaxUs / 1e3, r.Opened > 0 }},
	{name: "storm", better: "↓", proxy: true, label: fixed("storm: proxy peak RSS MiB"),
		value: func(r *Result) (float64, bool) {
			return stormV(r, func(s *Storm) float64 { return float64(s.PeakRSSKB) / 1024 })
		}},
	{name: "storm", better: "↓", proxy: true, value: cpu, label: fixed("storm: proxy CPU µs/client")},
}

func stormText(r *Result) string {
	s := r.Storm
	if s == nil {
		s = &Storm{}
	}
	return fmt.Sprintf("%d, %d: %d/%d/%d/%d", r.Opened, r.Failed, s.Refused, s.Reset, s.Timeouts, s.Other)
}

// stormV is get(r.Storm), present when positive.
func stormV(r *Result, get func(*Storm) float64) (float64, bool) {
	if r.Storm == nil {
		return 0, false
	}
	v := get(r.Storm)
	return v, v > 0
}
