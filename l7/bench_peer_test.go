package l7

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/wsraw"
	"github.com/wslb/wslb/xconnect"
)

// peerEnv, set in the environment, makes the test binary a benchmark's
// peer (runPeer) instead of running tests.
const peerEnv = "WSLB_L7_BENCH_PEER"

func TestMain(m *testing.M) {
	// As cmd/wslb does: RFC 8441 needs Go's HTTP/2 server started with it.
	if err := xconnect.Ensure(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if os.Getenv(peerEnv) != "" {
		if err := runPeer(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench peer:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// peer is the other half of a benchmark that counts wslb's costs alone: the
// test binary run again as a process of its own, holding the client and the
// backend, so that the benchmark's process holds wslb only and its system
// calls, context switches, CPU and allocations are wslb's.
type peer struct {
	// backend is the host:port of the peer's backend: plain GETs answered
	// "hello", and a WebSocket echo on any request that upgrades.
	backend string

	in  io.WriteCloser
	out *bufio.Reader
}

// startPeer starts a peer for b; it ends with b. The peer's own commands
// cost the benchmark's process a pipe write and read per batch of ops.
func startPeer(b *testing.B) *peer {
	b.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), peerEnv+"=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start the bench peer: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	b.Cleanup(func() {
		in.Close() // the peer exits at the end of its input
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	p := &peer{in: in, out: bufio.NewReader(out)}
	line, err := p.out.ReadString('\n')
	p.backend, _ = strings.CutPrefix(strings.TrimSpace(line), "backend ")
	if err != nil || p.backend == "" {
		b.Fatalf("bench peer: no backend address (read %q, %v)", line, err)
	}
	return p
}

// run has the peer's client do n ops of kind op ("get": a keep-alive GET
// on the client's one conn to addr; "ws": a WebSocket handshake on a new
// conn, one echo, the close) and returns when they are done.
func (p *peer) run(b *testing.B, op, addr string, n int) {
	b.Helper()
	if _, err := fmt.Fprintf(p.in, "%s %s %d\n", op, addr, n); err != nil {
		b.Fatalf("bench peer: %v", err)
	}
	line, err := p.out.ReadString('\n')
	if err != nil || line != "ok\n" {
		b.Fatalf("bench peer: %s %s %d: %q %v", op, addr, n, line, err)
	}
}

// runPeer is the peer process: it serves the backend, prints its address,
// then runs each command line it reads ("OP ADDR N") and answers "ok" or
// the error, until its input ends.
func runPeer(in io.Reader, out io.Writer) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	ws := echo.WSHandler(echo.WSOptions{})
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			ws.ServeHTTP(w, r)
			return
		}
		io.WriteString(w, "hello")
	}))
	fmt.Fprintf(out, "backend %s\n", ln.Addr())
	conns := map[string]*bufio.ReadWriter{} // keep-alive client conns, by address
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			return fmt.Errorf("bad command %q", sc.Text())
		}
		n, err := strconv.Atoi(f[2])
		if err != nil {
			return fmt.Errorf("bad command %q: %w", sc.Text(), err)
		}
		switch f[0] {
		case "get":
			err = peerGETs(conns, f[1], n)
		case "ws":
			err = peerHandshakes(f[1], n)
		default:
			err = fmt.Errorf("unknown op %q", f[0])
		}
		if err != nil {
			fmt.Fprintf(out, "%s: %v\n", f[0], err)
			continue
		}
		fmt.Fprintln(out, "ok")
	}
	return sc.Err()
}

// peerGETs sends n GETs to addr, one after the other, on the client's
// keep-alive conn to it, and reads each answer whole.
func peerGETs(conns map[string]*bufio.ReadWriter, addr string, n int) error {
	rw := conns[addr]
	if rw == nil {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		c.SetDeadline(time.Now().Add(10 * time.Minute))
		rw = bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c))
		conns[addr] = rw
	}
	for range n {
		rw.WriteString("GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
		if err := rw.Flush(); err != nil {
			return err
		}
		resp, err := http.ReadResponse(rw.Reader, nil)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
	}
	return nil
}

// peerHandshakes runs n WebSocket clients to addr one after the other: each
// connects, upgrades, has one message echoed, and closes with a close
// handshake, as the bench's loadgen handshake does.
func peerHandshakes(addr string, n int) error {
	msg := wsraw.Append(nil, wsraw.Frame{Fin: true, Op: wsraw.OpText, Masked: true, Key: [4]byte{1, 2, 3, 4}, Payload: []byte("hello")})
	bye := wsraw.Append(nil, wsraw.CloseFrame(1000, "", true, [4]byte{5, 6, 7, 8}))
	head := upgradeHead("/ws")
	for range n {
		if err := peerHandshake(addr, head, msg, bye); err != nil {
			return err
		}
	}
	return nil
}

func peerHandshake(addr, head string, msg, bye []byte) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, head); err != nil {
		return err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return fmt.Errorf("handshake: status %d", resp.StatusCode)
	}
	if _, err := c.Write(msg); err != nil {
		return err
	}
	if f, err := wsraw.Read(br, 1<<10); err != nil || string(f.Payload) != "hello" {
		return fmt.Errorf("echo: %v %v", f, err)
	}
	if _, err := c.Write(bye); err != nil {
		return err
	}
	if f, err := wsraw.Read(br, 1<<10); err != nil || f.Op != wsraw.OpClose {
		return fmt.Errorf("close: %v %v", f, err)
	}
	// The backend closes after its close frame; wait for it, so that the
	// proxy's side of this conn is over before the next one starts.
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("after close: %v", err)
	}
	return nil
}
