package l7

import (
	"bytes"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/wslb/wslb/internal/wsraw"
	"github.com/wslb/wslb/wsframe"
)

// rawH2Client is a raw RFC 8441 client: an h2 conn driven frame by frame with
// x/net's Framer, so that a test sees exactly what wslb sends (the
// SETTINGS, each stream's :status, its DATA and RST_STREAM).
type rawH2Client struct {
	t        *testing.T
	fr       *http2.Framer
	settings map[http2.SettingID]uint32 // the server's first SETTINGS
	wmu      sync.Mutex
	enc      *hpack.Encoder
	encBuf   bytes.Buffer
	next     uint32 // the next stream id

	mu      sync.Mutex
	streams map[uint32]*rawH2Stream
	goAway  chan struct{}
	done    chan struct{} // the read loop ended
	closing atomic.Bool   // the test is over: the conn is being closed
}

// rawH2Stream is one stream's answer: its head, then its DATA.
type rawH2Stream struct {
	head chan http.Header // the decoded response head, with ":status"
	body *streamBody
	bw   *streamBody
}

// streamBody is a stream's DATA as the read loop got it, buffered so that
// the loop never waits for a test to read.
type streamBody struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	err  error
	more chan struct{} // a hint: bytes or the end came
}

func newStreamBody() *streamBody { return &streamBody{more: make(chan struct{}, 1)} }

func (b *streamBody) Write(p []byte) (int, error) {
	b.mu.Lock()
	b.buf.Write(p)
	b.mu.Unlock()
	b.hint()
	return len(p), nil
}

func (b *streamBody) hint() {
	select {
	case b.more <- struct{}{}:
	default:
	}
}

// CloseWithError ends the body: reads get err once the bytes are taken.
func (b *streamBody) CloseWithError(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.mu.Unlock()
	b.hint()
}

func (b *streamBody) Close() { b.CloseWithError(io.EOF) }

// Read waits, without limit (the callers bound it), for bytes or the end.
func (b *streamBody) Read(p []byte) (int, error) {
	for {
		b.mu.Lock()
		if b.buf.Len() > 0 {
			n, _ := b.buf.Read(p)
			b.mu.Unlock()
			return n, nil
		}
		err := b.err
		b.mu.Unlock()
		if err != nil {
			return 0, err
		}
		<-b.more
	}
}

// dialRawH2 opens an h2 conn to addr over TLS (trusting roots) as dialH2
// does, and reads it from then on in a loop of its own.
func dialRawH2(t *testing.T, addr string, roots *x509.CertPool) *rawH2Client {
	t.Helper()
	h := dialH2(t, addr, roots)
	c := &rawH2Client{t: t, fr: h.fr, settings: h.settings, next: 1,
		streams: map[uint32]*rawH2Stream{}, goAway: make(chan struct{}), done: make(chan struct{})}
	c.enc = hpack.NewEncoder(&c.encBuf)
	go c.readLoop()
	t.Cleanup(func() {
		c.closing.Store(true)
		h.conn.Close()
		<-c.done
	})
	return c
}

// write runs one frame write under the write lock.
func (c *rawH2Client) write(f func() error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := f(); err != nil && !c.closing.Load() {
		// Once the test ends the read loop may still be acking a frame
		// that came as the conn was closed.
		c.t.Errorf("h2 write: %v", err)
	}
}

// readLoop reads frames until the conn ends: heads and DATA go to their
// streams, DATA is credited back at once, SETTINGS and PINGs are acked.
func (c *rawH2Client) readLoop() {
	defer close(c.done)
	defer c.closeAll(io.ErrUnexpectedEOF)
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			s := c.stream(f.StreamID)
			h := http.Header{}
			for _, hf := range f.Fields {
				h.Add(hf.Name, hf.Value)
			}
			if s != nil {
				s.head <- h
				if f.StreamEnded() {
					s.bw.Close()
				}
			}
		case *http2.DataFrame:
			s := c.stream(f.StreamID)
			if n := uint32(len(f.Data())); n > 0 {
				c.write(func() error { return c.fr.WriteWindowUpdate(0, n) })
				if !f.StreamEnded() {
					c.write(func() error { return c.fr.WriteWindowUpdate(f.StreamID, n) })
				}
			}
			if s != nil {
				_, _ = s.bw.Write(f.Data())
				if f.StreamEnded() {
					s.bw.Close()
				}
			}
		case *http2.RSTStreamFrame:
			if s := c.stream(f.StreamID); s != nil {
				s.bw.CloseWithError(http2.StreamError{StreamID: f.StreamID, Code: f.ErrCode})
			}
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.write(func() error { return c.fr.WriteSettingsAck() })
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				c.write(func() error { return c.fr.WritePing(true, f.Data) })
			}
		case *http2.GoAwayFrame:
			select {
			case <-c.goAway:
			default:
				close(c.goAway)
			}
		}
	}
}

