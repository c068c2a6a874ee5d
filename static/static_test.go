package static

import (
	"mime"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	indexHTML = "<!doctype html><title>home</title>\n"
	secret    = "secret outside the folder\n"
)

// testTree builds a folder to serve inside a temp dir that also holds a file
// outside it, and returns the folder and that file's path.
func testTree(t *testing.T, withIndex bool) (dir, outside string) {
	t.Helper()
	base := t.TempDir()
	outside = filepath.Join(base, "outside.txt")
	dir = filepath.Join(base, "site")
	files := map[string]string{
		"style.css":       "body { color: red }\n",
		"app.js":          "console.log(1)\n",
		"logo.svg":        `<svg xmlns="http://www.w3.org/2000/svg"></svg>`,
		"data.json":       `{"a": 1}`,
		"mod.wasm":        "\x00asm\x01\x00\x00\x00",
		"docs/index.html": "docs index\n",
		"empty/.keep":     "",
	}
	if withIndex {
		files["index.html"] = indexHTML
	}
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(outside, []byte(secret), 0o644); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		"relout.txt":    "../outside.txt", // relative, leaves the folder
		"absout.txt":    outside,          // absolute
		"inside.css":    "style.css",      // stays inside: allowed
		"docs/up.txt":   "../../outside.txt",
		"outdir":        base, // a directory outside: outdir/outside.txt must not resolve
		"docs/self.css": "../style.css",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dir, filepath.FromSlash(name))); err != nil {
			t.Skipf("symlinks not supported: %v", err)
		}
	}
	return dir, outside
}

func newHandler(t *testing.T, dir string) *Handler {
	t.Helper()
	return newHandlerFallback(t, dir, "/index.html")
}

// newHandlerFallback is newHandler with the route's fallback.
func newHandlerFallback(t *testing.T, dir, fallback string) *Handler {
	t.Helper()
	h, err := New(dir, fallback)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func serve(h http.Handler, method, target string, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestServe(t *testing.T) {
	dir, _ := testTree(t, true)
	h := newHandler(t, dir)
	tests := []struct {
		name   string
		target string
		types  []string // acceptable media types; nil: don't check
		body   string
	}{
		{name: "css", target: "/style.css", types: []string{"text/css"}, body: "body { color: red }\n"},
		// Go's built-in table says text/javascript; a host's mime.types may
		// say application/javascript. Browsers accept both under nosniff.
		{name: "js", target: "/app.js", types: []string{"text/javascript", "application/javascript"}, body: "console.log(1)\n"},
		{name: "svg", target: "/logo.svg", types: []string{"image/svg+xml"}, body: `<svg xmlns="http://www.w3.org/2000/svg"></svg>`},
		{name: "json", target: "/data.json", types: []string{"application/json"}, body: `{"a": 1}`},
		{name: "wasm", target: "/mod.wasm", types: []string{"application/wasm"}, body: "\x00asm\x01\x00\x00\x00"},
		{name: "html", target: "/index.html", types: []string{"text/html"}, body: indexHTML},
		{name: "root index", target: "/", types: []string{"text/html"}, body: indexHTML},
		{name: "directory index", target: "/docs/", types: []string{"text/html"}, body: "docs index\n"},
		{name: "directory index without slash", target: "/docs", types: []string{"text/html"}, body: "docs index\n"},
		{name: "directory without index falls back", target: "/empty/", types: []string{"text/html"}, body: indexHTML},
		{name: "unknown path falls back", target: "/app/settings/profile", types: []string{"text/html"}, body: indexHTML},
		{name: "unknown file falls back", target: "/missing.css", types: []string{"text/html"}, body: indexHTML},
		{name: "symlink inside", target: "/inside.css", types: []string{"text/css"}, body: "body { color: red }\n"},
		{name: "symlink up but inside", target: "/docs/self.css", types: []string{"text/css"}, body: "body { color: red }\n"},
		{name: "dot segments stay inside", target: "/docs/../style.css", types: []string{"text/css"}, body: "body { color: red }\n"},
		{name: "dot dot escape", target: "/../outside.txt", body: indexHTML},
		{name: "encoded dot dot escape", target: "/%2e%2e/outside.txt", body: indexHTML},
		{name: "relative symlink out", target: "/relout.txt", body: indexHTML},
		{name: "absolute symlink out", target: "/absout.txt", body: indexHTML},
		{name: "nested symlink out", target: "/docs/up.txt", body: indexHTML},
		{name: "through directory symlink out", target: "/outdir/outside.txt", body: indexHTML},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := serve(h, http.MethodGet, tt.target)
			if w.Code != http.StatusOK {
				t.Fatalf("status = %d; want 200", w.Code)
			}
			if got := w.Body.String(); got != tt.body {
				t.Errorf("body = %q; want %q", got, tt.body)
			}
			if strings.Contains(w.Body.String(), "secret") {
				t.Error("served a file from outside the folder")
			}
			if tt.types != nil {
				ct := w.Header().Get("Content-Type")
				mt, _, err := mime.ParseMediaType(ct)
				if err != nil || !slices.Contains(tt.types, mt) {
					t.Errorf("Content-Type = %q; want one of %q", ct, tt.types)
				}
			}
			if got := w.Header().Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options = %q; want nosniff", got)
			}
			if w.Header().Get("Last-Modified") == "" {
				t.Error("no Last-Modified")
			}
		})
	}
}

