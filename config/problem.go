package config

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Problem is one thing wrong with a configuration file, located by line and key path.
type Problem struct {
	File string
	// Line is 1-based; for a missing key it is the line of the enclosing mapping.
	Line int
	// Path is the key path, such as listeners[1].http.max_header_bytes.
	Path string
	Msg  string
}

// String formats the problem as `FILE:LINE: path.to.key: message`, the -check output
// format of DESIGN.md. A YAML syntax error has no path, and a few of them (an
// unknown anchor) no line either; those parts are left out rather than printed
// empty or as a made-up line.
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
	}
	b.WriteString(": ")
	if p.Path != "" {
		b.WriteString(p.Path + ": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Problems is every problem found in one file, sorted by line. Load and Parse
// return it as their error; get it back with errors.As.
type Problems []Problem

// Error prints one problem a line.
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// sortByLine orders problems by line; problems on the same line keep the order
// they were found in, which follows the file.
func (ps Problems) sortByLine() {
	slices.SortStableFunc(ps, func(a, b Problem) int { return cmp.Compare(a.Line, b.Line) })
}
