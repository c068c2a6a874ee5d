package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"gopkg.in/yaml.v3"

	"github.com/wslb/wslb/config"
	"github.com/wslb/wslb/internal/certtest"
	"github.com/wslb/wslb/internal/dnstest"
	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/loopback"
	"github.com/wslb/wslb/internal/syncbuf"
)

// The worked translations of docs/from-nginx.md and the README are run as
// written: each YAML block that follows a `<!-- recipe: ... -->` comment is
// loaded with its addresses, names and files swapped for loopback ones, and
// a WebSocket echo and a plain GET must go through it.

// recipeFiles hold the recipes, relative to this package.
var recipeFiles = []string{"../../docs/from-nginx.md", "../../README.md"}

// recipe is one annotated YAML block.
type recipe struct {
	file, title string
	line        int
	yaml        string
	listener    string // the listener to try
	ws, get     string // the paths to try
}

var (
	recipeComment = regexp.MustCompile(`^<!-- recipe: (.*) -->$`)
	recipeTitle   = regexp.MustCompile(`^#+ (.*)$`)
)

// readRecipes returns the recipes of the files, in order.
func readRecipes(t *testing.T) []recipe {
	t.Helper()
	var out []recipe
	for _, f := range recipeFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(data), "\n")
		title := ""
		for i := 0; i < len(lines); i++ {
			if m := recipeTitle.FindStringSubmatch(lines[i]); m != nil {
				title = m[1]
			}
			m := recipeComment.FindStringSubmatch(lines[i])
			if m == nil {
				continue
			}
			r := recipe{file: filepath.Base(f), title: title, line: i + 1}
			for _, kv := range strings.Fields(m[1]) {
				k, v, _ := strings.Cut(kv, "=")
				switch k {
				case "listener":
					r.listener = v
				case "ws":
					r.ws = v
				case "get":
					r.get = v
				default:
					t.Fatalf("%s:%d: unknown recipe key %q", f, i+1, k)
				}
			}
			if i+1 >= len(lines) || lines[i+1] != "```yaml" {
				t.Fatalf("%s:%d: a recipe comment must be followed by a yaml block", f, i+1)
			}
			end := i + 2
			for end < len(lines) && lines[end] != "```" {
				end++
			}
			r.yaml = strings.Join(lines[i+2:end], "\n")
			out = append(out, r)
			i = end
		}
	}
	return out
}

// TestRecipes runs every worked translation of docs/from-nginx.md and the
// README: wslb starts on its YAML, and a WebSocket echo and a plain GET go
// through the listener the recipe names, over TLS when it has tls, to
// backends that speak TLS when their pool has tls, found by name through a
// DNS server when they are written as names.
func TestRecipes(t *testing.T) {
	recipes := readRecipes(t)
	if len(recipes) < 7 {
		t.Fatalf("found %d recipes, want the 6 of docs/from-nginx.md and the README's", len(recipes))
	}
	for _, r := range recipes {
		t.Run(fmt.Sprintf("%s:%d %s", r.file, r.line, r.title), func(t *testing.T) {
			rig := newRecipeRig(t)
			path := rig.rewrite(r)
			cfg, err := config.Load(path)
			if err != nil {
				t.Fatalf("the recipe, rewritten for the test, does not load: %v\n%s", err, readFile(t, path))
			}
			var logs syncbuf.Buffer
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("wslb's log:\n%s", logs.String())
				}
			})
			startServeLogged(t, cfg, serveOptions{path: path}, &logs)
			addr, secure := rig.listeners[r.listener], rig.secure[r.listener]
			if addr == "" {
				t.Fatalf("no listener %q in the recipe", r.listener)
			}
			rig.get(addr, secure, r.get)
			rig.echo(addr, secure, r.ws)
		})
	}
}

// recipeRig is what a recipe runs against: a DNS server for its names, a
// CA for its certificates, and the backends and listeners it was given.
type recipeRig struct {
	t         *testing.T
	dns       *dnstest.Server
	ca        *certtest.CA
	dir       string
	listeners map[string]string // name -> the loopback address it listens on
	secure    map[string]bool   // name -> it has tls
	backends  int
}

func newRecipeRig(t *testing.T) *recipeRig {
	return &recipeRig{t: t, dns: dnstest.Start(t), ca: certtest.NewCA(t), dir: t.TempDir(),
		listeners: map[string]string{}, secure: map[string]bool{}}
}

