package config

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The shipped config.yaml is the documented reference configuration: every
// key the config structs read must appear in it, with its default value.
//
// Rules the tests below apply:
//
//   - Key paths are written with "[]" for list items (listeners[].tls.cert).
//     A key under a list counts as present when any item has it: an l4
//     listener has no http block, but the l7 one does.
//   - A key may instead be present as a commented-out line ("# key: value",
//     keeping the indentation it would have once uncommented) only when it
//     cannot be present uncommented in the file that `wslb demo` runs. That is
//     the list commentedOK: listeners[].tls and its keys (an l7 listener with
//     tls needs real certificate files, which Load checks, and would turn the
//     demo's ws:// into wss://); pools[].tls and its keys (the demo's echo
//     backends speak plain TCP, and its l4 listener shares their pool), shown
//     on a commented-out pool of their own; and pools[].discovery and its
//     keys, since a discovery entry needs DNS records, which the demo does not
//     serve (it starts a backend on every address it is given). A
//     commented-out list item ("# - name: x") is uncommented too. The file
//     with its commented-out keys uncommented must still parse as a valid
//     config, so the commented block is a working example, not prose.
//   - Values: every key that has a default (defaults.go) carries exactly that
//     default. The exceptions are keys with no default (names, addresses,
//     mode, pool, routes' path/pool/static) and routes[].strip_prefix and
//     rewrite_prefix, whose demo values are the point of the /websocket/ and
//     /api/ routes.

// commentedOK lists the key paths allowed to appear only commented out.
var commentedOK = []string{
	"listeners[].tls",
	"listeners[].tls.cert",
	"listeners[].tls.key",
	"listeners[].tls.min_version",
	"listeners[].tls.redirect_http",
	"listeners[].tls.certificates",
	"listeners[].tls.certificates[].cert",
	"listeners[].tls.certificates[].key",
	"listeners[].tls.http2",
	"listeners[].tls.acme",
	"listeners[].tls.acme.email",
	"listeners[].tls.acme.domains",
	"listeners[].tls.acme.directory",
	"listeners[].tls.acme.ca",
	"listeners[].tls.acme.cache",
	"pools[].discovery",
	"pools[].discovery[].srv",
	"pools[].discovery[].name",
	"pools[].discovery[].port",
	"pools[].tls",
	"pools[].tls.server_name",
	"pools[].tls.ca",
	"pools[].tls.insecure_skip_verify",
	"pools[].tls.cert",
	"pools[].tls.key",
}

const shippedConfig = "../config.yaml"

func TestShippedConfigIsReference(t *testing.T) {
	data, err := os.ReadFile(shippedConfig)
	if err != nil {
		t.Fatal(err)
	}
	want := refStructKeys(reflect.TypeFor[Config](), "")
	if len(want) < 50 {
		t.Fatalf("walked only %d keys of Config; the reflection walk is broken: %v", len(want), want)
	}
	present := refYAMLKeys(t, data)
	uncommented := refUncomment(data)
	withCommented := refYAMLKeys(t, uncommented)

	for _, k := range want {
		switch {
		case present[k]:
		case withCommented[k] && slices.Contains(commentedOK, k):
		case withCommented[k]:
			t.Errorf("%s: only present commented out in config.yaml; it can be set in the demo's config, so show it uncommented with its default", k)
		default:
			t.Errorf("%s: missing from config.yaml (add it with a comment and its default)", k)
		}
	}
	for _, k := range commentedOK {
		if present[k] {
			t.Errorf("%s is present uncommented; drop it from commentedOK", k)
		}
	}
	// The commented-out block is a working example: uncommented, the file is
	// still valid (Parse reads no files, so the certificate paths are fine).
	if _, err := Parse(uncommented, "config.yaml (uncommented)"); err != nil {
		t.Errorf("config.yaml with its commented-out keys uncommented is invalid:\n%v\n%s", err, uncommented)
	}
	// And every key in the file is a real key: Load rejects unknown keys, and
	// checks the static folder the demo serves.
	if _, err := Load(shippedConfig); err != nil {
		t.Fatalf("config.yaml does not load:\n%v", err)
	}
}

