package config

import (
	"errors"
	"testing"
)

func TestProblemString(t *testing.T) {
	tests := []struct {
		name string
		p    Problem
		want string
	}{
		{"with path", Problem{File: "config.yaml", Line: 12, Path: "listeners[0].timeouts.conect", Msg: "unknown key"},
			"config.yaml:12: listeners[0].timeouts.conect: unknown key"},
		{"syntax error has no path", Problem{File: "c.yaml", Line: 3, Msg: "invalid YAML: x"},
			"c.yaml:3: invalid YAML: x"},
		{"no line", Problem{File: "c.yaml", Msg: "invalid YAML: unknown anchor 'a' referenced"},
			"c.yaml: invalid YAML: unknown anchor 'a' referenced"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.String(); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestProblemsError(t *testing.T) {
	_, err := Parse([]byte("workers: -1\nlisteners: []\n"), "c.yaml")
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("error %T is not Problems", err)
	}
	want := "c.yaml:1: workers: must not be negative, got -1\n" +
		"c.yaml:2: listeners: no listeners: at least one is required"
	if err.Error() != want {
		t.Errorf("got\n%s\nwant\n%s", err, want)
	}
}

func TestSummary(t *testing.T) {
	c := mustParse(t, `
listeners:
  - {name: a, listen: ":0", mode: l4, pool: ws}
  - {name: b, listen: ":0", mode: l7}
pools:
  - name: ws
    backends: [{address: 127.0.0.1:1}, {address: 127.0.0.1:2}, {address: 127.0.0.1:3}]
`)
	want := "test.yaml: ok: 2 listeners (1 l4, 1 l7), 1 pool, 3 backends"
	if got := c.Summary(); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
