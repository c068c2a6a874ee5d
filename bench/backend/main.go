// Command backend is one server of the benchmark fleet (bench/run.sh starts
// three). It is not part of wslb.
//
// On -http it serves GET / with a 5-byte body ("hello", with Content-Length)
// and a WebSocket echo at /ws (every message is sent back as it came). On -tcp
// it serves raw TCP for the l4 runs, choosing by the first byte the client
// sends:
//
//	'e'  echo: every byte after it is sent back (idle sample checks)
//	's'  sink: every byte after it is discarded; when the client half-closes,
//	     the count of discarded bytes is sent as a decimal line, then the
//	     conn closes (bulk throughput)
//
// Anything else, or a conn closed before its first byte (a health check),
// is closed at once.
//
// GET /accepts on -http lists the conns its HTTP listener accepted in each
// 100 ms window of the last two minutes, as JSON {"window_ms": 100,
// "windows": {"UNIX_MS_OF_WINDOW": COUNT, ...}} (empty windows left out):
// the reconnect storm (bench/storm.sh) sums them over the fleet for its peak
// accept rate.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

func main() {
	httpAddr := flag.String("http", "127.0.0.1:19001", "HTTP and WebSocket address")
	tcpAddr := flag.String("tcp", "127.0.0.1:19011", "raw TCP (echo/sink) address, \"\" for none")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("backend " + *httpAddr + ": ")

	hl, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		log.Fatal(err)
	}
	acc := &acceptCounter{Listener: hl}
	mux := http.NewServeMux()
	mux.HandleFunc("/", serveHTTP)
	mux.Handle("GET /accepts", acc)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second}
	go func() {
		if err := srv.Serve(acc); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Fatal(err)
		}
	}()
	var tl net.Listener
	if *tcpAddr != "" {
		tl, err = net.Listen("tcp", *tcpAddr)
		if err != nil {
			log.Fatal(err)
		}
		go serveTCP(tl)
	}
	log.Printf("listening: http %s, tcp %s", *httpAddr, *tcpAddr)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	if tl != nil {
		tl.Close()
	}
	srv.Close()
}

var hello = []byte("hello")

func serveHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/ws":
		echoWS(w, r)
	default:
		h := w.Header()
		h.Set("Content-Type", "text/plain")
		h.Set("Content-Length", "5")
		w.Write(hello)
	}
}

// echoWS sends every message back, reusing one buffer per conn.
func echoWS(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	// Background: the conn lives until the client goes; a close frame or a
	// broken conn ends the loop.
	ctx := context.Background()
	buf := make([]byte, 0, 512)
	for {
		typ, rd, err := c.Reader(ctx)
		if err != nil {
			return
		}
		buf, err = readAll(rd, buf[:0])
		if err != nil {
			return
		}
		if err := c.Write(ctx, typ, buf); err != nil {
			return
		}
	}
}

// readAll reads rd to its end into buf's memory, which is reused message
// after message (io.ReadAll would allocate anew each time).
func readAll(rd io.Reader, buf []byte) ([]byte, error) {
	b := bytes.NewBuffer(buf[:0])
	_, err := b.ReadFrom(rd)
	return b.Bytes(), err
}

func serveTCP(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			log.Printf("tcp accept: %v", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go handleTCP(c.(*net.TCPConn))
	}
}

func handleTCP(c *net.TCPConn) {
	defer c.Close()
	var first [1]byte
	if _, err := io.ReadFull(c, first[:]); err != nil {
		return
	}
	switch first[0] {
	case 'e':
		// A plain loop: io.Copy(c, c) would splice and hold a pipe per conn.
		buf := make([]byte, 4<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	case 's':
		n, err := sink(c)
		if err != nil {
			return
		}
		w := bufio.NewWriter(c)
		fmt.Fprintf(w, "%s\n", strconv.FormatInt(n, 10))
		w.Flush()
		c.CloseWrite()
		// Wait for the client to close, so the client, not this side, holds
		// the TIME_WAIT (bounded: the client closes right after the count).
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, c)
	}
}

// sink reads until EOF and returns the count.
func sink(c *net.TCPConn) (int64, error) {
	buf := make([]byte, 256<<10)
	var n int64
	for {
		m, err := c.Read(buf)
		n += int64(m)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// acceptWindow is the width of the windows acceptCounter counts in, and
// acceptWindows how many it keeps (two minutes).
const (
	acceptWindow  = 100 * time.Millisecond
	acceptWindows = 1200
)

// acceptCounter is a net.Listener that counts its accepts per 100 ms window
// in a ring of the last acceptWindows windows.
type acceptCounter struct {
	net.Listener
	mu     sync.Mutex
	starts [acceptWindows]int64 // unix ms of the window each slot counts
	counts [acceptWindows]int
}

func (a *acceptCounter) Accept() (net.Conn, error) {
	c, err := a.Listener.Accept()
	if err == nil {
		w := time.Now().Truncate(acceptWindow).UnixMilli()
		i := (w / acceptWindow.Milliseconds()) % acceptWindows
		a.mu.Lock()
		if a.starts[i] != w {
			a.starts[i], a.counts[i] = w, 0
		}
		a.counts[i]++
		a.mu.Unlock()
	}
	return c, err
}

// ServeHTTP is GET /accepts.
func (a *acceptCounter) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	oldest := time.Now().Add(-acceptWindows * acceptWindow).UnixMilli()
	out := struct {
		WindowMS int64          `json:"window_ms"`
		Windows  map[string]int `json:"windows"`
	}{WindowMS: acceptWindow.Milliseconds(), Windows: map[string]int{}}
	a.mu.Lock()
	for i, start := range a.starts {
		if start > oldest && a.counts[i] > 0 {
			out.Windows[strconv.FormatInt(start, 10)] = a.counts[i]
		}
	}
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}