func (c *rawH2Client) stream(id uint32) *rawH2Stream {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.streams[id]
}

func (c *rawH2Client) closeAll(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.streams {
		s.bw.CloseWithError(err)
	}
}

// open starts a stream with the fields given in order (pseudo-headers
// first), without ending it, and returns its id.
func (c *rawH2Client) open(fields ...string) (uint32, *rawH2Stream) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	id := c.next
	c.next += 2
	body := newStreamBody()
	s := &rawH2Stream{head: make(chan http.Header, 1), body: body, bw: body}
	c.mu.Lock()
	c.streams[id] = s
	c.mu.Unlock()
	c.encBuf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		_ = c.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.encBuf.Bytes(), EndHeaders: true}); err != nil {
		c.t.Fatalf("write HEADERS: %v", err)
	}
	return id, s
}

// connect opens an extended CONNECT for path with protocol and the extra
// fields, and waits for its answer's head.
func (c *rawH2Client) connect(path, protocol string, extra ...string) (uint32, *rawH2Stream, http.Header) {
	c.t.Helper()
	fields := []string{":method", "CONNECT", ":protocol", protocol, ":scheme", "https", ":path", path,
		":authority", "localhost", "sec-websocket-version", "13"}
	id, s := c.open(append(fields, extra...)...)
	return id, s, s.awaitHead(c.t)
}

// awaitHead waits for the stream's response head.
func (s *rawH2Stream) awaitHead(t *testing.T) http.Header {
	t.Helper()
	select {
	case h := <-s.head:
		return h
	case <-time.After(10 * time.Second):
		t.Fatal("no response head within 10s")
		return nil
	}
}

// status is a head's :status.
func status(t *testing.T, h http.Header) int {
	t.Helper()
	n, err := strconv.Atoi(h.Get(":status"))
	if err != nil {
		t.Fatalf("head without a :status: %v", h)
	}
	return n
}

// send writes p as DATA on stream id.
func (c *rawH2Client) send(id uint32, p []byte) {
	c.write(func() error { return c.fr.WriteData(id, false, p) })
}

// sendText sends a masked text frame (a client's) with msg on stream id.
func (c *rawH2Client) sendText(id uint32, msg string) {
	c.send(id, maskedFrame(0x1, []byte(msg)))
}

// maskedFrame is a client WebSocket frame of op with payload (< 64 KiB).
func maskedFrame(op byte, payload []byte) []byte {
	return wsraw.Append(nil, wsraw.Frame{Fin: true, Op: op, Masked: true, Key: [4]byte{1, 2, 3, 4}, Payload: payload})
}

// wsMessage is one unmasked frame a server sent.
type wsMessage struct {
	op      wsframe.Opcode
	payload []byte
}

// readFrame reads one unmasked WebSocket frame (< 64 KiB) from the stream,
// within 10 s.
func (s *rawH2Stream) readFrame(t *testing.T) (wsMessage, error) {
	t.Helper()
	type result struct {
		m   wsMessage
		err error
	}
	ch := make(chan result, 1)
	go func() {
		f, err := wsraw.Read(s.body, 1<<16)
		ch <- result{m: wsMessage{op: wsframe.Opcode(f.Op), payload: f.Payload}, err: err}
	}()
	select {
	case r := <-ch:
		return r.m, r.err
	case <-time.After(10 * time.Second):
		return wsMessage{}, errors.New("no frame within 10s")
	}
}

// echo sends msg on the stream and checks that it comes back.
func (c *rawH2Client) echo(t *testing.T, id uint32, s *rawH2Stream, msg string) {
	t.Helper()
	c.sendText(id, msg)
	m, err := s.readFrame(t)
	if err != nil {
		t.Fatalf("stream %d: read the echo of %q: %v", id, msg, err)
	}
	if m.op != wsframe.OpText || string(m.payload) != msg {
		t.Fatalf("stream %d: got op %d %q, want text %q", id, m.op, m.payload, msg)
	}
}
