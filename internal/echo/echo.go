// Package echo runs the echo backends that tests put behind wslb, on
// 127.0.0.1 for the length of a test: a WebSocket echo (WS, or WSHandler in
// a server of the test's own) and a TCP echo (TCP). A TCP backend that does
// something else is a tcptest.Serve with the test's own function.
package echo

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/coder/websocket"

	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
)

// TCP is a TCP echo server: every byte a conn sends comes back on it, and
// the conn is closed once the client has half-closed it.
func TCP(t testing.TB) *tcptest.Server {
	t.Helper()
	return tcptest.Serve(t, func(c net.Conn) { io.Copy(c, c) })
}

// WSOptions are the hooks of a WebSocket echo. The zero value echoes every
// message, text or binary, as it came.
type WSOptions struct {
	// Name, if set, makes the server greet a client that connects with
	// ?hello=1 with one text message, "connected to NAME", before the
	// echo, as wslb demo's backends do, so that a test sees who answered.
	Name string
	// OnRequest, if set, is called with every upgrade request, before the
	// answer (to record what wslb forwarded, say).
	OnRequest func(r *http.Request)
	// Reply, if set, makes the answer to each message of the conn that r
	// opened, in place of the message itself.
	Reply func(r *http.Request, msg []byte) []byte
	// Drop, if set, is a message that makes the server drop its conn, with
	// no close frame, instead of answering.
	Drop string
	// OnClose, if set, is called when a conn ends on a read error, with the
	// status of the client's close frame, or -1 if none came.
	OnClose func(websocket.StatusCode)
	// TLS, if set, makes WS serve wss with it (its certificate, and the
	// client certificates it asks for); WSHandler ignores it.
	TLS *tls.Config
}

// readLimit is the largest message a WebSocket echo takes: more than any
// test sends.
const readLimit = 64 << 20

// WS starts a WebSocket echo on a free loopback port and returns its
// host:port. Any path upgrades; origins are not checked. When the test ends
// the server is closed, its WebSocket conns with it, and WS's cleanup waits
// up to 5 s for their handlers to return.
func WS(t testing.TB, o WSOptions) string {
	t.Helper()
	return WSOn(t, "127.0.0.1:0", o)
}

// WSOn is WS on addr, a loopback address: another IP of 127.0.0.0/8
// (127.0.0.2:0) for backends that must differ by IP, as those whose agents
// share a port do.
func WSOn(t testing.TB, addr string, o WSOptions) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	// A hijacked conn is not closed by the server's Close, but its
	// request's context ends with the base context, and a WebSocket read
	// whose context ends closes the conn.
	ctx, cancel := context.WithCancel(context.Background())
	var handlers sync.WaitGroup
	h := WSHandler(o)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handlers.Add(1)
		defer handlers.Done()
		h.ServeHTTP(w, r)
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Config.BaseContext = func(net.Listener) context.Context { return ctx }
	if o.TLS != nil {
		srv.TLS = o.TLS.Clone()
		// A refused handshake is what a test of it is about, not news.
		srv.Config.ErrorLog = log.New(io.Discard, "", 0)
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(func() {
		srv.Close() // no handler starts after this: every one has returned or hijacked
		cancel()
		wait.Group(t, "a WebSocket echo handler", &handlers)
	})
	return srv.Listener.Addr().String()
}

// WSHandler is WS's handler, for a test that runs its own server (one that
// counts conns, or dies and comes back on the same port). A conn lives
// until the client ends it or r's context ends.
func WSHandler(o WSOptions) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o.OnRequest != nil {
			o.OnRequest(r)
		}
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(readLimit)
		ctx := r.Context()
		if o.Name != "" && r.URL.Query().Get("hello") == "1" {
			if err := c.Write(ctx, websocket.MessageText, []byte("connected to "+o.Name)); err != nil {
				return
			}
		}
		for {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				if o.OnClose != nil {
					o.OnClose(websocket.CloseStatus(err))
				}
				return
			}
			if o.Drop != "" && string(msg) == o.Drop {
				return
			}
			if o.Reply != nil {
				msg = o.Reply(r, msg)
			}
			if err := c.Write(ctx, typ, msg); err != nil {
				return
			}
		}
	})
}
