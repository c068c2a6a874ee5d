package proxyheader

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// answer is what Read made of a conn: the address, whether it failed, and
// the bytes left behind the header for what reads the conn next.
type answer struct {
	addrs Addrs
	ok    bool
	rest  string
}

// FuzzRead reads arbitrary bytes as a PROXY header, sent once in one
// segment and once in the segments cuts gives (each byte of cuts the length
// of one, cycled), from the seeds in testdata/fuzz/FuzzRead. Read never
// panics; it answers the same (address, failure, the bytes left behind the
// header) however its input is split; and it never accepts a header
// go-proxyproto rejects, nor names other addresses than go-proxyproto does
// (none for a LOCAL header, the conn's own then being used).
func FuzzRead(f *testing.F) {
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		whole := readSegments(t, data, nil)
		if split := readSegments(t, data, cuts); split != whole {
			t.Fatalf("in segments %v: %+v; in one: %+v", cuts, split, whole)
		}
		if !whole.ok {
			return
		}
		h, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			t.Fatalf("accepted %q, which go-proxyproto rejects: %v", data, err)
		}
		want := Addrs{}
		if !h.Command.IsLocal() {
			want = Addrs{Source: AddrPort(h.SourceAddr), Dest: AddrPort(h.DestinationAddr)}
		}
		if whole.addrs != want {
			t.Fatalf("addresses %+v, go-proxyproto reads %+v", whole.addrs, want)
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
	addrs, err := Read(c, br, 5*time.Second)
	if err != nil {
		return answer{}
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("reading behind the header: %v", err)
	}
	return answer{addrs: addrs, ok: true, rest: string(rest)}
}
