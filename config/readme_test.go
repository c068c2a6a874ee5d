package config

import (
	"os"
	"strings"
	"testing"
)

// TestReadmeNginxExample keeps the README's translated nginx config valid.
func TestReadmeNginxExample(t *testing.T) {
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	i := strings.Index(s, "#### From nginx")
	if i < 0 {
		t.Fatal("README has no nginx translation")
	}
	s = s[i:]
	start := strings.Index(s, "```yaml\n")
	end := strings.Index(s[start+8:], "```")
	if start < 0 || end < 0 {
		t.Fatal("no yaml block after the nginx example")
	}
	if _, err := Parse([]byte(s[start+8:start+8+end]), "README.md"); err != nil {
		t.Fatalf("README's translated config is invalid:\n%v", err)
	}
}
