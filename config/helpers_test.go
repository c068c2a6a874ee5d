package config

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// want is one expected problem: its exact line and path, and a part of its message.
type want struct {
	line int
	path string
	msg  string
}

// problems parses src (a leading newline is dropped, so the text after the
// opening backquote is line 1) and returns the Problems, failing on any other error.
func problems(t *testing.T, src string) Problems {
	t.Helper()
	_, err := Parse([]byte(strings.TrimPrefix(src, "\n")), "test.yaml")
	if err == nil {
		return nil
	}
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("Parse returned %T %v, want Problems", err, err)
	}
	return ps
}

// expect checks that src yields exactly the wanted problems, in order.
func expect(t *testing.T, src string, wants ...want) {
	t.Helper()
	got := problems(t, src)
	for i := 0; i < max(len(got), len(wants)); i++ {
		switch {
		case i >= len(wants):
			t.Errorf("unexpected problem %s", got[i])
		case i >= len(got):
			t.Errorf("missing problem at line %d %s (%q)", wants[i].line, wants[i].path, wants[i].msg)
		case got[i].Line != wants[i].line || got[i].Path != wants[i].path || !strings.Contains(got[i].Msg, wants[i].msg):
			t.Errorf("problem %d = %s\nwant test.yaml:%d: %s: ...%s...", i, got[i], wants[i].line, wants[i].path, wants[i].msg)
		}
	}
}

// mustParse parses src and fails the test on any problem.
func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	c, err := Parse([]byte(strings.TrimPrefix(src, "\n")), "test.yaml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

// parseFile parses a testdata file without touching the files it names.
func parseFile(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data, path)
}
