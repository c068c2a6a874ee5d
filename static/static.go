// Package static serves the files of one folder for an l7 static route, as
// nginx's `root DIR; try_files $uri $uri/ /index.html;` does: a file, else a
// directory's index.html, else the folder's index.html (for single-page apps).
// The folder is an os.Root, so no request reaches a file outside it.
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
}

// New opens dir. Requests can never leave it: os.Root refuses "..", absolute
// names and symlinks that point outside, wherever they appear in a path.
func New(dir string) (*Handler, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("static folder: %w", err)
	}
	return &Handler{root: root}, nil
}

// Close releases the folder. A request that has already opened its file
// finishes normally; later ones get 404.
func (h *Handler) Close() error {
	return h.root.Close()
}

// ServeHTTP answers GET and HEAD with the file at r.URL.Path inside the folder
// (see the package doc for the order tried), 405 for other methods, and 404
// when not even the folder's index.html exists. Files are served with
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
	// Clean against "/" first so "." and ".." segments resolve inside the
	// folder (as http.Dir does), then make the name relative for os.Root.
	name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
	if name == "" {
		name = "."
	}
	for _, try := range []string{name, path.Join(name, "index.html"), "index.html"} {
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
