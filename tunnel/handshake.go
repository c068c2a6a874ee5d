package tunnel

import "time"

// Handshake is an upgrade whose backend side the engine runs on the loop
// that will carry its tunnel (Engine.Handshake): it waits for the backend's
// non-blocking connect, writes Head, reads the answer and asks Answer what
// it is. A switch becomes a tunnel in place; anything else goes back to a
// goroutine (Back) with both sockets and the bytes read, so that the rare
// answers keep the code that serves them on goroutines.
//
// Its funcs run on the loop goroutine, except Done and Back, which run on a
// goroutine of their own; exactly one of Done and Back is called.
type Handshake struct {
	// Backend is a socket whose non-blocking connect has begun; the engine
	// owns it from Engine.Handshake on.
	Backend int
	// Head is what the backend is sent once connected: the request head.
	Head []byte
	// ConnectBy bounds the connect (timeouts.connect); zero is no bound.
	ConnectBy time.Time
	// AnswerWithin bounds the write of Head and the answer, from the
	// connect's end (timeouts.handshake); 0 is no bound.
	AnswerWithin time.Duration
	// MaxAnswer is how many bytes of answer the loop reads while Answer
	// asks for more; past it the handshake goes back.
	MaxAnswer int
	// Relay is the tunnel's settings once it opens. Its ToBackend is what
	// the client sent behind its head: the tunnel's first bytes to the
	// backend, sent after the switch. ToClient is not used: what follows
	// the backend's answer head is.
	Relay Relay
	// Dialed reads the outcome of the connect once the socket is writable
	// (upstream.DialDone), errored if epoll reported EPOLLERR or EPOLLHUP
	// with it; an error sends the handshake back.
	Dialed func(fd int, errored bool) error
	// Answer is given the answer's bytes read so far, each time more come.
	Answer func(p []byte) Verdict
	// Opened is told, on the loop, that the tunnel opened, with its stop
	// (Engine.Start's); Done is told when it ends, as Engine.Start's done.
	Opened func(stop func(cause error))
	Done   func(Stats)
	// Back continues the handshake on a goroutine: it owns what HandBack
	// holds from then on.
	Back func(HandBack)
}

// Verdict is what Handshake.Answer made of the answer read so far.
type Verdict struct {
	// More: the answer's head is not whole yet; read on.
	More bool
	// Switch: a valid switch. ToClient (the answer as the client gets it)
	// goes to the client, then Head bytes of the answer having been its
	// head, the rest of it, then the tunnel opens.
	Switch   bool
	ToClient []byte
	Head     int
}

// HandBack is a handshake the loop gives back to a goroutine.
type HandBack struct {
	// Client and Backend are the sockets, taken out of the loop; -1 for
	// one that is closed (the connect failed; or both, when the handshake
	// was cancelled).
	Client, Backend int
	// Connected: the connect succeeded and Head went out whole.
	Connected bool
	// Read is what the backend answered so far.
	Read []byte
	// Deadline is the answer's, as AnswerWithin set it (zero: none).
	Deadline time.Time
	// Err is why: the connect's error, a write's or read's, a timeout
	// (os.ErrDeadlineExceeded), or the cancel's cause (Canceled set); nil
	// when Answer sent it back.
	Err      error
	Canceled bool
}
