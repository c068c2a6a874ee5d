package config

import "strings"

// agent checks pools[].health.agent at path q.
func (v *checker) agent(a Agent, q string) {
	if a.Port < 0 || a.Port > 65535 {
		v.add(key(q, "port"), "must be from 1 to 65535, or 0 to turn the agent check off, got %d", a.Port)
	}
	v.positive(key(q, "interval"), a.Interval)
	// The agent reads one line: a line break inside send would make it two
	// requests, and a NUL is never what an operator meant to type.
	if i := strings.IndexAny(a.Send, "\r\n\x00"); i >= 0 {
		v.add(key(q, "send"), "must be one line without CR, LF or NUL (a newline is appended when sent), got %q", a.Send)
	}
}
