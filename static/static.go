// Package static serves the files of one folder for an l7 static route, as
// nginx's `root DIR; try_files $uri $uri/ /index.html;` does: a file, else a
// directory's index.html, else the route's fallback file (the folder's
// index.html unless configured, for single-page apps), or with no fallback
// 404 (plain `root`). The folder is an os.Root, so no request reaches a file
// outside it.
package static

import (
	"fmt"
	"net/http"
	"os"
	"path"
	"strings"
)

// Handler serves one folder. It is safe for concurrent use; Close it when the
// route it serves goes away.
type Handler struct {
	root *os.Root
	// fallback is tried for a path that is no file: the route's fallback
	// and, for a folder, its index.html, as names inside root; none for "".
	fallback []string
}

// New opens dir. Requests can never leave it: os.Root refuses "..", absolute
// names and symlinks that point outside, wherever they appear in a path.
// fallback (routes[].fallback, such as "/index.html") is the file served for
// a path that is neither a file nor a folder with an index.html; "" means
// 404 instead.
func New(dir, fallback string) (*Handler, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("static folder: %w", err)
	}
	h := &Handler{root: root}
	if fallback != "" {
		name := relative(fallback)
		h.fallback = []string{name, path.Join(name, "index.html")}
	}
	return h, nil
}

// relative turns a path of a request or of the config into a name inside
// the folder: "." and ".." segments resolved within it (as http.Dir does),
// then made relative for os.Root.
func relative(p string) string {
	name := strings.TrimPrefix(path.Clean("/"+p), "/")
	if name == "" {
		return "."
	}
	return name
}

// Close releases the folder. A request that has already opened its file
// finishes normally; later ones get 404.
func (h *Handler) Close() error {
	return h.root.Close()
}

// ServeHTTP answers GET and HEAD with the file at r.URL.Path inside the folder
// (see the package doc for the order tried), 405 for other methods, and 404
// when not even the fallback file exists. Files are served with
// http.ServeContent, so Range, If-Modified-Since and HEAD work.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// A static site never needs browsers to guess types; guessing is how an
	// uploaded .txt becomes a script.
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if strings.IndexByte(r.URL.Path, 0) >= 0 {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	name := relative(r.URL.Path)
	for _, try := range []string{name, path.Join(name, "index.html")} {
		if h.serveFile(w, r, try) {
			return
		}
	}
	for _, try := range h.fallback {
		if h.serveFile(w, r, try) {
			return
		}
	}
	http.Error(w, "not found", http.StatusNotFound)
}

// serveFile serves name if it is a regular file and reports whether it did.
// Any failure to open it (missing, a directory, outside the folder, no
// permission) means "try the next name": callers never see an error text,
// which could name a path.
func (h *Handler) serveFile(w http.ResponseWriter, r *http.Request, name string) bool {
	// Stat before Open: opening a FIFO or a device for reading can block or
	// have side effects, and only regular files are ever served.
	if fi, err := h.root.Stat(name); err != nil || !fi.Mode().IsRegular() {
		return false
	}
	f, err := h.root.Open(name)
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat() // the file actually opened, in case name changed since
	if err != nil || !fi.Mode().IsRegular() {
		return false
	}
	http.ServeContent(w, r, path.Base(name), fi.ModTime(), f)
	return true
}

// Handler must stay an http.Handler: l7 mounts it as one.
var _ http.Handler = (*Handler)(nil)
