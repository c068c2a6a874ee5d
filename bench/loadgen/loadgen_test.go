package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50}, {99, 99}, {99.9, 100}, {100, 100}, {1, 1}, {0.5, 1}, {0, 1}} {
		if got := percentile(d, c.p); got != c.want {
			t.Errorf("p%v of 1..100 = %v, want %v", c.p, got, c.want)
		}
	}
	if got := percentile([]time.Duration{7}, 99); got != 7 {
		t.Errorf("p99 of one value = %v", got)
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("p50 of nothing = %v", got)
	}
	p50, p99, _, max := latencies([]time.Duration{3 * time.Microsecond, time.Microsecond, 2 * time.Microsecond})
	if p50 != 2 || p99 != 3 || max != 3 {
		t.Errorf("latencies = %v %v %v, want 2 3 3 (µs, sorted first)", p50, p99, max)
	}
}

func TestParseStat(t *testing.T) {
	// The command name holds a space and a parenthesis.
	line := "4242 (ngi) nx: w) S 4200 4242 4242 0 -1 4194624 100 0 0 0 250 30 0 0 20 0 1 0 100 1000 200 18446744073709551615\n"
	st, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if st.ppid != 4200 || st.ticks != 280 {
		t.Errorf("got ppid %d ticks %d, want 4200 280", st.ppid, st.ticks)
	}
}

func TestSnapshotSelf(t *testing.T) {
	s, err := snapshot(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.Procs < 1 || s.RSSKB <= 0 || s.FDs < 3 {
		t.Errorf("snapshot of this test: %+v", s)
	}
}

const wrkOut = `Running 5s test @ http://127.0.0.1:18080/
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.20ms  300.00us   8.00ms   80.00%
    Req/Sec    20.00k     1.00k   22.00k    70.00%
  Latency Distribution
     50%    1.10ms
     75%    1.30ms
     90%    1.60ms
     99%    2.50ms
  200000 requests in 5.00s, 20.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  40000.00
Transfer/sec:      4.00MB
`

func TestParseWrk(t *testing.T) {
	var r Result
	if err := parseWrk(wrkOut, &r); err != nil {
		t.Fatal(err)
	}
	if r.Ops != 200000 || r.Seconds != 5 || r.Rate != 40000 || r.Errors != 7 {
		t.Errorf("got %+v", r)
	}
	if !strings.Contains(r.Extra, "99% 2.50ms") {
		t.Errorf("extra %q lacks the p99", r.Extra)
	}
	if err := parseWrk("unable to connect", &r); err == nil {
		t.Error("garbage parsed")
	}
}

func f64(v float64) *float64 { return &v }

func TestReport(t *testing.T) {
	in := strings.NewReader(`{"target":"direct","name":"http","conns":50,"engine":"wrk","ops":100,"rate":40000}
not json, skipped
{"target":"haproxy","name":"http","conns":50,"engine":"wrk","ops":100,"rate":20000,"cpu_per_op":10}
{"target":"wslb","name":"http","conns":50,"engine":"wrk","ops":100,"rate":30000,"cpu_per_op":5}
{"target":"wslb","name":"handshake","conns":50,"ops":10,"rate":1234.5,"errors":3,"note":"first error: boom"}
{"target":"wslb","name":"idle-l7","requested":9000,"opened":9000,"sample_tried":100,"sample_ok":100,"rss_kb_per_conn":12.345,"fds_per_conn":2,"before":{"rss_kb":10240},"after":{"rss_kb":20480}}
`)
	rs, err := readResults(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 5 {
		t.Fatalf("%d results, want 5", len(rs))
	}
	out := report(rs, []string{"direct", "nginx", "haproxy", "wslb"}, []string{"DURATION: 5s"})
	for _, want := range []string{
		"- DURATION: 5s\n",
		"| figure | better | direct | nginx | haproxy | wslb |",
		"| HTTP keep-alive GET /, req/s (50 conns, wrk) | ↑ | 40,000 | n/a (no result) | 20,000 (0.50×d) | 30,000 (0.75×d, 1.50×h) |",
		"| HTTP: proxy CPU µs/request | ↓ | – | n/a (no result) | 10.0 | 5.00 (0.50×h) |",
		"| 1,235 ⚠ |",
		"- ⚠ wslb handshake: 3 errors; first error: boom",
		"| idle WebSockets via l7: open of 9000, sample echoed |  | n/a (no result) | n/a (no result) | n/a (no result) | 9000, 100/100 |",
		"| idle l7: proxy RSS KB/conn | ↓ | – | n/a (no result) | n/a (no result) | 12.3 |",
		"| 10.0 → 20.0 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestReportRounds(t *testing.T) {
	in := strings.NewReader(`{"target":"direct","name":"bulk-1","round":1,"ops":1,"rate":100}
{"target":"direct","name":"bulk-1","round":2,"ops":1,"rate":300}
{"target":"direct","name":"bulk-1","round":3,"ops":1,"rate":200}
{"target":"wslb","name":"bulk-1","round":1,"ops":1,"rate":50,"cpu_per_op":10}
{"target":"wslb","name":"bulk-1","round":2,"ops":1,"rate":150,"cpu_per_op":30,"errors":1,"note":"stream 0: short"}
`)
	rs, err := readResults(in)
	if err != nil {
		t.Fatal(err)
	}
	out := report(rs, nil, nil)
	for _, want := range []string{
		"| l4 bulk, 1 stream: MiB/s | ↑ | 200 | 100 (0.50×d) ⚠ |",
		"| l4 bulk, 1 stream: proxy CPU ms/GiB | ↓ | – | 20.0 ⚠ |",
		"- ⚠ wslb bulk-1 (round 2): 1 errors; stream 0: short",
		"median of their rounds",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestRatio(t *testing.T) {
	for x, want := range map[float64]string{0.123: "0.12", 1.5: "1.50", 9.949: "9.95", 29.96: "30.0", 429.98: "430"} {
		if got := ratio(x); got != want {
			t.Errorf("ratio(%v) = %q, want %q", x, got, want)
		}
	}
}

func TestNum(t *testing.T) {
	for v, want := range map[float64]string{1234567: "1,234,567", 999.6: "1,000", 123.4: "123", 12.34: "12.3", 1.234: "1.23", -2500: "-2,500"} {
		if got := num(v); got != want {
			t.Errorf("num(%v) = %q, want %q", v, got, want)
		}
	}
}
