package header

import (
	"net/http"
	"slices"
	"testing"
)

func TestFilterTrailer(t *testing.T) {
	trailer := http.Header{
		"X-T":             {"t"},
		"X-Checksum":      {"c"},
		"Host":            {"evil.test"},
		"Content-Length":  {"99"},
		"X-Forwarded-For": {"192.0.2.66"},
		"X_Forwarded_For": {"192.0.2.66"},
		"X-Real-Ip":       {"192.0.2.66"},
		"Authorization":   {"Bearer x"},
		"X-Unannounced":   {"u"},
	}
	announced := []string{"X-T", "X-Checksum", "Host", "Content-Length", "X-Forwarded-For", "X_Forwarded_For", "X-Real-Ip", "Authorization"}
	FilterTrailer(trailer, func(name string) bool { return slices.Contains(announced, name) })
	var kept []string
	for name := range trailer {
		kept = append(kept, name)
	}
	slices.Sort(kept)
	if want := []string{"X-Checksum", "X-T"}; !slices.Equal(kept, want) {
		t.Fatalf("kept %v, want %v", kept, want)
	}
}
