package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Size is a number of bytes (max_header_bytes, max_body_bytes). The file
// gives a plain number or, as nginx's client_max_body_size does, one with a
// suffix k, m or g in either case, powers of 1024: 512k, 10m, 1g.
type Size int64

var sizeType = reflect.TypeFor[Size]()

// sizeUnit is a suffix a size may carry.
type sizeUnit struct {
	suffix byte
	n      int64
}

// sizeUnits are the suffixes, largest first: the order in which a
// fraction's whole-number spelling is looked for.
func sizeUnits() [3]sizeUnit {
	return [...]sizeUnit{{'g', 1 << 30}, {'m', 1 << 20}, {'k', 1 << 10}}
}

const sizeExample = "a size such as 32768, 512k, 10m or 1g (k, m and g are powers of 1024)"

// size decodes a Size. A YAML integer is taken as it is (0x400 included), as
// for any whole number; a string goes through parseSize.
func (d *decoder) size(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.wrongKind(n, v.Type(), path)
		return
	}
	var (
		bytes int64
		err   error
	)
	switch n.ShortTag() {
	case "!!int":
		if n.Decode(&bytes) != nil {
			// Past int64: yaml.v3 cannot hold it, and neither can wslb.
			err = errTooLarge(n.Value)
		}
	case "!!str", "!!float":
		bytes, err = parseSize(n.Value)
	default:
		err = fmt.Errorf("want %s, got %q", sizeExample, n.Value)
	}
	if err != nil {
		d.bad(n.Line, path, "%v", err)
		return
	}
	v.SetInt(bytes)
}

// parseSize reads a size written as text. Its errors are problem messages:
// each says what to write instead.
func parseSize(s string) (int64, error) {
	num, unit := s, int64(1)
	if last := len(s) - 1; last > 0 {
		for _, u := range sizeUnits() {
			if s[last]|0x20 == u.suffix { // ASCII lower case
				num, unit = s[:last], u.n
			}
		}
	}
	digits := strings.TrimLeft(num, "0123456789")
	switch {
	case strings.HasPrefix(num, "-"):
		return 0, fmt.Errorf("a size cannot be negative, got %q: use 0 or more", s)
	case num == "" || len(digits) == len(num):
		return 0, fmt.Errorf("want %s, got %q", sizeExample, s)
	case digits == "":
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n > math.MaxInt64/unit {
			return 0, errTooLarge(s)
		}
		return n * unit, nil
	case digits[0] == '.' && strings.Trim(digits[1:], "0123456789") == "" && len(digits) > 1:
		return 0, fraction(s, num, unit)
	case unit == 1:
		return 0, fmt.Errorf("unknown size suffix in %q: use k, m or g (powers of 1024), as in 512k, 10m or 1g, or a number of bytes", s)
	}
	return 0, fmt.Errorf("want %s, got %q", sizeExample, s)
}

// fraction is the problem of a size such as 1.5m: sizes are whole numbers,
// so it says how to write the same size as one.
func fraction(s, num string, unit int64) error {
	f, err := strconv.ParseFloat(num, 64)
	bytes := f * float64(unit)
	if err != nil || bytes >= math.MaxInt64 {
		return errTooLarge(s)
	}
	if bytes == math.Trunc(bytes) {
		for _, u := range sizeUnits() {
			if u.n < unit && int64(bytes)%u.n == 0 {
				return fmt.Errorf("%q is not a whole number: write %d%c", s, int64(bytes)/u.n, u.suffix)
			}
		}
		return fmt.Errorf("%q is not a whole number: write %d", s, int64(bytes))
	}
	return fmt.Errorf("%q is not a whole number of bytes: write a whole number, such as %d", s, int64(math.Round(bytes)))
}

// errTooLarge is the problem of a size past what 64 bits hold.
func errTooLarge(s string) error {
	return errors.New(strconv.Quote(s) + " is too large: a size must be below 8589934592g (8 EiB)")
}
