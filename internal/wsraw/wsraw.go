// Package wsraw writes and reads WebSocket frames byte for byte (RFC 6455
// §5.2), for tests that must see exactly what went over the wire: the mask
// bit, the RSV bits, fragments, a Close frame's code and reason. A library
// client hides all of that; tests that only need messages and close codes
// use github.com/coder/websocket instead.
package wsraw

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Opcodes (RFC 6455 §5.2).
const (
	OpContinuation byte = 0x0
	OpText         byte = 0x1
	OpBinary       byte = 0x2
	OpClose        byte = 0x8
	OpPing         byte = 0x9
	OpPong         byte = 0xA
)

// Frame is one frame. Payload is unmasked: Append masks it with Key when
// Masked, and Read unmasks what it reads.
type Frame struct {
	Fin     bool
	RSV     byte // the three RSV bits, in place: 0x40 is RSV1 (permessage-deflate)
	Op      byte
	Masked  bool
	Key     [4]byte
	Payload []byte
}

// Append appends f's bytes to b, with the shortest length encoding.
func Append(b []byte, f Frame) []byte {
	b = append(b, f.header(uint64(len(f.Payload)))...)
	if !f.Masked {
		return append(b, f.Payload...)
	}
	off := len(b)
	b = append(b, f.Payload...)
	Mask(b[off:], f.Key, 0)
	return b
}

// Header is the header alone of f with n payload bytes (f.Payload is
// ignored), for a test that writes a long payload itself, in pieces (masked
// with Mask when f.Masked).
func Header(f Frame, n uint64) []byte { return f.header(n) }

func (f Frame) header(n uint64) []byte {
	first := f.RSV&0x70 | f.Op&0x0f
	if f.Fin {
		first |= 0x80
	}
	var mask byte
	if f.Masked {
		mask = 0x80
	}
	var b []byte
	switch {
	case n <= 125:
		b = []byte{first, mask | byte(n)}
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16([]byte{first, mask | 126}, uint16(n))
	default:
		b = binary.BigEndian.AppendUint64([]byte{first, mask | 127}, n)
	}
	if f.Masked {
		b = append(b, f.Key[:]...)
	}
	return b
}

// Mask masks (or unmasks) p in place as the bytes at offset off of a
// payload masked with key.
func Mask(p []byte, key [4]byte, off int) {
	for i := range p {
		p[i] ^= key[(off+i)%4]
	}
}

// Read reads one frame whole, payloads up to max bytes.
func Read(r io.Reader, max int) (Frame, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return Frame{}, err
	}
	f := Frame{Fin: h[0]&0x80 != 0, RSV: h[0] & 0x70, Op: h[0] & 0x0f, Masked: h[1]&0x80 != 0}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return f, err
		}
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return f, err
		}
		n = binary.BigEndian.Uint64(l[:])
	}
	if n > uint64(max) {
		return f, fmt.Errorf("frame of %d bytes, more than %d", n, max)
	}
	if f.Masked {
		if _, err := io.ReadFull(r, f.Key[:]); err != nil {
			return f, err
		}
	}
	f.Payload = make([]byte, n)
	if _, err := io.ReadFull(r, f.Payload); err != nil {
		return f, err
	}
	if f.Masked {
		Mask(f.Payload, f.Key, 0)
	}
	return f, nil
}

// CloseFrame is a Close frame with code and reason.
func CloseFrame(code uint16, reason string, masked bool, key [4]byte) Frame {
	p := binary.BigEndian.AppendUint16(nil, code)
	return Frame{Fin: true, Op: OpClose, Masked: masked, Key: key, Payload: append(p, reason...)}
}

// Close returns a Close frame's code and reason; code 0 when it has none.
func (f Frame) Close() (code int, reason string) {
	if len(f.Payload) < 2 {
		return 0, ""
	}
	return int(binary.BigEndian.Uint16(f.Payload)), string(f.Payload[2:])
}

// String describes f for test failures, without its payload.
func (f Frame) String() string {
	s := fmt.Sprintf("op %#x fin %v rsv %#x masked %v, %d bytes", f.Op, f.Fin, f.RSV, f.Masked, len(f.Payload))
	if f.Op == OpClose {
		code, reason := f.Close()
		s += fmt.Sprintf(" (close %d %q)", code, reason)
	}
	return s
}
