package header

import (
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
)

// Sentinel errors of CheckWebSocketRequest, wrapped with what was wrong.
var (
	// ErrBadKey means the handshake is malformed: the caller answers 400.
	ErrBadKey = errors.New("malformed websocket handshake")
	// ErrBadVersion means a version other than 13 was asked for: the caller
	// answers 426 with Sec-WebSocket-Version: 13 (RFC 6455 §4.2.2, §4.4).
	ErrBadVersion = errors.New("unsupported websocket version")
)

// acceptGUID is the fixed string RFC 6455 §1.3 appends to the key.
const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// CheckWebSocketRequest checks the client's half of an RFC 6455 §4.2.1 opening
// handshake, for a request whose UpgradeToken is "websocket", and returns its
// Sec-WebSocket-Key (trimmed) for AcceptKey and CheckSwitch.
//
// A Sec-WebSocket-Version other than exactly one "13" gives ErrBadVersion. That
// is checked first, because the key's format belongs to the version: a client
// of an older draft is better told which version to retry with than that its
// key is wrong. Otherwise a missing Sec-WebSocket-Version, a missing or repeated
// Sec-WebSocket-Key, or a key that is not the standard padded base64 of exactly
// 16 bytes (§4.1: a 16-byte nonce) gives ErrBadKey: such a request is no
// WebSocket handshake at all, so it gets 400 rather than 426.
func CheckWebSocketRequest(h http.Header) (key string, err error) {
	// Indexed by canonical name: Values would canonicalise "Sec-WebSocket-…",
	// an allocation, on every request.
	versions := h["Sec-Websocket-Version"]
	if len(versions) > 1 || len(versions) == 1 && trimOWS(versions[0]) != "13" {
		return "", fmt.Errorf("%w: Sec-WebSocket-Version %.20q", ErrBadVersion, joinList(versions))
	}
	keys := h["Sec-Websocket-Key"]
	switch len(keys) {
	case 0:
		return "", fmt.Errorf("%w: no Sec-WebSocket-Key", ErrBadKey)
	case 1:
	default:
		return "", fmt.Errorf("%w: %d Sec-WebSocket-Key headers", ErrBadKey, len(keys))
	}
	key = trimOWS(keys[0])
	// 16 bytes encode to exactly 24 characters. Checking the length also keeps
	// out the CR and LF that the base64 decoder would silently skip.
	if !isNonce(key) {
		return "", fmt.Errorf("%w: Sec-WebSocket-Key %.30q is not 16 base64-encoded bytes", ErrBadKey, key)
	}
	if len(versions) == 0 {
		return "", fmt.Errorf("%w: no Sec-WebSocket-Version", ErrBadKey)
	}
	return key, nil
}

// isNonce reports whether key is the standard padded base64 of 16 bytes,
// decoded on the stack.
func isNonce(key string) bool {
	if len(key) != 24 {
		return false
	}
	var nonce [18]byte // the most 24 characters decode to
	n, err := base64.StdEncoding.Decode(nonce[:], []byte(key))
	return err == nil && n == 16
}

// AcceptKey returns the Sec-WebSocket-Accept value that answers key:
// base64(SHA-1(key + GUID)) (RFC 6455 §4.2.2).
func AcceptKey(key string) string {
	var buf [acceptLen]byte
	return string(appendAcceptKey(buf[:0], key))
}

// acceptLen is the length of every Sec-WebSocket-Accept: a SHA-1 in base64.
const acceptLen = (sha1.Size + 2) / 3 * 4

// appendAcceptKey appends AcceptKey(key) to dst, on the stack for the
// 24-character keys CheckWebSocketRequest accepts.
func appendAcceptKey(dst []byte, key string) []byte {
	var buf [24 + len(acceptGUID)]byte
	in := append(buf[:0], key...)
	in = append(in, acceptGUID...)
	sum := sha1.Sum(in)
	return base64.StdEncoding.AppendEncode(dst, sum[:])
}

// CheckSwitch checks a backend's 101 response head resp to a request that asked
// to upgrade to token (as UpgradeToken returned it) with Sec-WebSocket-Key key.
// The response must list "upgrade" in Connection and name token first in
// Upgrade (RFC 9110 §7.8: the protocols switched to, lowest layer first), both
// without regard to ASCII case. For "websocket" it must also carry exactly one
// Sec-WebSocket-Accept equal to AcceptKey(key) (RFC 6455 §4.1, the client's
// checks, which wslb makes on the client's behalf before opening a tunnel).
// The error says what is wrong; the caller answers 502 and logs it.
func CheckSwitch(resp http.Header, token, key string) error {
	if token == "" {
		return errors.New("backend switched protocols but no upgrade was requested")
	}
	if !hasToken(resp["Connection"], "upgrade") {
		return fmt.Errorf("backend's 101 lacks Connection: upgrade (got %.40q)", joinList(resp["Connection"]))
	}
	got := firstToken(resp["Upgrade"])
	if got == "" {
		return errors.New("backend's 101 has no Upgrade protocol")
	}
	if !equalFold(got, token) {
		return fmt.Errorf("backend switched to protocol %.40q when %q was requested", got, token)
	}
	if !equalFold(token, "websocket") {
		return nil
	}
	accepts := resp["Sec-Websocket-Accept"]
	switch {
	case len(accepts) == 0:
		return errors.New("backend's 101 has no Sec-WebSocket-Accept")
	case len(accepts) > 1:
		return fmt.Errorf("backend's 101 has %d Sec-WebSocket-Accept headers", len(accepts))
	case accepts[0] != string(appendAcceptKey(make([]byte, 0, acceptLen), key)):
		return fmt.Errorf("backend's Sec-WebSocket-Accept %.40q does not match the key", accepts[0])
	}
	return nil
}
