// Command backend is the test backend that proctest runs in a process of
// its own: a WebSocket echo that greets with its name, and plain HTTP
// answers, either of which fails on request (see handler and act).
//
//	backend NAME ADDR
//
// It prints proctest.Listening and the address it bound once it listens,
// and exits when its stdin closes.
package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"

	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/proctest"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: backend NAME ADDR")
		os.Exit(2)
	}
	os.Exit(serve(os.Args[1], os.Args[2]))
}

// serve is the backend's life: it listens on addr, prints the address
// it bound and serves until its stdin closes. It returns the exit code.
func serve(name, addr string) int {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("%s%s\n", proctest.Listening, ln.Addr())
	// The test process holds the other end of stdin: its EOF is the test's
	// end, however it ended.
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	srv := &http.Server{
		Handler: handler(name),
		// The fault answers act on the raw conn.
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
		// A test cuts conns on purpose; net/http's complaints are noise.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	err = srv.Serve(ln)
	fmt.Fprintln(os.Stderr, err)
	return 1
}

// connKey is the request context key of the request's net.Conn.
type connKey struct{}

// handler answers as the backend called name:
//
//   - a request whose query has send or then acts on its conn as act says,
//     instead of an answer of net/http's, an upgrade request included;
//   - a WebSocket upgrade is an echo (internal/echo) that greets a ?hello=1
//     client with "connected to NAME", and a message of proctest.FaultPrefix
//     and a query acts on the tunnel as act says instead of being echoed;
//   - any other request gets 200 "ok".
func handler(name string) http.Handler {
	ws := echo.WSHandler(echo.WSOptions{Name: name, Reply: func(r *http.Request, msg []byte) []byte {
		if q, ok := bytes.CutPrefix(msg, []byte(proctest.FaultPrefix)); ok {
			v, _ := url.ParseQuery(string(q))
			act(r.Context().Value(connKey{}).(net.Conn), v.Get("send"), v.Get("then"))
		}
		return msg // for a fault, its write fails on the closed conn and the handler returns
	}})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		switch {
		case q.Has("send") || q.Has("then"):
			c, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			act(c, q.Get("send"), q.Get("then"))
		case r.Header.Get("Upgrade") != "":
			ws.ServeHTTP(w, r)
		default:
			w.Write([]byte("ok\n"))
		}
	})
}

// What act may send before it does what then says.
var sends = map[string]string{
	"": "",
	// A status line and some headers, without the blank line that ends them.
	"head": "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n",
	// A whole head promising 100 bytes, and 10 of them.
	"partial": "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n0123456789",
	// A chunked head and one chunk of 10 bytes, with no last chunk.
	"chunk": "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n",
	// The header of a WebSocket text frame of 5 bytes, and 2 of them.
	"half": "\x81\x05he",
}

// act writes what send names on c, then, as then says: waits for the peer
// to close c, reading and dropping what it sends ("wait" or ""), closes c
// ("close": a FIN), or resets it ("rst": SO_LINGER 0, then close). It
// returns once c is closed.
func act(c net.Conn, send, then string) {
	defer c.Close()
	b, ok := sends[send]
	if !ok {
		fmt.Fprintf(os.Stderr, "proctest: unknown send=%q\n", send)
		return
	}
	if _, err := io.WriteString(c, b); err != nil {
		return
	}
	switch then {
	case "close":
	case "rst":
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
	default:
		io.Copy(io.Discard, c)
	}
}
