package config

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// FuzzParse reads arbitrary bytes as a config file, from the seeds in
// testdata/fuzz/FuzzParse. Parse never panics; it returns a config or
// Problems, sorted by line, each with its file, a line and a key path (only
// a YAML syntax error may lack them, and only a problem with the document as
// a whole the path), and a message. A config that parses is the same when
// parsed again, and validated again it has no problem and does not change:
// validation, which fills in resolved addresses and parsed values, may run
// on its own output.
func FuzzParse(f *testing.F) {
	const file = "fuzz.yaml"
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, file)
		if err != nil {
			var ps Problems
			if !errors.As(err, &ps) || len(ps) == 0 {
				t.Fatalf("error %T %v, want Problems", err, err)
			}
			if !slices.IsSortedFunc(ps, func(a, b Problem) int { return a.Line - b.Line }) {
				t.Fatalf("problems not sorted by line:\n%v", ps)
			}
			for _, p := range ps {
				checkProblem(t, p, file)
			}
			return
		}
		again, err := Parse(data, file)
		if err != nil || !reflect.DeepEqual(again, c) {
			t.Fatalf("parsed again: %v\n%+v\nthe first time:\n%+v", err, again, c)
		}
		d := decoder{idx: index{}}
		d.document(data, &Config{})
		if ps := validate(again, d.idx, false); len(ps) > 0 {
			t.Fatalf("validated again: %v", ps)
		}
		if !reflect.DeepEqual(again, c) {
			t.Fatalf("validated again:\n%+v\nonce:\n%+v", again, c)
		}
	})
}

// checkProblem checks one problem of a file that does not parse.
func checkProblem(t *testing.T, p Problem, file string) {
	t.Helper()
	syntax := strings.HasPrefix(p.Msg, "invalid YAML: ")
	switch {
	case p.File != file:
		t.Fatalf("%s: file %q, want %q", p, p.File, file)
	case p.Msg == "" || strings.ContainsAny(p.Msg, "\n"):
		t.Fatalf("%s: the message must be one line", p)
	case p.Line < 1 && !syntax:
		t.Fatalf("%s: no line", p)
	case p.Path == "" && !syntax && !aboutDocument(p):
		t.Fatalf("%s: no key path", p)
	}
}

// aboutDocument reports the problems with the file as a whole, which have
// no key to name: a second document, and a root that is no mapping or has
// a key that is not a string.
func aboutDocument(p Problem) bool {
	return strings.HasPrefix(p.Msg, "only one YAML document") ||
		strings.HasPrefix(p.Msg, "want a mapping") || strings.HasPrefix(p.Msg, "keys must be plain strings")
}
