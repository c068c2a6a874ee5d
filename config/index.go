package config

import (
	"strconv"
	"strings"
)

// index records every key path the decoder met (listeners[1].http.max_header_bytes),
// so that defaults apply only to keys the file leaves out (an explicit 0 is the
// user's value, to be validated) and every later problem can name a line.
type index map[string]entry

type entry struct {
	line int
	// set is false for a key whose value is null: it is treated as absent, so
	// its default applies.
	set bool
	// bad marks a key whose value could not be decoded; it has already been
	// reported, so validation stays quiet about it and everything beneath it.
	bad bool
}

// isSet reports whether the file gave path a value.
func (x index) isSet(path string) bool { return x[path].set }

// line returns the line of path, or of its nearest recorded ancestor when the key
// is missing: a problem about an absent key points at the mapping that lacks it.
func (x index) line(path string) int {
	for {
		if e, ok := x[path]; ok {
			return e.line
		}
		if path == "" {
			return 1
		}
		path = parent(path)
	}
}

// isBad reports whether path or one of its ancestors failed to decode.
func (x index) isBad(path string) bool {
	for {
		if x[path].bad {
			return true
		}
		if path == "" {
			return false
		}
		path = parent(path)
	}
}

// key appends a mapping key to a path.
func key(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// item appends a sequence index to a path.
func item(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

// parent strips the last key or index from a path; the root's parent is itself.
func parent(path string) string {
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndexByte(path, '['); i >= 0 {
			return path[:i]
		}
	}
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i]
	}
	return ""
}
