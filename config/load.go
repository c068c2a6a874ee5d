package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Load reads the file at path and returns it as Parse does, and also resolves
// the file paths (l7 listeners' tls.cert, tls.key and static folders, pools'
// tls.ca, tls.cert and tls.key) against the file's folder and checks that
// they load, each failure a problem with its line. A pool's TLS files are
// kept loaded in its BackendTLS.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parse(data, path, true)
}

// Parse decodes a config file strictly, applies the defaults, resolves go-sockaddr
// templates and validates the result. file names the source in problems and in
// Config.File. When anything is wrong the error is a Problems holding every problem
// found, sorted by line, and the Config is nil.
// Parse reads no file besides data: paths are kept as written.
func Parse(data []byte, file string) (*Config, error) {
	return parse(data, file, false)
}

func parse(data []byte, file string, withFiles bool) (*Config, error) {
	c := &Config{File: file}
	d := decoder{idx: index{}}
	d.document(data, c)
	probs := d.probs
	if !d.syntaxError {
		applyDefaults(c, d.idx)
		probs = append(probs, validate(c, d.idx, withFiles)...)
	}
	if len(probs) > 0 {
		for i := range probs {
			probs[i].File = file
		}
		probs.sortByLine()
		return nil, probs
	}
	return c, nil
}

// decoder walks a yaml.Node tree alongside the Go type it fills, using the yaml
// tags. It exists instead of yaml.Node.Decode on the whole tree because yaml.v3
// neither reports unknown keys through nested decoding with a key path nor names
// the key in its type errors; walking by hand gives both, and every problem
// rather than the first.
type decoder struct {
	idx         index
	probs       Problems
	syntaxError bool
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	addrsType    = reflect.TypeFor[Addrs]()
)

func (d *decoder) problem(line int, path, format string, args ...any) {
	d.probs = append(d.probs, Problem{Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// bad reports a value that could not be decoded and marks its path, so that
// validation does not report the zero value left behind as a second problem.
func (d *decoder) bad(line int, path, format string, args ...any) {
	d.problem(line, path, format, args...)
	e := d.idx[path]
	e.bad, e.set = true, true
	d.idx[path] = e
}

// document decodes the single YAML document in data into c.
func (d *decoder) document(data []byte, c *Config) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	err := dec.Decode(&doc)
	if errors.Is(err, io.EOF) { // an empty file: every key is absent
		d.idx[""] = entry{line: 1}
		return
	}
	if err != nil {
		d.syntax(err)
		return
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		d.problem(next.Line, "", "only one YAML document is allowed, found a second one")
	} else if !errors.Is(err, io.EOF) {
		d.syntax(err)
		return
	}
	root := &doc
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			d.idx[""] = entry{line: 1}
			return
		}
		root = doc.Content[0]
	}
	d.idx[""] = entry{line: root.Line, set: true}
	d.value(root, reflect.ValueOf(c).Elem(), "")
}

// yamlLine pulls the line out of yaml.v3's syntax errors ("yaml: line 3: ...").
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntax reports a YAML syntax error; nothing else can be checked after one.
func (d *decoder) syntax(err error) {
	d.syntaxError = true
	msg := err.Error()
	line := 0 // unknown: Problem.String leaves it out rather than invent one
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	d.problem(line, "", "invalid YAML: %s", msg)
}

// value decodes n into v, which the key at path holds.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	n = deref(n)
	if isNull(n) {
		return // null is absent: v keeps its zero value and later its default
	}
	switch {
	case v.Type() == durationType:
		d.scalar(n, v, path)
	case v.Type() == sizeType:
		d.size(n, v, path)
	case v.Type() == addrsType && n.Kind == yaml.ScalarNode:
		// One address stands for a list of one; its problems keep the
		// key's own path, with no index the file did not write.
		s := reflect.MakeSlice(v.Type(), 1, 1)
		d.scalar(n, s.Index(0), path)
		v.Set(s)
	case v.Kind() == reflect.Struct:
		d.mapping(n, v, path)
	case v.Kind() == reflect.Pointer:
		if n.Kind != yaml.MappingNode {
			d.wrongKind(n, v.Type(), path)
			return
		}
		p := reflect.New(v.Type().Elem())
		d.value(n, p.Elem(), path)
		v.Set(p)
	case v.Kind() == reflect.Slice:
		d.sequence(n, v, path)
	case v.Kind() == reflect.Map:
		d.stringMap(n, v, path)
	default:
		d.scalar(n, v, path)
	}
}

// mapping fills the struct v from the mapping n, key by key.
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.wrongKind(n, v.Type(), path)
		return
	}
	fields := map[string]int{}
	var known []string
	for i := range v.NumField() {
		if name := yamlName(v.Type().Field(i)); name != "" {
			fields[name] = i
			known = append(known, name)
		}
	}
	slices.Sort(known)
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := deref(n.Content[i]), n.Content[i+1]
		name, ok := d.mapKey(k, path, seen)
		if !ok {
			continue
		}
		p := key(path, name)
		f, ok := fields[name]
		if !ok {
			d.problem(k.Line, p, "unknown key (known: %s)", strings.Join(known, ", "))
			continue
		}
		d.idx[p] = entry{line: k.Line, set: !isNull(deref(val))}
		d.value(val, v.Field(f), p)
	}
}

