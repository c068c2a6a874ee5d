package admin

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"time"

	"github.com/wslb/wslb/config"
)

// Listen binds the admin listener's address: host:port over TCP, or
// unix:PATH, a socket file made readable and writable by its owner and
// group only (0660) and removed when the listener is closed.
func Listen(addr string) (net.Listener, error) {
	path, ok := config.UnixPath(addr)
	if !ok {
		return net.Listen("tcp", addr)
	}
	if err := clearStale(path); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	// After the bind, since the socket's mode comes from the umask; the
	// folder's own mode is what guards the instant in between.
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return ln, nil
}

// clearStale removes the socket file a crashed wslb left at path, and
// refuses a path that is another file, or a socket a live process
// still accepts on: two processes must not share an admin socket, and a
// typo must not delete a file.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket: remove it or choose another admin.listen path", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("%s: another process listens on this socket (is another wslb running?)", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove the stale socket %s: %w", path, err)
	}
	return nil
}
