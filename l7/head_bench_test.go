package l7

import "testing"

// BenchmarkHasField measures the raw-line check every request head goes
// through: go test -run=^$ -bench=HasField ./l7
func BenchmarkHasField(b *testing.B) {
	head := []byte("GET /x HTTP/1.1\r\nHost: a\r\nUser-Agent: curl\r\nAccept: */*\r\nContent-Length: 5\r\n\r\n")
	b.ReportAllocs()
	for b.Loop() {
		hasField(head, "transfer-encoding")
	}
}
