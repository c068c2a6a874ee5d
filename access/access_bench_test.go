package access

import (
	"io"
	"testing"
)

// BenchmarkLog is the cost of one access line, in both formats, written to
// io.Discard: the part of a request's cost the access log adds, before the
// write(2) to its destination.
func BenchmarkLog(b *testing.B) {
	for _, format := range []string{"text", "json"} {
		b.Run(format, func(b *testing.B) {
			l, err := Open("stdout", format, io.Discard)
			if err != nil {
				b.Fatal(err)
			}
			e := sample()
			b.ReportAllocs()
			for b.Loop() {
				l.Log(e)
			}
		})
	}
}
