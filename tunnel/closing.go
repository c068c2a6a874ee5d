package tunnel

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/wslb/wslb/wsframe"
)

// What both paths share to close a WebSocket tunnel gracefully (Relay's
// WebSocket): the epoll engine in frames_linux.go, the goroutine relay in
// relayws.go. Each follows both directions' frames with a wsframe.Tracker.
// When the tunnel is to end on wslb's own account, each direction relays
// the rest of the frame under way (a frame is never cut), then sends its
// peer a Close frame in place of the next one, unless a Close already went
// that way; from that point what its side sends is read and dropped, until
// that side's own Close (its reply) has come. Both replies, or CloseWait,
// end the tunnel, its end still the one that began the close.
//
// A frame header that breaks RFC 6455 (a reserved opcode, a masked frame
// from the backend, a control frame over 125 bytes) is the peers' business,
// and relayed like any other: only a length with its top bit set leaves
// the boundaries unknown (wsframe's Lost). Such a tunnel still relays, but
// its graceful close cannot find a boundary, so it falls back to closing
// both conns at once, reported as EndError with errFramesLost.

// GoingAway is the close code wslb sends when it ends a WebSocket tunnel
// itself (RFC 6455 §7.4.1: an endpoint going away, a server going down).
const GoingAway = 1001

// DefaultCloseWait is how long a graceful close waits for the peers' Close
// replies when Relay.CloseWait is 0.
const DefaultCloseWait = 5 * time.Second

// errFramesLost ends a WebSocket tunnel whose graceful close could not find
// a frame boundary.
var errFramesLost = errors.New("websocket frame boundaries lost: closed without a Close frame")

// closeWait is r.CloseWait or its default.
func (r *Relay) closeWait() time.Duration {
	if r.CloseWait > 0 {
		return r.CloseWait
	}
	return DefaultCloseWait
}

// closeReason is the reason a graceful Close frame carries: the metric
// reason word of what ended the tunnel, so a client can tell a drain from
// an idle timeout.
func closeReason(e End, cause error) string {
	s := Stats{End: e, Cause: cause}
	if r := s.Reason(); r != "error" {
		return r
	}
	return "going away"
}

// heardClose follows p, bytes a side sent after its direction's close
// point (they are dropped), frame by frame, and reports whether that side's
// Close frame has come whole; it stops there.
func heardClose(tr *wsframe.Tracker, p []byte) bool {
	for len(p) > 0 && !tr.Lost() {
		p = p[tr.Feed(p, true):]
		if tr.AtBoundary() && tr.Closed() {
			return true
		}
	}
	return false
}

// closeFrame is the Close frame a direction sends its peer: masked toward
// the backend, to which wslb is the client (RFC 6455 §5.3: a fresh key per
// frame; it hides nothing, so a fast generator will do), unmasked toward the
// client.
func closeFrame(toBackend bool, reason string) []byte {
	var key [4]byte
	if toBackend {
		binary.LittleEndian.PutUint32(key[:], rand.Uint32())
	}
	return wsframe.CloseFrame(GoingAway, reason, toBackend, key)
}
