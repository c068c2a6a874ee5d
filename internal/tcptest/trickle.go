package tcptest

import (
	"net"
	"testing"
	"time"
)

// Trickle writes b to c in pieces of cut.Size bytes (the last may be
// shorter), one write each, pausing cut.Pause before every piece but the
// first, so that the peer gets them in separate TCP segments and separate
// reads: Go's TCP conns have TCP_NODELAY set, so a write leaves at once.
// The pause paces the writer deliberately, as a slow sender or a header cut
// up on its way would; it is the input under test, not a synchronisation.
// A failed write fails the test, so call it from the test's goroutine.
func Trickle(t testing.TB, c net.Conn, b []byte, cut Cut) {
	t.Helper()
	if cut.Size < 1 {
		t.Fatalf("Trickle: piece size %d, want at least 1", cut.Size)
	}
	for i := 0; i < len(b); i += cut.Size {
		if i > 0 {
			time.Sleep(cut.Pause) // pacing: see above
		}
		if _, err := c.Write(b[i:min(i+cut.Size, len(b))]); err != nil {
			t.Fatalf("write of bytes %d.. of %d: %v", i, len(b), err)
		}
	}
}

// A Cut is how Trickle cuts bytes up: pieces of Size bytes, Pause apart.
type Cut struct {
	Name  string
	Size  int
	Pause time.Duration
}

// Cuts are the ways tests cut up a head of n bytes that must be read
// whole however it arrives: byte by byte, and in two with a pause between.
func Cuts(n int) []Cut {
	return []Cut{
		{"byte by byte", 1, 2 * time.Millisecond},
		{"two segments", n/2 + 1, 100 * time.Millisecond},
	}
}