// serveFile is the last line of defence: even a name that was not cleaned
// cannot leave the folder.
func TestServeFileRefusesEscape(t *testing.T) {
	dir, outside := testTree(t, true)
	h := newHandler(t, dir)
	for _, name := range []string{"../outside.txt", outside, "relout.txt", "absout.txt", "outdir/outside.txt"} {
		w := httptest.NewRecorder()
		if h.serveFile(w, httptest.NewRequest(http.MethodGet, "/", nil), name) {
			t.Errorf("serveFile(%q) served %q", name, w.Body.String())
		}
	}
}

func TestHead(t *testing.T) {
	h := newHandler(t, folder(testTree(t, true)))
	w := serve(h, http.MethodHead, "/style.css")
	if w.Code != http.StatusOK {
		t.Fatalf("status = %d; want 200", w.Code)
	}
	if w.Body.Len() != 0 {
		t.Errorf("HEAD body = %q; want empty", w.Body.String())
	}
	if got := w.Header().Get("Content-Length"); got != "20" {
		t.Errorf("Content-Length = %q; want 20", got)
	}
}

func TestRange(t *testing.T) {
	h := newHandler(t, folder(testTree(t, true)))
	w := serve(h, http.MethodGet, "/style.css", "Range", "bytes=0-3")
	if w.Code != http.StatusPartialContent {
		t.Fatalf("status = %d; want 206", w.Code)
	}
	if got := w.Body.String(); got != "body" {
		t.Errorf("body = %q; want %q", got, "body")
	}
	if got := w.Header().Get("Content-Range"); got != "bytes 0-3/20" {
		t.Errorf("Content-Range = %q; want bytes 0-3/20", got)
	}
}

func TestIfModifiedSince(t *testing.T) {
	h := newHandler(t, folder(testTree(t, true)))
	since := time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)
	w := serve(h, http.MethodGet, "/style.css", "If-Modified-Since", since)
	if w.Code != http.StatusNotModified {
		t.Errorf("status = %d; want 304", w.Code)
	}
	if w.Body.Len() != 0 {
		t.Errorf("304 body = %q; want empty", w.Body.String())
	}
}

func TestMethodNotAllowed(t *testing.T) {
	h := newHandler(t, folder(testTree(t, true)))
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodOptions} {
		w := serve(h, m, "/style.css")
		if w.Code != http.StatusMethodNotAllowed {
			t.Errorf("%s: status = %d; want 405", m, w.Code)
		}
		if got := w.Header().Get("Allow"); got != "GET, HEAD" {
			t.Errorf("%s: Allow = %q; want %q", m, got, "GET, HEAD")
		}
	}
}

