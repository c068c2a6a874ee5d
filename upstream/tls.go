package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/wslb/wslb/pool"
)

// handshake runs the client side of TLS on c, a new conn to b, by deadline
// (none when zero), and returns the TLS conn; on failure it closes c. conf
// is b's TLS client (pool.Backend.TLS), built once per configuration.
func handshake(ctx context.Context, c net.Conn, b *pool.Backend, conf *tls.Config, deadline time.Time) (net.Conn, error) {
	_ = c.SetDeadline(deadline)
	tc := tls.Client(c, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, handshakeError(b, conf, err)
	}
	_ = c.SetDeadline(time.Time{})
	return tc, nil
}

// handshakeError says what failed in a way that points at the fix: a
// certificate that does not verify names what it was checked against and
// the keys that decide it.
func handshakeError(b *pool.Backend, conf *tls.Config, err error) error {
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return fmt.Errorf("TLS to %s: backend certificate not trusted for %q (check the pool's tls.server_name and tls.ca): %w",
			b, conf.ServerName, err)
	}
	return fmt.Errorf("TLS handshake with %s: %w", b, err)
}
