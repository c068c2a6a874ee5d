package wsframe

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"
)

// frame builds one frame header for a payload of n bytes (the payload is
// left to the caller): fin, rsv bits, opcode, masked, and the shortest or a
// longer length encoding.
func frame(first byte, masked bool, n uint64, enc int) []byte {
	h := []byte{first, 0}
	if masked {
		h[1] = 0x80
	}
	switch {
	case enc == 0 && n <= 125:
		h[1] |= byte(n)
	case enc <= 1 && n <= 0xffff:
		h[1] |= 126
		h = binary.BigEndian.AppendUint16(h, uint16(n))
	default:
		h[1] |= 127
		h = binary.BigEndian.AppendUint64(h, n)
	}
	if masked {
		h = append(h, 1, 2, 3, 4)
	}
	return h
}

// stream is frames made from the fuzz bytes, and the offset at which each
// frame starts (the reference boundaries), plus the stream's end; closed
// says, for each of those offsets, whether a Close frame came before it.
func stream(data []byte) (s []byte, starts []int, closed []bool) {
	seen := false
	for len(data) >= 3 {
		first, flags, size := data[0], data[1], int(data[2])
		data = data[3:]
		n := uint64(size)
		if flags&0x10 != 0 {
			n = uint64(size) * 257 // a 16-bit length, sometimes
		}
		starts, closed = append(starts, len(s)), append(closed, seen)
		seen = seen || Opcode(first&0x0f) == OpClose
		s = append(s, frame(first, flags&1 != 0, n, int(flags>>1)&3)...)
		s = append(s, bytes.Repeat([]byte{0xee}, int(n))...)
	}
	return s, append(starts, len(s)), append(closed, seen)
}

// boundariesByFeed feeds s in pieces whose sizes come from cuts and returns
// every offset at which Feed(…, true) stopped at a boundary, and whether the
// tracker had seen a Close frame there.
func boundariesByFeed(s []byte, cuts []byte) (out []int, closed []bool) {
	var t Tracker
	out, closed = []int{0}, []bool{false}
	off, ci := 0, 0
	for off < len(s) {
		end := len(s)
		if ci < len(cuts) {
			end = min(off+1+int(cuts[ci]), len(s))
			ci++
		}
		for off < end {
			off += t.Feed(s[off:end], true)
			if t.AtBoundary() && out[len(out)-1] != off {
				out, closed = append(out, off), append(closed, t.Closed())
			}
		}
	}
	return out, closed
}

// boundariesBySplice moves s as a splicing tunnel would: exactly
// HeaderWant bytes of each header, then Remaining bytes of payload, untouched.
func boundariesBySplice(s []byte) []int {
	var t Tracker
	out := []int{0}
	off := 0
	for off < len(s) {
		if k := t.Remaining(); k > 0 {
			k = min(k, uint64(len(s)-off))
			t.Skip(k)
			off += int(k)
		} else {
			w := min(t.HeaderWant(), len(s)-off)
			off += t.Feed(s[off:off+w], false)
		}
		if t.AtBoundary() && out[len(out)-1] != off {
			out = append(out, off)
		}
	}
	return out
}

// FuzzTracker: random frame sequences, fed in random pieces or moved as a
// splicing tunnel moves them, give the reference parse's boundaries, and at
// each boundary Closed says whether a Close frame came before it.
func FuzzTracker(f *testing.F) {
	f.Add([]byte{0x81, 0x01, 5, 0x82, 0x00, 200, 0x89, 0x00, 0}, []byte{0, 3, 1})
	f.Add([]byte{0x01, 0x01, 10, 0x89, 0x01, 2, 0x80, 0x01, 10}, []byte{})   // fragments around a ping
	f.Add([]byte{0xc1, 0x00, 40, 0x82, 0x12, 3}, []byte{13, 13, 13})         // RSV1 (deflate), 16-bit length
	f.Add([]byte{0x82, 0x05, 1, 0x82, 0x04, 0, 0x88, 0x01, 2}, []byte{0, 0}) // 64-bit encodings, empty frames
	f.Fuzz(func(t *testing.T, frames, cuts []byte) {
		s, want, wantClosed := stream(frames)
		if got, closed := boundariesByFeed(s, cuts); !slices.Equal(got, want) || !slices.Equal(closed, wantClosed) {
			t.Fatalf("Feed in pieces %v: boundaries %v closed %v, want %v %v", cuts, got, closed, want, wantClosed)
		}
		if got := boundariesBySplice(s); !slices.Equal(got, want) {
			t.Fatalf("splice-style: boundaries %v, want %v", got, want)
		}
	})
}

// TestTrackerRandom is FuzzTracker's property over random streams, so that
// plain `go test` covers more than the seeds.
func TestTrackerRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		frames := make([]byte, 3*r.IntN(20))
		for i := range frames {
			frames[i] = byte(r.UintN(256))
		}
		cuts := make([]byte, r.IntN(30))
		for i := range cuts {
			cuts[i] = byte(r.UintN(64))
		}
		s, want, wantClosed := stream(frames)
		if got, closed := boundariesByFeed(s, cuts); !slices.Equal(got, want) || !slices.Equal(closed, wantClosed) {
			t.Fatalf("frames %x cuts %v: boundaries %v closed %v, want %v %v", frames, cuts, got, closed, want, wantClosed)
		}
		if got := boundariesBySplice(s); !slices.Equal(got, want) {
			t.Fatalf("frames %x: splice-style boundaries %v, want %v", frames, got, want)
		}
	}
}

