package l7

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Errors of readRequest, each answered differently by the conn loop.
var (
	errHeadTooLarge = errors.New("request head larger than max_header_bytes")
	errSmuggling    = errors.New("both Content-Length and Transfer-Encoding")
)

// readRequest reads one request head from br, whose buffer must be at least
// maxHead bytes. The whole head is buffered before net/http parses it, for two
// reasons: max_header_bytes is then exact (the request line and every header
// line, nothing else), and the raw lines can be checked for a Content-Length
// beside a Transfer-Encoding, which net/http would quietly resolve by dropping
// Content-Length. DESIGN answers that conflict with 400, because two hops that
// resolve it differently is how request smuggling works.
func readRequest(br *bufio.Reader, maxHead int) (*http.Request, error) {
	n, err := bufferHead(br, maxHead)
	if err != nil {
		return nil, err
	}
	head, _ := br.Peek(n)
	te := hasField(head, "transfer-encoding")
	if te && hasField(head, "content-length") {
		return nil, errSmuggling
	}
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, fmt.Errorf("parse request head: %w", err)
	}
	if te && !req.ProtoAtLeast(1, 1) {
		// net/http drops it and reads no body, so the chunks would be taken
		// for the next request; RFC 9112 §6.1 calls this framing faulty.
		return nil, errors.New("parse request head: Transfer-Encoding in an HTTP/1.0 request")
	}
	return req, nil
}

// bufferHead waits until br holds a complete head (up to and including the
// empty line) and returns its length, without consuming anything. It never
// reads past maxHead bytes of head.
func bufferHead(br *bufio.Reader, maxHead int) (int, error) {
	scanned := 0
	for {
		buf, _ := br.Peek(br.Buffered())
		if i := headEnd(buf, scanned); i >= 0 {
			if i > maxHead {
				return 0, errHeadTooLarge
			}
			return i, nil
		}
		if len(buf) >= maxHead {
			return 0, errHeadTooLarge
		}
		// The terminator may straddle the last read: rescan its last 3 bytes.
		scanned = max(0, len(buf)-3)
		if _, err := br.Peek(len(buf) + 1); err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return 0, errHeadTooLarge
			}
			return 0, err
		}
	}
}

// headEnd returns the length of the head in buf (through "\n\r\n" or "\n\n":
// net/textproto accepts bare LF line ends, so the end must be found the same
// way), or -1. Scanning starts at from.
func headEnd(buf []byte, from int) int {
	for i := from; i < len(buf); i++ {
		if buf[i] != '\n' {
			continue
		}
		if i+1 < len(buf) && buf[i+1] == '\n' {
			return i + 2
		}
		if i+2 < len(buf) && buf[i+1] == '\r' && buf[i+2] == '\n' {
			return i + 3
		}
	}
	return -1
}

// hasField reports whether a header line of head (after the request line) is
// named name, compared without case. Only names are compared: parsing the
// values is net/http's job.
func hasField(head []byte, name string) bool {
	// Skip the request line, then look at each line's start; no allocation,
	// since this runs for every request.
	for i := bytes.IndexByte(head, '\n') + 1; i > 0 && i < len(head); {
		line := head[i:]
		if len(line) > len(name) && line[len(name)] == ':' && strings.EqualFold(string(line[:len(name)]), name) {
			return true
		}
		next := bytes.IndexByte(line, '\n')
		if next < 0 {
			break
		}
		i += next + 1
	}
	return false
}
