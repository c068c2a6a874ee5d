// Package wsframe follows the frames of one direction of a WebSocket stream
// (RFC 6455 §5.2) as its bytes pass through a tunnel: it reads frame headers
// (2 to 14 bytes) and counts payloads down, never looking at a payload
// byte, so the tunnel always knows where the next frame starts. That is
// what lets wslb end a tunnel at a frame boundary with a Close frame
// instead of cutting a frame in half.
//
// Tracker is the state of one direction; CloseFrame builds the frames wslb
// sends when it ends a tunnel itself.
package wsframe

import "encoding/binary"

// Opcode is a frame's opcode (RFC 6455 §5.2).
type Opcode byte

// The opcodes wslb cares about; others pass as data.
const (
	OpContinuation Opcode = 0x0
	OpText         Opcode = 0x1
	OpBinary       Opcode = 0x2
	OpClose        Opcode = 0x8
	OpPing         Opcode = 0x9
	OpPong         Opcode = 0xA
)

// MaxHeader is the longest frame header: 2 bytes, an 8-byte length and a
// 4-byte masking key.
const MaxHeader = 14

// Tracker follows the frames of one direction. The zero value is at the
// start of a stream, which is a frame boundary.
type Tracker struct {
	left uint64          // payload bytes of the current frame still to pass
	hdr  [MaxHeader]byte // the next frame's header, as far as it came
	hn   uint8           // how many of its bytes came; 0 at a boundary
	op   Opcode          // the opcode of the last complete header
	// lost is set by a length whose top bit is set (RFC 6455 forbids it):
	// from there on the frame boundaries are unknown.
	lost bool
	// closed is set by the header of a Close frame: its sender has begun
	// the closing handshake and sends nothing after it (RFC 6455 §5.5.1).
	closed bool
}

// AtBoundary reports whether the next byte starts a frame.
func (t *Tracker) AtBoundary() bool { return t.left == 0 && t.hn == 0 && !t.lost }

// Lost reports whether the stream carried a header no frame can have, after
// which its frame boundaries cannot be told.
func (t *Tracker) Lost() bool { return t.lost }

// Opcode is the opcode of the last frame whose header passed whole.
func (t *Tracker) Opcode() Opcode { return t.op }

// Closed reports whether the header of a Close frame has passed; at a
// boundary, whether a whole Close frame has. A Close frame may be followed
// by others when one bytes slice held both, so Opcode alone cannot tell.
func (t *Tracker) Closed() bool { return t.closed }

// Remaining is how many payload bytes of the current frame are still to
// pass; 0 between frames and while a header is incomplete.
func (t *Tracker) Remaining() uint64 { return t.left }

// Skip accounts for n payload bytes that passed without being read (a
// splice); n must not exceed Remaining.
func (t *Tracker) Skip(n uint64) {
	if n > t.left {
		panic("wsframe: Skip past the end of the frame")
	}
	t.left -= n
}

// HeaderWant is how many more bytes the next header needs before its length
// is known and complete: 0 inside a payload. A tunnel that moves payloads
// without reading them (splice) reads exactly this many bytes, feeds them,
// and asks again; then it moves Remaining bytes and reports them with Skip.
func (t *Tracker) HeaderWant() int {
	if t.left > 0 || t.lost {
		return 0
	}
	if t.hn < 2 {
		return 2 - int(t.hn)
	}
	return headerLen(t.hdr[1]) - int(t.hn)
}

// headerLen is the length of a header whose second byte is b1.
func headerLen(b1 byte) int {
	n := 2
	switch b1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 {
		n += 4
	}
	return n
}

// Feed accounts for p, the next bytes of the stream, and returns how many
// it took. With stop false it takes all of p. With stop true it stops at the
// first frame boundary it reaches after taking at least one byte: at a
// boundary it takes the next frame, header and payload, as far as p goes;
// inside a frame, the rest of that frame. n < len(p) means the bytes past n
// start a new frame. Once Lost, it takes everything.
func (t *Tracker) Feed(p []byte, stop bool) int {
	n := 0
	for n < len(p) {
		if t.lost {
			return len(p)
		}
		if t.left > 0 {
			k := min(uint64(len(p)-n), t.left)
			t.left -= k
			n += int(k)
		} else {
			n += t.header(p[n:])
		}
		if stop && t.AtBoundary() {
			return n
		}
	}
	return n
}

// header takes bytes of the next header from p and returns how many.
func (t *Tracker) header(p []byte) int {
	n := 0
	for n < len(p) {
		t.hdr[t.hn] = p[n]
		t.hn++
		n++
		if t.hn >= 2 && int(t.hn) == headerLen(t.hdr[1]) {
			t.parsed()
			return n
		}
	}
	return n
}

// parsed ends a complete header: its payload begins.
func (t *Tracker) parsed() {
	h := t.hdr[:t.hn]
	t.op = Opcode(h[0] & 0x0f)
	t.closed = t.closed || t.op == OpClose
	var length uint64
	switch l := h[1] & 0x7f; l {
	case 126:
		length = uint64(binary.BigEndian.Uint16(h[2:4]))
	case 127:
		length = binary.BigEndian.Uint64(h[2:10])
		if length>>63 != 0 {
			t.lost = true
		}
	default:
		length = uint64(l)
	}
	t.hn, t.left = 0, length
}

// CloseFrame is a Close frame with code and reason (RFC 6455 §5.5.1): masked
// with key when masked (a client's frames, so what wslb sends a backend),
// else unmasked (what it sends a client). The reason is cut to fit the 125
// bytes a control frame may carry.
func CloseFrame(code uint16, reason string, masked bool, key [4]byte) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	payload := make([]byte, 2+len(reason))
	binary.BigEndian.PutUint16(payload, code)
	copy(payload[2:], reason)
	f := []byte{0x80 | byte(OpClose), byte(len(payload))}
	if masked {
		f[1] |= 0x80
		f = append(f, key[:]...)
		for i := range payload {
			payload[i] ^= key[i%4]
		}
	}
	return append(f, payload...)
}
