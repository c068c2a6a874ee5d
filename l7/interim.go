package l7

import (
	"errors"
	"net/http"

	"github.com/wslb/wslb/header"
)

// maxInterim caps the 1xx answers relayed before a final one, as Go's own
// client does (it takes 5): a backend that sends 1xx forever must not hold
// the conns. A real one sends one or two (100 Continue, 103 Early Hints).
const maxInterim = 5

// errTooManyInterim is a backend's answer that was 1xx after 1xx: a 502.
var errTooManyInterim = errors.New("backend sent more than 5 interim (1xx) answers")

// interim reports whether resp is an interim answer: a 1xx other than 101,
// which is the final answer to an upgrade.
func interim(resp *http.Response) bool {
	return resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols
}

// relayInterim relays resp, the n-th interim answer (from 1) to req, to the
// client, or fails when there were too many. An HTTP/1.0 client must not
// get one (RFC 9110 §15.2), so it gets none. The answer's hop-by-hop headers
// go, as a final answer's do. A failed write is left for the final
// answer's to find.
func (cc *clientConn) relayInterim(req *http.Request, resp *http.Response, n int) error {
	if n > maxInterim {
		return errTooManyInterim
	}
	switch {
	case cc.stream != nil:
		header.RemoveHopByHop(resp.Header)
		cc.stream.interim(resp)
	case req.ProtoAtLeast(1, 1):
		header.RemoveHopByHop(resp.Header)
		if err := resp.Write(cc.bw); err == nil {
			_ = cc.bw.Flush()
		}
	}
	return nil
}