// rewrite writes r's YAML with every address, name and file swapped for a
// loopback or test one, and returns the file's path.
func (g *recipeRig) rewrite(r recipe) string {
	t := g.t
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(r.yaml), &doc); err != nil {
		t.Fatalf("the recipe is not YAML: %v", err)
	}
	root := doc.Content[0]
	setKey(root, "admin", &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{scalar("listen"), scalar("")}})
	// The test's end drains: at once, not after the default 30 s.
	setKey(root, "shutdown", &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
		scalar("drain_timeout"), scalar("0s"), scalar("close_spread"), scalar("0s")}})
	resolver := mapping(root, "resolver")
	setKey(resolver, "servers", &yaml.Node{Kind: yaml.SequenceNode, Content: []*yaml.Node{scalar(g.dns.Addr())}})
	for _, l := range items(child(root, "listeners")) {
		g.listener(l)
	}
	for _, p := range items(child(root, "pools")) {
		g.pool(p)
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(g.dir, "config.yaml")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// listener gives l loopback addresses, a test certificate and a static
// folder with an index.html.
func (g *recipeRig) listener(l *yaml.Node) {
	name := child(l, "name").Value
	listen := child(l, "listen")
	addrs := []*yaml.Node{listen}
	if listen.Kind == yaml.SequenceNode {
		addrs = listen.Content
	}
	for i, a := range addrs {
		a.Value, a.Style = loopback.FreeAddr(g.t), 0
		if i == 0 {
			g.listeners[name] = a.Value
		}
	}
	if tl := child(l, "tls"); tl != nil {
		g.secure[name] = true
		cert, key := certtest.Write(g.t, g.ca.Issue(g.t, certtest.Leaf{Names: []string{"127.0.0.1", "localhost"}}))
		setKey(tl, "cert", scalar(cert))
		setKey(tl, "key", scalar(key))
	}
	for _, rt := range items(child(l, "routes")) {
		if st := child(rt, "static"); st != nil {
			dir := filepath.Join(g.dir, "static-"+name)
			os.MkdirAll(dir, 0o755)
			os.WriteFile(filepath.Join(dir, "index.html"), []byte("<!doctype html><title>static</title>"), 0o644)
			st.Value = dir
		}
	}
}

// pool starts a backend for each of p's addresses and discovery entries,
// speaking TLS when p has tls, and points p at them: an IP address becomes
// the backend's, a name keeps its text and is served by the DNS server
// (localhost by /etc/hosts).
func (g *recipeRig) pool(p *yaml.Node) {
	tl := child(p, "tls")
	if tl != nil {
		setKey(tl, "ca", scalar(g.ca.WriteRoots(g.t)))
	}
	for _, b := range items(child(p, "backends")) {
		a := child(b, "address")
		host, _, err := net.SplitHostPort(a.Value)
		if err != nil {
			g.t.Fatalf("backend address %q: %v", a.Value, err)
		}
		port := g.backend(host, tl != nil)
		if _, err := netip.ParseAddr(host); err == nil {
			host = "127.0.0.1"
		} else if host != "localhost" {
			g.dns.SetAddrs(host, "127.0.0.1")
		}
		a.Value = net.JoinHostPort(host, strconv.Itoa(port))
	}
	for _, d := range items(child(p, "discovery")) {
		if srv := child(d, "srv"); srv != nil {
			target := fmt.Sprintf("srv-%d.test", g.backends)
			port := g.backend(target, tl != nil)
			g.dns.SetSRV(srv.Value, dnstest.SRV{Target: target, Port: uint16(port), Weight: 1})
			g.dns.SetAddrs(target, "127.0.0.1")
			continue
		}
		name := child(d, "name")
		g.dns.SetAddrs(name.Value, "127.0.0.1")
		setKey(d, "port", scalar(strconv.Itoa(g.backend(name.Value, tl != nil))))
	}
}

// backend starts one backend on loopback for the name host (its TLS
// certificate's name, when secure) and returns its port: a WebSocket echo
// on every path, and 200 for any other request.
func (g *recipeRig) backend(host string, secure bool) int {
	g.backends++
	name := fmt.Sprintf("backend-%d", g.backends)
	ws := echo.WSHandler(echo.WSOptions{Name: name})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			ws.ServeHTTP(w, r)
			return
		}
		io.WriteString(w, "hello from "+name)
	})
	srv := httptest.NewUnstartedServer(h)
	if secure {
		// Only the name the backend was written with: wslb must verify it
		// against that name, not the address it resolved to.
		if _, err := netip.ParseAddr(host); err == nil {
			host = "127.0.0.1"
		}
		cert := g.ca.Issue(g.t, certtest.Leaf{Names: []string{host}})
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		srv.StartTLS()
	} else {
		srv.Start()
	}
	g.t.Cleanup(srv.Close)
	return srv.Listener.Addr().(*net.TCPAddr).Port
}

// client trusts the rig's CA, as a browser trusts the site's.
func (g *recipeRig) client() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: g.ca.Pool()},
	}}
}

// get expects a 200 for path on the listener at addr.
func (g *recipeRig) get(addr string, secure bool, path string) {
	t := g.t
	resp, err := g.client().Get(scheme(secure, "http") + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
}

// echo expects a WebSocket at path on the listener at addr to echo.
func (g *recipeRig) echo(addr string, secure bool, path string) {
	t := g.t
	c := dialWS(t.Context(), t, scheme(secure, "ws")+addr+path, &websocket.DialOptions{HTTPClient: g.client()})
	defer c.CloseNow()
	wsEcho(t.Context(), t, c, "hello through "+path)
}

// scheme is proto's scheme, with s when secure, and "://".
func scheme(secure bool, proto string) string {
	if secure {
		return proto + "s://"
	}
	return proto + "://"
}

func readFile(t *testing.T, path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// child is the value of key in the mapping m, or nil.
func child(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// mapping is the mapping at key in m, made when missing.
func mapping(m *yaml.Node, key string) *yaml.Node {
	if c := child(m, key); c != nil {
		return c
	}
	c := &yaml.Node{Kind: yaml.MappingNode}
	setKey(m, key, c)
	return c
}

// setKey sets key in the mapping m to v.
func setKey(m *yaml.Node, key string, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = v
			return
		}
	}
	m.Content = append(m.Content, scalar(key), v)
}

// items are the entries of the sequence s (none when s is nil).
func items(s *yaml.Node) []*yaml.Node {
	if s == nil {
		return nil
	}
	return s.Content
}

func scalar(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: v} }