// TestShippedConfigHasDefaults checks that config.yaml shows the defaults of
// defaults.go, block by block, after Load (which applies the defaults only
// to keys left out, so a value differing from its default shows here).
func TestShippedConfigHasDefaults(t *testing.T) {
	c, err := Load(shippedConfig)
	if err != nil {
		t.Fatalf("config.yaml does not load:\n%v", err)
	}
	// %+v prints nil and empty slices and maps alike; the file writes [] and
	// {} where the defaults may hold either.
	same := func(what string, got, want any) {
		t.Helper()
		if g, w := fmt.Sprintf("%+v", got), fmt.Sprintf("%+v", want); g != w {
			t.Errorf("%s in config.yaml:\n got %s\nwant %s (the default)", what, g, w)
		}
	}

	def := defaultConfig()
	same("workers", c.Workers, def.Workers)
	same("shutdown", c.Shutdown, def.Shutdown)
	same("admin", c.Admin, def.Admin)
	same("resolver", c.Resolver, def.Resolver)

	if len(c.Listeners) == 0 || len(c.Pools) == 0 {
		t.Fatal("config.yaml has no listeners or no pools")
	}
	var l4, l7 int
	for i, l := range c.Listeners {
		want := defaultListener()
		if l.Mode == ModeL7 {
			want.HTTP = defaultHTTP()
			want.HTTP.TrustedPrefixes = l.HTTP.TrustedPrefixes // derived from trusted_proxies
			l7++
		} else {
			l4++
		}
		// Keys without a default.
		want.Name, want.Listen, want.Mode, want.Pool, want.Routes, want.TLS = l.Name, l.Listen, l.Mode, l.Pool, l.Routes, l.TLS
		same(fmt.Sprintf("listeners[%d] (%s)", i, l.Name), l, want)
		if l.TLS != nil {
			t.Errorf("listeners[%d].tls is set: the demo serves plain ws://", i)
		}
	}
	if l4 == 0 || l7 == 0 {
		t.Errorf("config.yaml has %d l4 and %d l7 listeners, want at least one of each", l4, l7)
	}
	for i, p := range c.Pools {
		want := defaultPool()
		want.Name, want.Backends = p.Name, p.Backends
		same(fmt.Sprintf("pools[%d] (%s)", i, p.Name), p, want)
		for j, b := range p.Backends {
			same(fmt.Sprintf("pools[%d].backends[%d].weight", i, j), b.Weight, defaultBackend().Weight)
		}
	}

	// The commented-out tls block shows the tls defaults too.
	data, err := os.ReadFile(shippedConfig)
	if err != nil {
		t.Fatal(err)
	}
	u, err := Parse(refUncomment(data), "config.yaml (uncommented)")
	if err != nil {
		t.Fatalf("config.yaml uncommented: %v", err)
	}
	tlsSeen := false
	for i, l := range u.Listeners {
		if l.TLS == nil {
			continue
		}
		tlsSeen = true
		want := defaultTLS()
		want.Cert, want.Key, want.Certificates, want.ACME = l.TLS.Cert, l.TLS.Key, l.TLS.Certificates, l.TLS.ACME
		same(fmt.Sprintf("listeners[%d].tls (commented out)", i), *l.TLS, want)
		if a := l.TLS.ACME; a != nil {
			wantACME := defaultACME()
			wantACME.Domains, wantACME.Cache = a.Domains, a.Cache // cache comes back resolved
			same(fmt.Sprintf("listeners[%d].tls.acme (commented out)", i), *a, wantACME)
		}
	}
	if !tlsSeen {
		t.Error("config.yaml shows no tls block, not even commented out")
	}
	tlsSeen = false
	for i, p := range u.Pools {
		if p.TLS == nil {
			continue
		}
		tlsSeen = true
		same(fmt.Sprintf("pools[%d].tls (commented out)", i), *p.TLS, defaultBackendTLS())
	}
	if !tlsSeen {
		t.Error("config.yaml shows no pools[].tls block, not even commented out")
	}
}

// refStructKeys lists the key paths of t's yaml-tagged fields, depth first,
// descending into nested blocks, optional blocks (pointers) and lists of
// blocks ("[]"); maps and lists of scalars are leaves.
func refStructKeys(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		name := yamlName(t.Field(i))
		if name == "" {
			continue
		}
		p := key(prefix, name)
		out = append(out, p)
		ft := t.Field(i).Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct:
			out = append(out, refStructKeys(ft, p)...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			out = append(out, refStructKeys(ft.Elem(), p+"[]")...)
		}
	}
	return out
}

// refYAMLKeys returns every mapping key path in a YAML document, list items
// written "[]" as refStructKeys writes them. Maps of free-form keys
// (response_headers) are walked too, which only adds paths nobody asks for.
func refYAMLKeys(t *testing.T, data []byte) map[string]bool {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("config.yaml is not YAML: %v", err)
	}
	out := map[string]bool{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		n = deref(n)
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := key(path, n.Content[i].Value)
				out[p] = true
				walk(n.Content[i+1], p)
			}
		case yaml.SequenceNode:
			for _, c := range n.Content {
				walk(c, path+"[]")
			}
		}
	}
	walk(&doc, "")
	return out
}

// refCommentedKey matches a commented-out key line: indentation, "#", one
// optional space, then "key:" or "- key:" and the rest. Prose comments do
// not start with a lower-case key and a colon.
var refCommentedKey = regexp.MustCompile(`^(\s*)# ?(\s*(?:- )?[a-z_][a-z0-9_]*:.*)$`)

// refUncomment returns data with every commented-out key line uncommented:
// "    # tls:" becomes "    tls:" and "    #   cert: x" becomes "      cert: x",
// so the indentation written after the "#" gives the nesting.
func refUncomment(data []byte) []byte {
	lines := strings.Split(string(data), "\n")
	for i, l := range lines {
		if m := refCommentedKey.FindStringSubmatch(l); m != nil {
			lines[i] = m[1] + m[2]
		}
	}
	return []byte(strings.Join(lines, "\n"))
}
