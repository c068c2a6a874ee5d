package header

import (
	"net/http"
	"testing"
)

func TestUpgradeToken(t *testing.T) {
	ws := []string{"websocket"}
	tests := []struct {
		name        string
		h           http.Header
		allowed     []string
		wantToken   string
		wantPresent bool
	}{
		{"websocket", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}, ws, "websocket", true},
		{"keep-alive, Upgrade", http.Header{"Connection": {"keep-alive, Upgrade"}, "Upgrade": {"websocket"}}, ws, "websocket", true},
		{"connection: UPGRADE", http.Header{"Connection": {"UPGRADE"}, "Upgrade": {"WebSocket"}}, ws, "websocket", true},
		{"upgrade in second Connection header", http.Header{"Connection": {"keep-alive", " upgrade "}, "Upgrade": {"websocket"}}, ws, "websocket", true},
		{"Upgrade without Connection", http.Header{"Upgrade": {"websocket"}}, ws, "", false},
		{"Upgrade with Connection keep-alive", http.Header{"Connection": {"keep-alive"}, "Upgrade": {"websocket"}}, ws, "", false},
		{"Connection upgrade without Upgrade", http.Header{"Connection": {"upgrade"}}, ws, "", false},
		{"upgrade as a substring only", http.Header{"Connection": {"upgraded, x-upgrade"}, "Upgrade": {"websocket"}}, ws, "", false},
		{"h2c never", http.Header{"Connection": {"Upgrade, HTTP2-Settings"}, "Upgrade": {"h2c"}}, []string{"h2c", "websocket"}, "", true},
		{"h2c with a version never", http.Header{"Connection": {"upgrade"}, "Upgrade": {"H2C/1, websocket"}}, []string{"h2c/1", "websocket"}, "websocket", true},
		{"token not allowed", http.Header{"Connection": {"upgrade"}, "Upgrade": {"foo"}}, ws, "", true},
		{"nothing allowed", http.Header{"Connection": {"upgrade"}, "Upgrade": {"websocket"}}, nil, "", true},
		{"foo/2, websocket", http.Header{"Connection": {"upgrade"}, "Upgrade": {"foo/2, websocket"}}, ws, "websocket", true},
		{"foo/2 allowed first", http.Header{"Connection": {"upgrade"}, "Upgrade": {"Foo/2, websocket"}}, []string{"websocket", "FOO/2"}, "foo/2", true},
		{"version must match whole", http.Header{"Connection": {"upgrade"}, "Upgrade": {"websocket/13"}}, ws, "", true},
		{"across Upgrade headers", http.Header{"Connection": {"upgrade"}, "Upgrade": {"foo", " , websocket"}}, ws, "websocket", true},
		{"non-ASCII fold refused", http.Header{"Connection": {"upgrade"}, "Upgrade": {"webſocket"}}, ws, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token, present := UpgradeToken(tt.h, tt.allowed)
			if token != tt.wantToken || present != tt.wantPresent {
				t.Errorf("got (%q, %v); want (%q, %v)", token, present, tt.wantToken, tt.wantPresent)
			}
		})
	}
}