func TestNotFound(t *testing.T) {
	dir, _ := testTree(t, false)
	h := newHandler(t, dir)
	tests := []struct {
		name   string
		target string
		code   int
	}{
		{name: "unknown path", target: "/app/route", code: http.StatusNotFound},
		{name: "root", target: "/", code: http.StatusNotFound},
		{name: "escape", target: "/relout.txt", code: http.StatusNotFound},
		{name: "existing file still served", target: "/style.css", code: http.StatusOK},
		{name: "directory index still served", target: "/docs/", code: http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := serve(h, http.MethodGet, tt.target)
			if w.Code != tt.code {
				t.Fatalf("status = %d; want %d", w.Code, tt.code)
			}
			if tt.code != http.StatusNotFound {
				return
			}
			if got := w.Body.String(); got != "not found\n" {
				t.Errorf("body = %q; want one line", got)
			}
			if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type = %q; want text/plain", ct)
			}
		})
	}
}

// TestFallback: a path that is no file gets the route's fallback file
// (try_files $uri $uri/ FALLBACK), served with 200 as nginx does; a
// fallback that is a folder is served by its index.html; with fallback ""
// (nginx's plain root) it is 404, while files and folders' index.html are
// still served.
func TestFallback(t *testing.T) {
	dir, _ := testTree(t, true)
	if err := os.WriteFile(filepath.Join(dir, "app.html"), []byte("the app\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, fallback, target string
		code                   int
		body                   string
	}{
		{"index by default", "/index.html", "/app/route", http.StatusOK, indexHTML},
		{"another file", "/app.html", "/app/route?x=1", http.StatusOK, "the app\n"},
		{"a folder's index", "/docs/", "/no/such", http.StatusOK, "docs index\n"},
		{"a folder without slash", "/docs", "/no/such", http.StatusOK, "docs index\n"},
		{"files first", "/app.html", "/style.css", http.StatusOK, "body { color: red }\n"},
		{"a folder's own index first", "/app.html", "/docs/", http.StatusOK, "docs index\n"},
		{"missing fallback", "/missing.html", "/app/route", http.StatusNotFound, "not found\n"},
		{"fallback cannot escape", "/../outside.txt", "/app/route", http.StatusNotFound, "not found\n"},
		{"none: 404", "", "/app/route", http.StatusNotFound, "not found\n"},
		{"none: root index still served", "", "/", http.StatusOK, indexHTML},
		{"none: folder index still served", "", "/docs/", http.StatusOK, "docs index\n"},
		{"none: files still served", "", "/app.js", http.StatusOK, "console.log(1)\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := serve(newHandlerFallback(t, dir, tt.fallback), http.MethodGet, tt.target)
			if w.Code != tt.code || w.Body.String() != tt.body {
				t.Fatalf("GET %s with fallback %q: %d %q; want %d %q", tt.target, tt.fallback, w.Code, w.Body, tt.code, tt.body)
			}
		})
	}
}

func TestNULByte(t *testing.T) {
	h := newHandler(t, folder(testTree(t, true)))
	w := serve(h, http.MethodGet, "/style.css%00.html")
	if w.Code != http.StatusNotFound {
		t.Errorf("status = %d; want 404", w.Code)
	}
}

func TestNewErrors(t *testing.T) {
	dir, outside := testTree(t, true)
	for _, p := range []string{filepath.Join(dir, "missing"), outside} {
		if h, err := New(p, "/index.html"); err == nil {
			h.Close()
			t.Errorf("New(%q) succeeded; want an error", p)
		}
	}
}

// After Close no file is served any more, and nothing panics.
func TestClose(t *testing.T) {
	h, err := New(folder(testTree(t, true)), "/index.html")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if w := serve(h, http.MethodGet, "/style.css"); w.Code != http.StatusNotFound {
		t.Errorf("status after Close = %d; want 404", w.Code)
	}
}

// folder drops testTree's second result.
func folder(dir, _ string) string { return dir }