// stringMap fills a map[string]string (http.response_headers) key by key, so that
// duplicate keys and non-string values are reported with their own path.
func (d *decoder) stringMap(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.wrongKind(n, v.Type(), path)
		return
	}
	m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := deref(n.Content[i]), n.Content[i+1]
		name, ok := d.mapKey(k, path, seen)
		if !ok {
			continue
		}
		p := key(path, name)
		d.idx[p] = entry{line: k.Line, set: !isNull(deref(val))}
		elem := reflect.New(v.Type().Elem()).Elem()
		d.value(val, elem, p)
		m.SetMapIndex(reflect.ValueOf(name).Convert(v.Type().Key()), elem)
	}
	v.Set(m)
}

// mapKey checks one key of a mapping and returns its name; ok is false when the
// key was reported and its value must be skipped.
func (d *decoder) mapKey(k *yaml.Node, path string, seen map[string]int) (name string, ok bool) {
	if k.Kind != yaml.ScalarNode {
		d.problem(k.Line, path, "keys must be plain strings, found %s", kindName(k))
		return "", false
	}
	if k.ShortTag() == "!!merge" {
		// yaml.v3 expands merge keys only in Decode; supporting them here would
		// mean a second set of override rules to explain and test.
		d.problem(k.Line, key(path, "<<"), "merge keys are not supported: write the keys out")
		return "", false
	}
	if k.Value == "" {
		// "": or a bare ?: there is no name for the path to end in.
		d.problem(k.Line, key(path, `""`), "empty key: write the key's name")
		return "", false
	}
	if first, dup := seen[k.Value]; dup {
		d.problem(k.Line, key(path, k.Value), "duplicate key (first on line %d): each key may appear once", first)
		return "", false
	}
	seen[k.Value] = k.Line
	return k.Value, true
}

// sequence fills the slice v from the sequence n, item by item.
func (d *decoder) sequence(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		d.wrongKind(n, v.Type(), path)
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, it := range n.Content {
		p := item(path, i)
		d.idx[p] = entry{line: it.Line, set: !isNull(deref(it))}
		d.value(it, s.Index(i), p)
	}
	v.Set(s)
}

// scalar decodes a leaf. yaml.v3 converts the value, with two exceptions that
// make it stricter or kinder than yaml.v3 alone: an integer field takes only an
// !!int (yaml.v3 would truncate 1.5 to 1), and a duration is read with
// time.ParseDuration, which yaml.v3 also uses but only for strings, so that a
// bare 0 (slow_start: 0) is accepted as Go accepts "0".
func (d *decoder) scalar(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.wrongKind(n, v.Type(), path)
		return
	}
	if v.Type() == durationType {
		dur, err := time.ParseDuration(n.Value)
		if err != nil {
			d.bad(n.Line, path, "want %s, got %q", describe(v.Type()), n.Value)
			return
		}
		v.SetInt(int64(dur))
		return
	}
	isInt := v.Kind() >= reflect.Int && v.Kind() <= reflect.Int64
	if isInt && n.ShortTag() != "!!int" {
		d.bad(n.Line, path, "want %s, got %q", describe(v.Type()), n.Value)
		return
	}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		d.bad(n.Line, path, "want %s, got %q", describe(v.Type()), n.Value)
	}
}

// wrongKind reports a mapping where a list belongs, and the like.
func (d *decoder) wrongKind(n *yaml.Node, t reflect.Type, path string) {
	got := kindName(n)
	if n.Kind == yaml.ScalarNode {
		got = strconv.Quote(n.Value)
	}
	d.bad(n.Line, path, "want %s, got %s", describe(t), got)
}

// describe says what a value of type t looks like in YAML.
func describe(t reflect.Type) string {
	switch {
	case t == durationType:
		return "a duration such as 300ms, 5s or 1h"
	case t == sizeType:
		return sizeExample
	case t == addrsType:
		return "an address or a list of addresses"
	case t.Kind() == reflect.Struct, t.Kind() == reflect.Pointer, t.Kind() == reflect.Map:
		return "a mapping"
	case t.Kind() == reflect.Slice:
		return "a list"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		return "a whole number"
	case t.Kind() == reflect.Float64:
		return "a number such as 1000 or 0.5"
	default:
		return "a string"
	}
}

// kindName names a node's kind as the YAML documentation does.
func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return "a value"
	}
}

// yamlName is a struct field's key in config.yaml, or "" for fields that are not
// read from the file (yaml:"-", computed ones such as Backend.Addr).
func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	return name
}

// deref follows aliases to the node they name.
func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}
