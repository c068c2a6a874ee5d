package tcptest

import (
	"net"
	"time"
)

// Batch holds what is written to it while Hold is set and sends it in one
// write on Flush, so that several writes (TLS records, say) reach the
// peer's socket together and one read there takes them all: what a peer
// that read ahead of what it returned must cope with.
type Batch struct {
	net.Conn
	Hold bool
	buf  []byte
}

func (c *Batch) Write(p []byte) (int, error) {
	if c.Hold {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// Flush sends what was held, in one write, and stops holding.
func (c *Batch) Flush() error {
	c.Hold = false
	// A TLS conn's CloseWrite leaves a write deadline of now behind it.
	_ = c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Conn.Write(c.buf)
	c.buf = nil
	return err
}
