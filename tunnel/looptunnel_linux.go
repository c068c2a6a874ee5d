//go:build linux

package tunnel

import "time"

// copySize is the per-loop buffer small reads go through. A message (a chat
// line, a ping) costs one recv and one send, as in any proxy: a recv that
// returns less than the buffer has drained the socket, which a splice cannot
// tell (it may stop short for lack of pipe slots), so splicing a message
// would cost a third call that finds nothing. A recv that fills the buffer
// switches the direction to splicing until a splice moves a message-sized
// amount.
const copySize = 16 << 10

// messageSize: a splice that moves less than this was a message, not part of
// a stream, and the direction goes back to copying.
const messageSize = 2 << 10

// budget is how many reads one direction gets per turn, so that one bulk
// stream cannot starve the other tunnels of its loop; a direction with more
// to read goes back on the loop's ready list.
const budget = 4

// side names one of a loopTunnel's two sockets, and indexes its per-socket
// arrays; it also names the direction that reads from that socket:
// clientSide's direction moves client→backend.
type side uint8

const (
	clientSide side = iota
	backendSide
)

// end is the End that names s as the side that ended a tunnel.
func (s side) end() End {
	if s == clientSide {
		return EndClient
	}
	return EndBackend
}

// peer is the other side: where s's direction writes.
func (s side) peer() side { return 1 - s }

// loopTunnel is one tunnel held by an Engine. Apart from cause (under l.mu),
// its fields belong to the loop goroutine.
type loopTunnel struct {
	// An idle tunnel costs this struct and little else, so it is packed.
	l        *loop
	done     func(Stats)
	ws       *frames  // a WebSocket tunnel's frame trackers (frames_linux.go), else nil
	pending  *pending // its handshake, until the tunnel opens (pending_linux.go), else nil
	live     [2]Adder
	count    [2]int64 // bytes written to the other side, by the reading side
	dirs     [2]direction
	cause    error
	idle     time.Duration
	last     time.Duration // loop clock when a byte last moved
	deadline time.Duration // its key in the loop's idle heap
	hidx     int32         // its index there, -1 when not in it
	slot     int32
	fd       [2]int32
	readable [2]bool // edge-triggered state: the socket may have bytes to read
	writable [2]bool // and room to write
	// rdhup: the peer shut down its writing; an EOF waits behind the data,
	// so a short read does not mean the socket is drained.
	rdhup [2]bool
	// first is the side whose stream ended first (set with firstSet): after
	// a half-close it names the reason.
	first     side
	firstSet  bool
	fullClose bool
	queued    bool // on the loop's ready list
	ended     bool
}

// direction is the state of bytes moving from one socket to the other.
type direction struct {
	p    *pipe // bytes read but not yet written (the peer was not writable)
	n    int32 // how many (at most pipeSize)
	eof  bool  // the reading socket ended; the writing one got a shutdown
	bulk bool  // splice: the last read filled the copy buffer
}
