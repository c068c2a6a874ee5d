package l7

import (
	"bufio"
	"bytes"
	"io"
	"math/bits"
	"sync"
)

// releaseBuffers gives br and bw back to their pools, and bc's reader when
// bc is not nil: the conn is ending, idling or becoming a tunnel, and what
// they held has been written or copied.
func (cc *clientConn) releaseBuffers(bc *backendConn) {
	if cc.br != nil {
		putReader(cc.br)
		cc.br = nil
	}
	if cc.bw != nil {
		putWriter(cc.bw)
		cc.bw = nil
	}
	if bc != nil && bc.br != nil {
		putReader(bc.br)
		bc.br = nil
	}
}

// Buffer pools. A client conn's reader is as large as max_header_bytes, so
// readers are pooled by size class, powers of two from 4 KiB; a size past
// the largest class is allocated and dropped.
const (
	minBuffer     = 4096
	readerClasses = 9 // 4 KiB to 1 MiB
)

var (
	readerPools [readerClasses]sync.Pool // *bufio.Reader of minBuffer<<i bytes
	writerPool  sync.Pool                // *bufio.Writer of minBuffer bytes
	// copyBuffers hold *[]byte of 32 KiB, for deadlineWriter.ReadFrom.
	copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
)

// readerClass is the pool of readers of at least size bytes, and their size;
// -1 when size is past the largest class.
func readerClass(size int) (class, classSize int) {
	if size <= minBuffer {
		return 0, minBuffer
	}
	class = bits.Len(uint(size-1)) - bits.Len(minBuffer-1)
	if class >= readerClasses {
		return -1, size
	}
	return class, minBuffer << class
}

// getReader returns a reader of r with a buffer of at least size bytes.
func getReader(r io.Reader, size int) *bufio.Reader {
	class, n := readerClass(size)
	if class >= 0 {
		if br, ok := readerPools[class].Get().(*bufio.Reader); ok {
			br.Reset(r)
			return br
		}
	}
	return bufio.NewReaderSize(r, n)
}

// getReaderAfter returns a reader of at least size bytes that yields
// prefix (bytes read ahead of it elsewhere), then src. Its first fill takes
// all of prefix, so that Buffered counts it and no byte waits out of sight
// between the two.
func getReaderAfter(prefix []byte, src io.Reader, size int) *bufio.Reader {
	if len(prefix) == 0 {
		return getReader(src, size)
	}
	br := getReader(io.MultiReader(bytes.NewReader(prefix), src), max(size, len(prefix)))
	_, _ = br.Peek(len(prefix))
	return br
}

// putReader gives br back; it must no longer be used. What it buffered is lost.
func putReader(br *bufio.Reader) {
	if class, n := readerClass(br.Size()); class >= 0 && n == br.Size() {
		br.Reset(nil) // drop the conn
		readerPools[class].Put(br)
	}
}

// getWriter returns a writer to w with a buffer of minBuffer bytes.
func getWriter(w io.Writer) *bufio.Writer {
	if bw, ok := writerPool.Get().(*bufio.Writer); ok {
		bw.Reset(w)
		return bw
	}
	return bufio.NewWriterSize(w, minBuffer)
}

// putWriter gives bw back; it must no longer be used. What it buffered is lost.
func putWriter(bw *bufio.Writer) {
	if bw.Size() == minBuffer {
		bw.Reset(nil)
		writerPool.Put(bw)
	}
}