func TestTrackerFrames(t *testing.T) {
	for _, tc := range []struct {
		name  string
		head  []byte
		n     uint64
		op    Opcode
		want  int // header length
		lost  bool
		after bool // a boundary once the header passed (empty payload)
	}{
		{name: "text, 7-bit length", head: frame(0x81, false, 5, 0), n: 5, op: OpText, want: 2},
		{name: "masked binary", head: frame(0x82, true, 5, 0), n: 5, op: OpBinary, want: 6},
		{name: "16-bit length", head: frame(0x82, false, 300, 0), n: 300, op: OpBinary, want: 4},
		{name: "64-bit length, masked", head: frame(0x82, true, 70000, 0), n: 70000, op: OpBinary, want: 14},
		{name: "deflate (RSV1) passes as any frame", head: frame(0xc1, false, 9, 0), n: 9, op: OpText, want: 2},
		{name: "empty close", head: frame(0x88, false, 0, 0), op: OpClose, want: 2, after: true},
		{name: "reserved opcode", head: frame(0x83, false, 3, 0), n: 3, op: 0x3, want: 2},
		{name: "length with its top bit set", head: append([]byte{0x82, 127}, 0x80, 0, 0, 0, 0, 0, 0, 1), op: OpBinary, want: 10, lost: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tr Tracker
			if got := tr.HeaderWant(); got != 2 {
				t.Fatalf("HeaderWant at the start %d, want 2", got)
			}
			tr.Feed(tc.head[:2], false)
			if got := tr.HeaderWant(); tc.want > 2 && got != tc.want-2 {
				t.Fatalf("HeaderWant after 2 bytes %d, want %d", got, tc.want-2)
			}
			tr.Feed(tc.head[2:], false)
			if tr.Opcode() != tc.op || tr.Lost() != tc.lost {
				t.Fatalf("opcode %x lost %v, want %x %v", tr.Opcode(), tr.Lost(), tc.op, tc.lost)
			}
			if tc.lost {
				if tr.AtBoundary() || tr.Feed([]byte("anything"), true) != 8 {
					t.Fatal("a lost stream must take everything and never be at a boundary")
				}
				return
			}
			if tr.Remaining() != tc.n || tr.AtBoundary() != tc.after {
				t.Fatalf("remaining %d boundary %v, want %d %v", tr.Remaining(), tr.AtBoundary(), tc.n, tc.after)
			}
		})
	}
}

// TestFeedStopsAtTheFrameEnd: inside a frame, Feed with stop takes the rest
// of that frame and no more; at a boundary, the whole next frame.
func TestFeedStopsAtTheFrameEnd(t *testing.T) {
	s := append(frame(0x81, false, 4, 0), "abcd"...)
	s = append(s, frame(0x81, false, 2, 0)...)
	s = append(s, "ef"...)
	var tr Tracker
	if n := tr.Feed(s[:3], false); n != 3 || tr.Remaining() != 3 {
		t.Fatalf("took %d, remaining %d", n, tr.Remaining())
	}
	if n := tr.Feed(s[3:], true); n != 3 || !tr.AtBoundary() {
		t.Fatalf("took %d (want 3: the rest of the frame), boundary %v", n, tr.AtBoundary())
	}
	if n := tr.Feed(s[6:], true); n != 4 || !tr.AtBoundary() {
		t.Fatalf("took %d (want 4: the next frame whole), boundary %v", n, tr.AtBoundary())
	}
}

func TestCloseFrame(t *testing.T) {
	for _, masked := range []bool{false, true} {
		f := CloseFrame(1001, "going away", masked, [4]byte{9, 8, 7, 6})
		var tr Tracker
		if n := tr.Feed(f, true); n != len(f) || !tr.AtBoundary() || tr.Opcode() != OpClose {
			t.Fatalf("masked %v: a Close frame of %d bytes parsed as %d, op %x", masked, len(f), n, tr.Opcode())
		}
		payload := f[len(f)-12:]
		if masked {
			if f[1]&0x80 == 0 {
				t.Fatal("not masked")
			}
			for i := range payload {
				payload[i] ^= [4]byte{9, 8, 7, 6}[i%4]
			}
		}
		if code := binary.BigEndian.Uint16(payload); code != 1001 || string(payload[2:]) != "going away" {
			t.Fatalf("masked %v: code %d reason %q", masked, code, payload[2:])
		}
	}
	if f := CloseFrame(1001, string(bytes.Repeat([]byte{'x'}, 200)), false, [4]byte{}); len(f) != 2+125 {
		t.Fatalf("a long reason makes a %d-byte frame, want 127 (125 of payload)", len(f))
	}
}

// TestClosedOutlivesTheCloseFrame: a Close frame followed by another in the
// same bytes is still seen, though Opcode names the last one.
func TestClosedOutlivesTheCloseFrame(t *testing.T) {
	s := append(frame(0x88, true, 2, 0), 0x03, 0xe9)
	s = append(s, frame(0x81, true, 1, 0)...)
	s = append(s, 'x')
	var tr Tracker
	if tr.Closed() {
		t.Fatal("Closed at the start")
	}
	if n := tr.Feed(s, false); n != len(s) || !tr.AtBoundary() || tr.Opcode() != OpText || !tr.Closed() {
		t.Fatalf("took %d of %d, boundary %v, opcode %x, closed %v; want all, true, text, true",
			n, len(s), tr.AtBoundary(), tr.Opcode(), tr.Closed())
	}
}
