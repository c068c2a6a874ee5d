package header

import (
	"net/http"
	"net/netip"
	"testing"
)

// The header functions run on every request head; these show what each
// costs: go test -run=^$ -bench=. -benchmem ./header

func requestHead() http.Header {
	return http.Header{
		"Accept":                {"*/*"},
		"User-Agent":            {"Mozilla/5.0"},
		"Connection":            {"keep-alive, Upgrade"},
		"Upgrade":               {"websocket"},
		"Sec-Websocket-Key":     {"dGhlIHNhbXBsZSBub25jZQ=="},
		"Sec-Websocket-Version": {"13"},
	}
}

func BenchmarkRemoveHopByHop(b *testing.B) {
	src := requestHead()
	h := make(http.Header, 16)
	b.ReportAllocs()
	for b.Loop() {
		for k, v := range src {
			h[k] = v
		}
		RemoveHopByHop(h)
	}
}

func BenchmarkUpgradeToken(b *testing.B) {
	h := requestHead()
	allowed := []string{"websocket"}
	b.ReportAllocs()
	for b.Loop() {
		UpgradeToken(h, allowed)
	}
}

func BenchmarkSetForwarded(b *testing.B) { benchSetForwarded(b, requestHead()) }

// BenchmarkSetForwardedUnderscored is BenchmarkSetForwarded on a head with
// names holding '_': one an underscore spelling of X-Forwarded-For, which
// goes, one of no header of wslb's, which stays. Neither may allocate.
func BenchmarkSetForwardedUnderscored(b *testing.B) {
	src := requestHead()
	src["X_forwarded_for"] = []string{"6.6.6.6"}
	src["X_request_id"] = []string{"abc"}
	benchSetForwarded(b, src)
}

// benchSetForwarded rewrites a copy of src per round.
func benchSetForwarded(b *testing.B, src http.Header) {
	h := make(http.Header, 16)
	f := Forwarding{Peer: netip.MustParseAddr("192.0.2.1"), Host: "example.com", Proto: "http", Port: 8080, XForwarded: true}
	b.ReportAllocs()
	for b.Loop() {
		clear(h)
		for k, v := range src {
			h[k] = v
		}
		f.SetForwarded(h)
	}
}

func BenchmarkWebSocketHandshake(b *testing.B) {
	h := requestHead()
	resp := http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"}, "Sec-Websocket-Accept": {"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="}}
	b.ReportAllocs()
	for b.Loop() {
		key, err := CheckWebSocketRequest(h)
		if err != nil {
			b.Fatal(err)
		}
		if err := CheckSwitch(resp, "websocket", key); err != nil {
			b.Fatal(err)
		}
	}
}
