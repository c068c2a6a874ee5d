package l7

import (
	"bufio"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
)

// writeFields writes the fields of h, but those excluded, as
// Header.WriteSubset does: sorted by name, names that are no token left out,
// each value on a line of its own with CR and LF made spaces and the ends
// trimmed.
func writeFields(bw *bufio.Writer, h http.Header, excluded func(string) bool) {
	var names [32]string // most heads: no allocation
	keys := names[:0]
	for k := range h {
		if !excluded(k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !isFieldName(k) {
			continue
		}
		for _, v := range h[k] {
			writeField(bw, k, v)
		}
	}
}

// writeField writes one header line, its value cleaned as Header.Write does:
// CR and LF made spaces, then the ends trimmed of spaces, tabs, CR and LF.
func writeField(bw *bufio.Writer, name, value string) {
	clean := true
	for i := 0; i < len(value); i++ {
		if c := value[i]; c == '\r' || c == '\n' {
			clean = false
			break
		}
	}
	if !clean {
		b := []byte(value)
		for i, c := range b {
			if c == '\r' || c == '\n' {
				b[i] = ' ' // bytes, not runes: invalid UTF-8 passes as it is
			}
		}
		value = string(b)
	}
	bw.WriteString(name)
	bw.WriteString(": ")
	bw.WriteString(textproto.TrimString(value))
	bw.WriteString("\r\n")
}

// isFieldName reports whether name is an RFC 9110 token, as a field name must
// be (httpguts.ValidHeaderFieldName).
func isFieldName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
